"""`ensemble run --smoke` leaves a complete MLflow record of the study in its output dir."""

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from orchestrator.tracking.errors import MissingArtifactError
from orchestrator.tracking.reader import find_study, load_members, resolve_store
from tests.conftest import ROOT, synthetic_tree


@pytest.mark.slow
def test_smoke_study_is_tracked_in_the_output_dir(trained_smoke_study, tmp_path):
    """`ensemble run <demo> --smoke` (tests/integration/conftest.py, shared by the session)."""
    out = trained_smoke_study
    uri = resolve_store(out)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("fashion-mnist-demo-smoke")
    runs = client.search_runs([experiment.experiment_id])
    studies = [r for r in runs if r.data.tags.get("ensemble.role") == "study"]
    members = [r for r in runs if r.data.tags.get("ensemble.role") == "member"]
    assert len(studies) == 1 and studies[0].info.status == "FINISHED"
    study_id = studies[0].info.run_id
    assert len(members) >= 2
    for run in members:
        assert run.data.tags["mlflow.parentRunId"] == study_id
        assert run.info.status == "FINISHED"
        folders = [f for f in client.list_artifacts(run.info.run_id, "snapshots") if f.is_dir]
        assert len(folders) >= 2
        for folder in folders:
            names = {Path(f.path).name for f in client.list_artifacts(run.info.run_id, folder.path)}
            assert {"model.pt", "logits_val.npy", "logits_test.npy"} <= names
        history = client.get_metric_history(run.info.run_id, "val_acc")
        assert [m.step for m in history] == [1, 2]
    assert client.search_runs(["0"]) == []  # nothing in "Default"

    # The study run: resolved spec, the members table, and counts.
    study = client.get_run(study_id)
    assert study.data.params["name"] == "fashion-mnist-demo-smoke"
    assert study.data.metrics["members_done"] == len(members)
    assert study.data.tags["ensemble.ray_storage"].endswith("ray/run-001")

    # Read back as the aggregator does.
    found = find_study(uri, "fashion-mnist-demo-smoke")
    records = load_members(uri, found.run_id)
    assert len(records) == len(members)
    assert all(len(r.snapshots) >= 2 and r.polyak is not None for r in records)
    assert records[0].snapshots[0].load_logits("test").shape[1] == 10

    # A copied (or moved) study dir still reads its own artifacts, not the original's.
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "mlartifacts" / records[0].run_id / "artifacts/snapshots/0/logits_val.npy").unlink()
    copied = load_members(resolve_store(copy), found.run_id)
    with pytest.raises(MissingArtifactError, match=records[0].key):
        copied[0].snapshots[0].load_logits("val")

    # Tracking cost per member, for BENCHMARKS.md (printed with -s).
    for run in members:
        path = client.download_artifacts(run.info.run_id, "summary.json", str(tmp_path))
        print(run.info.run_name, json.loads(Path(path).read_text())["tracking"])


@pytest.mark.slow
def test_an_unreachable_tracking_server_fails_the_study_before_training(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    study_file = tmp_path / "synthetic.yaml"
    study_file.write_text(yaml.safe_dump(synthetic_tree(name="unreachable")))
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "run", str(study_file), "--smoke"]
        + ["--output", str(tmp_path / "out"), "--set", f"tracking.uri=http://127.0.0.1:{port}"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert result.returncode == 2
    message = " ".join(result.stderr.split())
    assert f"http://127.0.0.1:{port} is not reachable" in message
    assert "epoch" not in result.stdout  # no member started
    assert not (tmp_path / "out" / "ray" / "run-001" / "members").exists()
