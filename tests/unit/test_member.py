"""train_member on synthetic data: snapshots, Polyak weights, determinism, resume, transfer."""

import json

import numpy as np
import pytest
import torch

from orchestrator.training.member import ResumeMismatchError, train_member
from orchestrator.training.sink import DirectorySink, read_member_dir


class Interrupted(Exception):
    pass


class InterruptAfterFirstSnapshot(DirectorySink):
    """Dies right after the first snapshot is stored, like a killed worker."""

    def save_snapshot(self, snapshot):
        super().save_snapshot(snapshot)
        if snapshot.kind == "snapshot":
            raise Interrupted


def test_member_stores_every_snapshot_and_polyak_weights(synthetic_spec, tmp_path):
    result = train_member(synthetic_spec, DirectorySink(tmp_path))
    assert [s["epoch"] for s in result.snapshots] == [2, 4]
    meta, snapshots, polyak = read_member_dir(tmp_path)
    assert meta["seed"] == 0 and meta["num_classes"] == 4
    assert [s.index for s in snapshots] == [0, 1]
    labels_test = np.load(tmp_path / "labels_test.npy")
    for snap in [*snapshots, polyak]:
        for name in ("model.pt", "logits_val.npy", "logits_test.npy", "metrics.json"):
            assert (snap.path / name).is_file()
        logits = snap.logits("test")
        assert logits.shape == (len(labels_test), 4) and logits.dtype == np.float32
        # The synthetic set is learnable: well above the 25% of chance.
        assert snap.metrics["test_acc"] > 0.6
        assert snap.metrics["test_acc"] == pytest.approx(
            float((logits.argmax(1) == labels_test).mean())
        )
    assert (snapshots[0].path / "checkpoint.pt").is_file()
    history = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert {"train_loss", "val_acc", "lr", "polyak_val_acc"} <= set(history[0])
    weights = torch.load(polyak.path / "model.pt", weights_only=True)
    assert weights["kind"] == "polyak" and weights["spec"]["name"] == synthetic_spec.name


def test_member_is_deterministic_on_cpu_and_seeded(synthetic_spec, tmp_path):
    train_member(synthetic_spec, DirectorySink(tmp_path / "a"), member=0)
    train_member(synthetic_spec, DirectorySink(tmp_path / "b"), member=0)
    train_member(synthetic_spec, DirectorySink(tmp_path / "c"), member=1)
    a, b, c = (np.load(tmp_path / x / "snapshots/1/logits_test.npy") for x in "abc")
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)


def test_resume_from_latest_snapshot_matches_an_uninterrupted_run(synthetic_spec, tmp_path):
    train_member(synthetic_spec, DirectorySink(tmp_path / "full"))
    with pytest.raises(Interrupted):
        train_member(synthetic_spec, InterruptAfterFirstSnapshot(tmp_path / "cut"))
    assert not (tmp_path / "cut/snapshots/1").exists()
    result = train_member(synthetic_spec, DirectorySink(tmp_path / "cut"))
    assert result.resumed_from_epoch == 2 and result.epochs_trained == 2
    for rel in ("snapshots/1/logits_test.npy", "polyak/logits_test.npy"):
        assert np.array_equal(np.load(tmp_path / "full" / rel), np.load(tmp_path / "cut" / rel))


def test_a_finished_member_is_not_retrained(synthetic_spec, tmp_path):
    train_member(synthetic_spec, DirectorySink(tmp_path))
    before = (tmp_path / "polyak/model.pt").stat().st_mtime_ns
    result = train_member(synthetic_spec, DirectorySink(tmp_path))
    assert result.epochs_trained == 0
    assert (tmp_path / "polyak/model.pt").stat().st_mtime_ns == before


def test_resume_refuses_a_different_seed(synthetic_spec, tmp_path):
    with pytest.raises(Interrupted):
        train_member(synthetic_spec, InterruptAfterFirstSnapshot(tmp_path))
    with pytest.raises(ResumeMismatchError, match="seed"):
        train_member(synthetic_spec, DirectorySink(tmp_path), seed=99)


def test_swa_and_step_schedules_train(make_spec, tmp_path):
    spec = make_spec(
        schedule={"kind": "step", "snapshot_every": 2, "swa_epochs": 1, "swa_lr": 0.01},
        polyak={"kind": "swa", "start_epoch": 2},
        train={"epochs": 5},
    )
    result = train_member(spec, DirectorySink(tmp_path))
    assert [s["epoch"] for s in result.snapshots] == [2, 4, 5]
    assert result.polyak["test_acc"] > 0.6


def test_no_polyak_means_no_polyak_dir(make_spec, tmp_path):
    result = train_member(make_spec(polyak={"kind": "none"}), DirectorySink(tmp_path))
    assert result.polyak is None and not (tmp_path / "polyak").exists()


def test_linear_probe_from_an_earlier_members_snapshot_keeps_the_body_frozen(make_spec, tmp_path):
    source = make_spec()
    train_member(source, DirectorySink(tmp_path / "source"))
    snapshot_dir = tmp_path / "source/snapshots/1"
    probe = make_spec(
        model={"name": "tiny", "init": {"source": str(snapshot_dir), "train": "linear_probe"}},
        data={"classes": [0, 1, 2]},
        polyak={"kind": "none"},
    )
    train_member(probe, DirectorySink(tmp_path / "probe"))
    before = torch.load(snapshot_dir / "model.pt", weights_only=True)["model"]
    after = torch.load(tmp_path / "probe/snapshots/1/model.pt", weights_only=True)["model"]
    head = [k for k in after if before[k].shape != after[k].shape]
    assert head, "the 3-class head replaced the 4-class one"
    for key, value in after.items():
        if key not in head and not key.endswith("num_batches_tracked"):
            assert torch.equal(value, before[key]), f"{key} changed under linear_probe"
