"""Weight averaging, BN recalibration, SWA of snapshots, soups and weight jobs."""

import pickle

import numpy as np
import pytest
import torch

from orchestrator.data import load_data
from orchestrator.ensemble.errors import WeightJobError
from orchestrator.ensemble.records import MemberRecord, SnapshotRef
from orchestrator.ensemble.weights import (
    InProcessExecutor,
    WeightJob,
    WeightResult,
    WeightSource,
    average_state_dicts,
    build_model,
    greedy_soup,
    run_weight_job,
    snapshot_phase,
    soup_groups,
    swa_of_final_snapshots,
)


def test_average_is_weighted_and_keeps_integer_buffers_from_the_first():
    a = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(5)}
    b = {"w": torch.tensor([3.0, 6.0]), "n": torch.tensor(7)}
    uniform = average_state_dicts([a, b])
    assert torch.equal(uniform["w"], torch.tensor([2.0, 4.0])) and uniform["n"].item() == 5
    weighted = average_state_dicts(iter([a, b]), weights=[1, 3])  # streamed from an iterator
    assert torch.allclose(weighted["w"], torch.tensor([2.5, 5.0]))
    assert weighted["w"].dtype == torch.float32 and weighted["n"].dtype == torch.int64


def test_average_rejects_mismatched_state_dicts_naming_the_source():
    a = {"w": torch.zeros(2)}
    with pytest.raises(ValueError, match="m001/snapshot/1.*keys differ"):
        average_state_dicts([a, {"v": torch.zeros(2)}], labels=["m000/x/0", "m001/snapshot/1"])
    with pytest.raises(ValueError, match="shape"):
        average_state_dicts([a, {"w": torch.zeros(3)}])


@pytest.fixture
def tiny(make_spec):
    spec = make_spec(data={"synthetic_size": 256, "eval_subset": 64})
    data = load_data(spec.data)
    torch.manual_seed(0)
    model = build_model(spec, data)
    model.train()
    with torch.no_grad():  # give the BN layers non-default statistics
        model(torch.randn(32, 1, 12, 12) * 3 + 1)
    return spec, data, {k: v.clone() for k, v in model.state_dict().items()}


def save(state, path):
    path.mkdir(parents=True, exist_ok=True)
    torch.save({"model": state, "kind": "snapshot"}, path / "model.pt")
    return path


def test_soup_of_identical_models_equals_the_model(tiny, tmp_path):
    spec, data, state = tiny
    soup = average_state_dicts([state, state, state])
    for key, value in state.items():
        assert torch.equal(soup[key], value), key
    path = save(state, tmp_path / "s")
    single = WeightJob("one", spec.to_dict(), (WeightSource("m/snapshot/0", path=str(path)),))
    triple = WeightJob("three", spec.to_dict(), (WeightSource("m/snapshot/0", path=str(path)),) * 3)
    run = InProcessExecutor(data)
    one, three = run([single, triple])
    for split in ("val", "test"):
        assert one.logits[split].shape == (len(getattr(data, split)), 4)
        assert np.array_equal(one.logits[split], three.logits[split])


def test_recalibration_changes_bn_statistics(tiny, tmp_path):
    spec, data, state = tiny
    source = WeightSource("m/snapshot/0", path=str(save(state, tmp_path / "s")))
    kwargs = dict(spec=spec.to_dict(), sources=(source,), return_state_dict=True)
    recal = run_weight_job(WeightJob("recal", **kwargs), data)
    plain = run_weight_job(WeightJob("plain", recalibrate_bn=False, **kwargs), data)
    assert recal.bn_recalibrated and not plain.bn_recalibrated
    key = "stem.1.running_mean"
    assert torch.equal(plain.state_dict[key], state[key])
    assert not torch.allclose(recal.state_dict[key], state[key])
    assert torch.isfinite(recal.state_dict["stem.1.running_var"]).all()
    # The recalibration pass is seeded: the same job gives the same statistics.
    again = run_weight_job(WeightJob("recal", **kwargs), data)
    assert torch.equal(again.state_dict[key], recal.state_dict[key])
    # bn_batches limits the pass (different statistics from fewer batches)
    short = run_weight_job(WeightJob("short", bn_batches=1, **kwargs), data)
    assert not torch.equal(short.state_dict[key], recal.state_dict[key])


def test_weight_jobs_with_paths_pickle_and_name_missing_weights(tiny, tmp_path):
    spec, data, _ = tiny
    job = WeightJob("j", spec.to_dict(), (WeightSource("m007/snapshot/2", path=str(tmp_path)),))
    assert pickle.loads(pickle.dumps(job)) == job
    with pytest.raises(WeightJobError, match="m007/snapshot/2: cannot load weights"):
        run_weight_job(job, data)


def fake_member(key, spec, states, tmp_path, epochs=None, init=None):
    """A MemberRecord whose snapshots are real model.pt files (logits are not needed here)."""
    spec_dict = spec.to_dict()
    if init:
        spec_dict["model"]["init"] = {"source": init, "train": "finetune", "freeze_stages": 0}
    refs = []
    for k, state in enumerate(states):
        path = save(state, tmp_path / key / "snapshots" / str(k))
        epoch = (epochs or list(range(1, len(states) + 1)))[k]
        refs.append(
            SnapshotRef("snapshot", k, epoch, {}, lambda split: None, lambda: None, str(path))
        )
    return MemberRecord(key, 0, 0, {}, spec_dict, "fp", 4, refs, None, lambda split: None)


def scaled(state, factor):
    return {k: v * factor if v.is_floating_point() else v for k, v in state.items()}


def test_swa_of_final_snapshots_averages_the_last_k(make_spec, tiny, tmp_path):
    _, _, state = tiny
    spec = make_spec(train={"epochs": 6}, schedule={"kind": "cyclic", "cycles": 3})
    member = fake_member(
        "m0", spec, [scaled(state, f) for f in (1.0, 2.0, 3.0)], tmp_path, [2, 4, 6]
    )
    job = swa_of_final_snapshots(member, last_k=2)
    assert [s.label for s in job.sources] == ["m0/snapshot/1", "m0/snapshot/2"]
    averaged = average_state_dicts(s.load_state_dict() for s in job.sources)
    key = "fc.weight"
    assert torch.allclose(averaged[key], state[key] * 2.5)
    # snapshots of different cycles: the job says so (REFERENCES: averaging them hurts)
    assert "2 LR phases" in job.notes[0]
    assert pickle.loads(pickle.dumps(job)).sources == job.sources
    with pytest.raises(ValueError, match="SWA needs >= 2"):
        swa_of_final_snapshots(member, last_k=1)


def test_snapshot_phases(make_spec):
    cyclic = make_spec(train={"epochs": 6}, schedule={"kind": "cyclic", "cycles": 3})
    assert [snapshot_phase(cyclic, e) for e in (2, 4, 6)] == ["cycle-0", "cycle-1", "cycle-2"]
    tail = make_spec(
        train={"epochs": 6}, schedule={"kind": "cosine", "swa_epochs": 2, "swa_lr": 0.01}
    )
    assert [snapshot_phase(tail, e) for e in (4, 5, 6)] == ["main", "swa-tail", "swa-tail"]


def test_soups_need_a_shared_init(make_spec, tiny, tmp_path):
    _, _, state = tiny
    spec = make_spec()
    plain = [fake_member(f"p{i}", spec, [state], tmp_path) for i in range(2)]
    groups, reasons = soup_groups(plain)
    assert groups == [] and "p0, p1" in reasons[0] and "model.init" in reasons[0]
    tuned = [fake_member(f"t{i}", spec, [state], tmp_path, init="/ckpt.pt") for i in range(3)]
    other = fake_member("o", spec, [state], tmp_path, init="/other.pt")
    groups, reasons = soup_groups([*tuned, other])
    assert groups == [[0, 1, 2]] and "member o" in reasons[0]


def test_greedy_soup_keeps_members_that_do_not_lower_val_accuracy(make_spec, tiny, tmp_path):
    _, _, state = tiny
    spec = make_spec()
    members = [fake_member(f"t{i}", spec, [state], tmp_path, init="/ckpt.pt") for i in range(3)]
    labels = np.array([0, 1, 2, 3])
    right = np.eye(4, dtype=np.float32)
    wrong = np.roll(right, 1, axis=1)
    calls = []

    def executor(jobs):  # scripted: a soup containing t1 gets every sample wrong
        calls.append(jobs)
        out = []
        for job in jobs:
            bad = any(s.label.startswith("t1/") for s in job.sources)
            logits = {s: (wrong if bad else right) for s in job.splits}
            out.append(WeightResult(job.name, logits, "fp", True, 0.0, "cpu"))
        return out

    # val accuracies: t2 best, then t0, then t1
    soup = greedy_soup(members, [0.8, 0.5, 0.9], labels, executor)
    assert [h["member"] for h in soup.history] == ["t2", "t0", "t1"]
    assert [h["accepted"] for h in soup.history] == [True, True, False]
    assert soup.ingredients == [2, 0]
    assert len(calls) == 3 and all(len(c) == 1 for c in calls)  # sequential: one job per call
    assert [c[0].splits for c in calls] == [("val",), ("val",), ("val", "test")]
    final = calls[-1][0]
    assert [src.label for src in final.sources] == ["t2/snapshot/0", "t0/snapshot/0"]
    assert soup.result.logits["test"] is right
