"""aggregate(): validation errors, ensembles from cached logits, and a small end-to-end run
(two tiny members trained on synthetic data -> from_member_dir -> aggregate -> write_report)."""

import dataclasses
import json
import shutil

import numpy as np
import pytest

from orchestrator import config
from orchestrator.ensemble import (
    AggregateError,
    AggregateOptions,
    MemberRecord,
    Report,
    SnapshotRef,
    aggregate,
    from_member_dir,
    write_report,
)
from orchestrator.ensemble.combine import mean_softmax, softmax
from orchestrator.ensemble.metrics import accuracy, ece, nll
from orchestrator.ensemble.weights import job_for_components, run_weight_job
from orchestrator.training.member import train_member
from orchestrator.training.sink import DirectorySink
from tests.conftest import synthetic_tree

NO_WEIGHTS = AggregateOptions(weight_ensembles=False)


# In-memory members ---------------------------------------------------------------------
def memory_ref(kind, index, val, test, epoch=None):
    data = {"val": val, "test": test}
    return SnapshotRef(
        kind, index, epoch or index + 1, {}, lambda split: data[split], lambda: {}, ""
    )


def memory_member(key, snapshots, labels, *, polyak=None, fingerprint="fp", classes=3):
    refs = [memory_ref("snapshot", k, v, t) for k, (v, t) in enumerate(snapshots)]
    poly = memory_ref("polyak", 0, *polyak, epoch=len(refs)) if polyak else None
    return MemberRecord(
        key=key,
        member=int(key[1:]),
        seed=int(key[1:]),
        values={},
        spec={"name": "memory-study"},
        data_fingerprint=fingerprint,
        num_classes=classes,
        snapshots=refs,
        polyak=poly,
        load_labels=lambda split: labels[split],
    )


@pytest.fixture
def memory_members():
    rng = np.random.default_rng(0)
    labels = {"val": rng.integers(0, 3, 40), "test": rng.integers(0, 3, 50)}

    def logits(split):  # noisy but informative: the true class gets a bonus
        x = rng.normal(size=(len(labels[split]), 3))
        x[np.arange(len(x)), labels[split]] += 1.0
        return x.astype(np.float32)

    members = [
        memory_member(
            f"m{i}",
            [(logits("val"), logits("test")) for _ in range(3)],
            labels,
            polyak=(logits("val"), logits("test")),
        )
        for i in range(3)
    ]
    return members, labels


def test_ensembles_match_the_combiners_and_gains_are_in_points(memory_members):
    members, labels = memory_members
    report = aggregate(members, NO_WEIGHTS)
    finals = [m.snapshots[-1].load_logits("test") for m in members]
    single = [accuracy(softmax(x), labels["test"]) for x in finals]
    ens = report.ensemble("independent/mean_softmax")
    probs = mean_softmax(finals)
    assert ens.metrics["test_acc"] == pytest.approx(accuracy(probs, labels["test"]))
    assert ens.metrics["test_nll"] == pytest.approx(nll(probs, labels["test"]))
    assert ens.metrics["test_ece"] == pytest.approx(ece(probs, labels["test"]))
    assert ens.gain_over_best_single == pytest.approx(100 * (ens.metrics["test_acc"] - max(single)))
    assert ens.gain_over_mean_single == pytest.approx(
        100 * (ens.metrics["test_acc"] - np.mean(single))
    )
    assert report.baseline["best_single"]["test_acc"] == max(single)
    assert ens.size_curve["sizes"] == [1, 2, 3]
    assert ens.size_curve["test_acc"][-1] == ens.metrics["test_acc"]
    assert 0 < ens.disagreement < 1 and ens.cost == {"models_at_test_time": 3, "members_trained": 3}
    names = {e.name for e in report.ensembles}
    assert {"independent/mean_logits", "independent/vote", "members_x_snapshots", "greedy"} <= names
    assert {"snapshot/m0", "polyak/m0", "polyak/mean_softmax"} <= names
    assert report.ensemble("members_x_snapshots").cost["models_at_test_time"] == 9
    # snapshot ensembles: last K, newest first in the size curve
    last2 = aggregate(members, dataclasses.replace(NO_WEIGHTS, snapshot_last_k=2))
    snap = last2.ensemble("snapshot/m1")
    assert [c["index"] for c in snap.components] == [2, 1]
    expected = mean_softmax(ref.load_logits("test") for ref in members[1].snapshots[-2:])
    assert snap.metrics["test_acc"] == pytest.approx(accuracy(expected, labels["test"]))
    # the best ensemble is chosen on validation, not test
    eligible = [e for e in report.ensembles if e.method != "vote"]
    best = max(eligible, key=lambda e: (e.metrics["val_acc"], -e.metrics["val_nll"]))
    assert report.best_ensemble == best.name


def test_greedy_weights_are_pick_counts(memory_members):
    members, labels = memory_members
    greedy = aggregate(members, NO_WEIGHTS).ensemble("greedy")
    assert sum(c["weight"] for c in greedy.components) == len(greedy.size_curve["sizes"])
    assert greedy.metrics["val_nll"] <= min(
        nll(softmax(ref.load_logits("val")), labels["val"])
        for m in members
        for ref in [*m.snapshots, m.polyak]
    )


def test_no_members_is_a_clear_error():
    with pytest.raises(AggregateError, match="no finished members"):
        aggregate([])


def test_mismatched_fingerprints_name_the_members(memory_members):
    members, labels = memory_members
    odd = dataclasses.replace(members[2], data_fingerprint="other")
    with pytest.raises(AggregateError, match=r"different data splits.*'other' for m2"):
        aggregate([*members[:2], odd], NO_WEIGHTS)


def test_mismatched_class_counts_name_the_members(memory_members):
    members, _ = memory_members
    odd = dataclasses.replace(members[1], num_classes=10)
    with pytest.raises(AggregateError, match=r"number of classes.*10 for m1"):
        aggregate([members[0], odd], NO_WEIGHTS)


def test_mismatched_labels_name_the_member(memory_members):
    members, labels = memory_members
    other = {"val": labels["val"], "test": (labels["test"] + 1) % 3}
    odd = dataclasses.replace(members[2], load_labels=lambda split: other[split])
    with pytest.raises(AggregateError, match="member m2: its test labels differ"):
        aggregate([*members[:2], odd], NO_WEIGHTS)


def test_member_without_snapshots_is_named(memory_members):
    members, _ = memory_members
    with pytest.raises(AggregateError, match="m1.*no snapshots"):
        aggregate([members[0], dataclasses.replace(members[1], snapshots=[])], NO_WEIGHTS)


# Trained members -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two tiny members, 2 epochs with 2 cycles: snapshots after epochs 1 and 2, EMA weights."""
    spec = config.from_dict(synthetic_tree(train={"epochs": 2}))
    root = tmp_path_factory.mktemp("members")
    for m in range(2):
        train_member(spec, DirectorySink(root / f"m{m}"), member=m)
    return root


def records(root, names=("m0", "m1")):
    return [from_member_dir(root / name, key=name) for name in names]


def test_trained_members_to_report_json(trained, tmp_path):
    report = aggregate(records(trained))
    out = write_report(report, tmp_path / "study")
    assert out == tmp_path / "study"
    data = json.loads((out / "report.json").read_text())
    assert data["schema_version"] == 1 and data["study"] == "synthetic-test"
    by_family = {}
    for e in data["ensembles"]:
        by_family.setdefault(e["family"], []).append(e)
        assert {"test_acc", "test_nll", "test_ece", "test_brier", "val_acc"} <= set(e["metrics"])
        assert isinstance(e["gain_over_best_single"], float)
        assert isinstance(e["gain_over_mean_single"], float)
    assert {"independent", "snapshot", "members_x_snapshots", "greedy", "polyak", "swa"} <= set(
        by_family
    )
    assert by_family["swa"][0]["kind"] == "weight"
    assert any("LR phases" in n for n in by_family["swa"][0]["notes"])
    assert [m["key"] for m in data["members"]] == ["m0", "m1"]
    assert data["members"][0]["polyak"]["metrics"]["test_ece"] >= 0
    assert any(s["family"] == "soup" for s in data["skipped"])  # no shared init checkpoint
    for name in (
        "report.md",
        "plots/accuracy_vs_size.png",
        "plots/reliability.png",
        "plots/snapshot_accuracy.png",
    ):
        assert (out / name).is_file()
    # the stable schema round-trips
    assert Report.from_dict(data).to_dict() == data
    # a weight ensemble can be rebuilt from its components (e.g. to log it as a model)
    swa = report.ensemble("swa/m0")
    job = job_for_components(swa.name, records(trained), swa.components)
    rebuilt = run_weight_job(job)
    assert rebuilt.state_dict is not None
    labels = np.load(trained / "m0" / "labels_test.npy")
    assert accuracy(rebuilt.logits["test"], labels) == swa.metrics["test_acc"]


def test_reports_are_never_overwritten_unless_asked(trained, tmp_path):
    report = aggregate(records(trained), NO_WEIGHTS)
    first = write_report(report, tmp_path, plots=False)
    before = (first / "report.json").read_text()
    second = write_report(report, tmp_path, plots=False)
    third = write_report(report, tmp_path, plots=False)
    assert (second, third) == (tmp_path / "report-2", tmp_path / "report-3")
    assert (first / "report.json").read_text() == before
    # deterministic: the same inputs give the same report.json
    assert (second / "report.json").read_text() == before
    assert write_report(report, tmp_path, overwrite=True, plots=False) == tmp_path


def test_missing_artifact_names_the_member_and_file(trained, tmp_path):
    shutil.copytree(trained / "m1", tmp_path / "m1")
    (tmp_path / "m1" / "snapshots" / "0" / "logits_test.npy").unlink()
    members = [
        from_member_dir(trained / "m0", key="m0"),
        from_member_dir(tmp_path / "m1", key="m1"),
    ]
    with pytest.raises(AggregateError, match=r"member m1: cannot read snapshot 0 logits_test"):
        aggregate(members, NO_WEIGHTS)


def test_missing_weights_fail_before_any_work(trained, tmp_path):
    shutil.copytree(trained / "m1", tmp_path / "m1")
    (tmp_path / "m1" / "snapshots" / "1" / "model.pt").unlink()
    members = [
        from_member_dir(trained / "m0", key="m0"),
        from_member_dir(tmp_path / "m1", key="m1"),
    ]
    calls = []
    with pytest.raises(AggregateError, match=r"member m1: snapshot 1 has no model.pt"):
        aggregate(members, executor=lambda jobs: calls.append(jobs))
    assert calls == []


def test_soups_for_members_sharing_an_init_checkpoint(trained):
    members = []
    for record in records(trained):
        spec = json.loads(json.dumps(record.spec))
        spec["model"]["init"] = {
            "source": "/shared/pretrained.pt",
            "train": "finetune",
            "freeze_stages": 0,
        }
        members.append(dataclasses.replace(record, spec=spec))
    seen = []

    def executor(jobs):  # the in-process executor, watched: jobs must pickle (Ray tasks)
        import pickle

        from orchestrator.ensemble import InProcessExecutor

        seen.extend(pickle.loads(pickle.dumps(j)) for j in jobs)
        return InProcessExecutor()(jobs)

    report = aggregate(members, AggregateOptions(greedy=False), executor=executor)
    assert {"uniform_soup", "greedy_soup"} <= {e.name for e in report.ensembles}
    soup = report.ensemble("greedy_soup")
    assert soup.kind == "weight" and soup.members[0] in ("m0", "m1")
    assert any(j.name == "greedy_soup/trial" for j in seen)


def test_any_loader_failure_names_the_member(memory_members):
    members, _ = memory_members

    class MissingArtifactError(RuntimeError):  # like tracking/'s, which is no OSError
        pass

    def broken(split):
        raise MissingArtifactError("artifact snapshots/1/logits_val.npy is missing")

    snaps = list(members[1].snapshots)
    snaps[1] = dataclasses.replace(snaps[1], load_logits=broken, location="runs:/abc/snapshots/1")
    odd = dataclasses.replace(members[1], snapshots=snaps)
    with pytest.raises(
        AggregateError, match=r"member m1: cannot read snapshot 1 logits_val at runs:/abc"
    ):
        aggregate([members[0], odd], NO_WEIGHTS)


def test_selection_without_a_validation_cache_gives_the_same_ensemble(memory_members):
    members, _ = memory_members
    cached = aggregate(members, NO_WEIGHTS).ensemble("greedy")
    lazy = aggregate(members, dataclasses.replace(NO_WEIGHTS, val_cache_mb=0)).ensemble("greedy")
    assert lazy.components == cached.components and lazy.metrics == cached.metrics
