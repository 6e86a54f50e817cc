"""MlflowMemberSink + the reader on a SQLite store, with real (tiny) members and no Ray."""

import json
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from orchestrator import config
from orchestrator.cluster.launch import MemberOutcome, StudyOutcome, StudyPaths
from orchestrator.cluster.trials import expand_trials
from orchestrator.ensemble.metrics import accuracy
from orchestrator.tracking import layout
from orchestrator.tracking.errors import (
    MissingArtifactError,
    StudyNotFoundError,
    TrackingWriteError,
)
from orchestrator.tracking.member_sink import MlflowMemberSink
from orchestrator.tracking.reader import find_study, load_members, resolve_store
from orchestrator.tracking.study import finish_study, start_study
from orchestrator.training.member import train_member
from orchestrator.training.sink import DirectorySink, FanoutSink
from tests.conftest import synthetic_tree

SNAPSHOT_FILES = {"model.pt", "logits_val.npy", "logits_test.npy", "metrics.json"}


def paths_for(output: Path, run: str = "run-001") -> StudyPaths:
    storage = str(output / "ray" / run)
    return StudyPaths(output, run, storage, f"{storage}/members", "tune-001")


def files_under(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    return {Path(f.path).name for f in client.list_artifacts(run_id, path)}


@pytest.fixture(scope="module")
def tracked_study(tmp_path_factory, mlflow_db_template):
    """Two tiny members trained with LoggedModels into one study run (shared by the tests)."""
    out = tmp_path_factory.mktemp("tracked") / "study"
    out.mkdir()
    shutil.copy(mlflow_db_template, out / "mlflow.db")
    spec = config.from_dict(synthetic_tree())
    trials = expand_trials(spec)
    tracking = start_study(spec, paths_for(out), trials)
    sinks = []
    for trial in trials:
        sink = MlflowMemberSink.from_config(tracking, trial.to_dict())
        train_member(spec, sink, member=trial.member)
        sinks.append(sink)
    return spec, trials, tracking, sinks, out


def test_each_member_is_a_nested_run_with_its_tags_and_params(tracked_study):
    spec, trials, tracking, _, _ = tracked_study
    client = MlflowClient(tracking["uri"])
    runs = client.search_runs([tracking["experiment_id"]])
    study_runs = [r for r in runs if r.data.tags[layout.ROLE] == "study"]
    members = [r for r in runs if r.data.tags[layout.ROLE] == "member"]
    assert len(study_runs) == 1 and len(members) == len(trials) == 2
    for trial in trials:
        (run,) = [r for r in members if r.data.tags[layout.TRIAL_ID] == trial.key]
        tags = run.data.tags
        assert tags[layout.PARENT_RUN_ID] == tracking["study_run_id"]
        assert run.info.run_name == f"{spec.name}/{trial.key}"
        assert (tags[layout.MEMBER], tags[layout.SEED]) == (str(trial.member), str(trial.seed))
        assert tags[layout.STUDY] == spec.name and len(tags[layout.DATA_FINGERPRINT]) > 6
        assert run.data.params["seed"] == str(trial.seed)
        assert run.info.status == "FINISHED"
    # The driver made the experiment; nothing went to "Default".
    assert client.search_runs(["0"]) == []
    assert list(client.search_logged_models(["0"])) == []


def test_metrics_are_logged_per_epoch(tracked_study):
    spec, _, tracking, sinks, _ = tracked_study
    client = MlflowClient(tracking["uri"])
    run_id = sinks[0].run_id
    for name in ("train_loss", "val_acc", "lr", "polyak_val_acc"):
        steps = [m.step for m in client.get_metric_history(run_id, name)]
        assert steps == list(range(1, spec.train.epochs + 1)), name


def test_snapshots_polyak_and_member_files_are_artifacts(tracked_study):
    _, _, tracking, sinks, _ = tracked_study
    client = MlflowClient(tracking["uri"])
    run_id = sinks[0].run_id
    assert files_under(client, run_id, "snapshots") == {"0", "1"}
    for k in (0, 1):
        assert files_under(client, run_id, f"snapshots/{k}") == SNAPSHOT_FILES
    assert files_under(client, run_id, "polyak") == SNAPSHOT_FILES
    assert {"member.json", "spec.json", "labels_val.npy", "labels_test.npy", "summary.json"} <= (
        files_under(client, run_id)
    )


def test_each_snapshot_is_a_logged_model_linked_to_its_epoch(tracked_study):
    _, _, tracking, sinks, _ = tracked_study
    client = MlflowClient(tracking["uri"])
    run_id = sinks[0].run_id
    models = [
        m
        for m in client.search_logged_models([tracking["experiment_id"]])
        if m.source_run_id == run_id
    ]
    by_name = {m.name: m for m in models}
    assert set(by_name) == {"snapshot-0", "snapshot-1", "polyak-model"}
    assert all(str(m.status) in ("READY", "LoggedModelStatus.READY") for m in models)
    # Snapshot 0 ends cycle 1 (epoch 2); its model carries that epoch's metrics.
    assert {m.step for m in by_name["snapshot-0"].metrics} == {2}
    assert "val_acc" in {m.key for m in by_name["snapshot-1"].metrics}
    mlflow.set_tracking_uri(tracking["uri"])
    net = mlflow.pytorch.load_model(f"models:/{by_name['snapshot-1'].model_id}")
    assert net(torch.zeros(1, 1, 12, 12)).shape == (1, 4)


def test_reader_round_trip_builds_member_records(tracked_study):
    spec, trials, tracking, _, out = tracked_study
    uri = resolve_store(out)
    assert uri == tracking["uri"]
    study = find_study(uri, spec.name)
    assert study.run_id == tracking["study_run_id"] and study.run == "run-001"
    records = load_members(uri, study.run_id)
    assert [r.key for r in records] == [t.key for t in trials]
    for record in records:
        assert record.num_classes == 4 and record.spec["model"]["name"] == "tiny"
        assert [s.index for s in record.snapshots] == [0, 1] and record.polyak is not None
        labels = record.load_labels("val")
        for ref in [*record.snapshots, record.polyak]:
            logits = ref.load_logits("val")
            assert logits.dtype == np.float32 and logits.shape == (len(labels), 4)
            # The stored logits are the ones the member measured its accuracy on.
            assert accuracy(logits, labels) == pytest.approx(ref.metrics["val_acc"])
        assert "model" in record.snapshots[1].load_weights()


def test_a_missing_artifact_is_an_error_naming_the_member(tracked_study):
    spec, _, tracking, sinks, out = tracked_study
    records = load_members(tracking["uri"], tracking["study_run_id"])
    victim = next(
        out.glob(f"mlartifacts/**/{sinks[1].run_id}/artifacts/snapshots/0/logits_test.npy")
    )
    moved = victim.with_suffix(".bak")
    victim.rename(moved)
    try:
        with pytest.raises(MissingArtifactError, match=records[1].key):
            records[1].snapshots[0].load_logits("test")
    finally:
        moved.rename(victim)
    with pytest.raises(StudyNotFoundError, match=spec.name):
        find_study(tracking["uri"], "no-such-study")


def test_finish_study_logs_members_and_closes_runs(study_dir):
    spec = config.from_dict(synthetic_tree(train={"epochs": 2}, schedule={"cycles": 1}))
    paths = paths_for(study_dir)
    trials = expand_trials(spec)
    tracking = start_study(spec, paths, trials)
    tracking["log_models"] = False
    train_member(spec, MlflowMemberSink.from_config(tracking, trials[0].to_dict()), member=0)
    crashed = MlflowMemberSink.from_config(tracking, trials[1].to_dict())
    with pytest.raises(RuntimeError):
        train_member(spec, FanoutSink([crashed, Crash(at_epoch=1)]), member=1)

    outcome = StudyOutcome(spec, paths)
    outcome.members = [
        MemberOutcome(trials[0], "done", {"metrics": {"val_acc": 0.5}}),
        MemberOutcome(trials[1], "failed", error="RuntimeError: crash"),
    ]
    finish_study(tracking, outcome)

    client = MlflowClient(tracking["uri"])
    study = client.get_run(tracking["study_run_id"])
    assert study.info.status == "FAILED"  # a member failed
    assert study.data.metrics["members_done"] == 1 and study.data.metrics["members_failed"] == 1
    assert client.get_run(crashed.run_id).info.status == "FAILED"  # not left RUNNING
    table = json.loads(
        Path(
            client.download_artifacts(study.info.run_id, "members.json", str(study_dir))
        ).read_text()
    )
    assert [(r["key"], r["status"]) for r in table] == [
        (trials[0].key, "done"),
        (trials[1].key, "failed"),
    ]
    assert table[1]["run_id"] == crashed.run_id

    # The same study run is reused by a re-run; --fresh (run-002) gets a new one.
    assert start_study(spec, paths, trials)["study_run_id"] == tracking["study_run_id"]
    second = start_study(spec, paths_for(study_dir, "run-002"), trials)["study_run_id"]
    assert second != tracking["study_run_id"]
    assert find_study(tracking["uri"], spec.name).run_id == second
    assert find_study(tracking["uri"], spec.name, run="run-001").run_id == tracking["study_run_id"]


class Crash:
    """A sink that fails the member when epoch `at_epoch` ends (a worker dying mid-training)."""

    def __init__(self, at_epoch: int):
        self.at_epoch = at_epoch

    def begin(self, info):
        pass

    def log_epoch(self, epoch, metrics):
        if epoch == self.at_epoch:
            raise RuntimeError(f"crash after epoch {epoch}")

    def save_snapshot(self, snapshot):
        pass

    def load_latest(self):
        return None

    def end(self, summary):
        pass


def test_a_resumed_member_reopens_its_run(study_dir, tmp_path):
    spec = config.from_dict(synthetic_tree())
    trials = expand_trials(spec)
    tracking = start_study(spec, paths_for(study_dir), trials)
    tracking["log_models"] = False  # fast; LoggedModels are covered above
    checkpoints = tmp_path / "member"  # stands in for Ray storage: the resume state

    # Attempt 1 dies after epoch 3 (snapshot 0 at epoch 2 is saved). FanoutSink reports
    # epochs last-sink-first, so the crash comes before MLflow logs epoch 3.
    first = MlflowMemberSink.from_config(tracking, trials[0].to_dict())
    with pytest.raises(RuntimeError, match="crash"):
        train_member(spec, FanoutSink([DirectorySink(checkpoints), first, Crash(3)]), member=0)
    client = MlflowClient(tracking["uri"])
    assert client.get_run(first.run_id).info.status == "RUNNING"

    second = MlflowMemberSink.from_config(tracking, trials[0].to_dict())
    result = train_member(spec, FanoutSink([DirectorySink(checkpoints), second]), member=0)
    assert result.resumed_from_epoch == 2
    assert second.run_id == first.run_id
    members = client.search_runs([tracking["experiment_id"]], "tags.`ensemble.role` = 'member'")
    assert len(members) == 1 and members[0].info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(first.run_id, "val_acc")]
    assert steps == [1, 2, 3, 4]
    assert files_under(client, first.run_id, "snapshots") == {"0", "1"}
    assert files_under(client, first.run_id, "polyak") == SNAPSHOT_FILES


def test_a_snapshot_that_cannot_be_logged_fails_the_member(study_dir, monkeypatch):
    spec = config.from_dict(synthetic_tree(train={"epochs": 2}, schedule={"cycles": 1}))
    trials = expand_trials(spec)
    tracking = start_study(spec, paths_for(study_dir), trials)
    sink = MlflowMemberSink.from_config(tracking, trials[0].to_dict())
    monkeypatch.setattr("orchestrator.tracking.retry.BASE_DELAY_S", 0.0)
    calls = []

    def unreachable(*args, **kwargs):
        calls.append(args)
        raise ConnectionError("connection refused")

    monkeypatch.setattr(MlflowClient, "log_artifacts", unreachable)
    monkeypatch.setattr(MlflowClient, "log_text", unreachable)
    with pytest.raises(TrackingWriteError, match=trials[0].key):
        train_member(spec, sink, member=0)
    assert len(calls) == 6  # retried, then raised (the first write is member.json at begin)


def test_only_the_primary_rank_writes(study_dir):
    spec = config.from_dict(synthetic_tree(train={"epochs": 2}, schedule={"cycles": 1}))
    trials = expand_trials(spec)
    tracking = start_study(spec, paths_for(study_dir), trials)

    class OtherRank(MlflowMemberSink):
        def begin(self, info):
            info.is_primary = False  # what rank 1 of a DDP member sees
            super().begin(info)

    other = OtherRank.from_config(tracking, trials[0].to_dict())
    train_member(spec, other, member=0)
    client = MlflowClient(tracking["uri"])
    assert other.run_id is None
    assert client.search_runs([tracking["experiment_id"]], "tags.`ensemble.role` = 'member'") == []
