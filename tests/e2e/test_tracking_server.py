"""Real services on 127.0.0.1: an MLflow server with S3 artifacts on moto, and `ensemble ui`.

Every process started here is stopped in a `finally`, also when an assertion fails.
"""

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import boto3
import psutil
import pytest
import yaml

from orchestrator import config
from orchestrator.cluster.launch import StudyPaths
from orchestrator.cluster.trials import expand_trials
from orchestrator.tracking.member_sink import MlflowMemberSink
from orchestrator.tracking.reader import find_study, load_members
from orchestrator.tracking.study import start_study
from orchestrator.tracking.ui import free_port, healthy
from orchestrator.training.member import train_member
from tests.conftest import ROOT, synthetic_tree

STACK = ROOT / "infra" / "local" / "mlflow_s3_stack.sh"
pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def stack(command: str, state: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_STACK_DIR": str(state), "PYTHON": sys.executable}
    return subprocess.run(
        ["bash", str(STACK), command], capture_output=True, text=True, env=env, timeout=300
    )


@pytest.fixture(scope="module")
def s3_stack(tmp_path_factory):
    """infra/local's MLflow server + moto S3; yields its settings, always torn down."""
    state = tmp_path_factory.mktemp("stack")
    try:
        up = stack("up", state)
        assert up.returncode == 0, up.stdout + up.stderr
        settings = {}
        for line in up.stdout.splitlines():
            key, _, value = line.removeprefix("export ").partition("=")
            settings[key] = value
        yield settings
    finally:
        down = stack("down", state)
        assert down.returncode == 0, down.stderr
    for pidfile in ("mlflow.pid", "moto.pid"):
        assert not (state / pidfile).exists()


def test_a_smoke_study_on_a_tracking_server_stores_artifacts_in_s3(s3_stack, tmp_path):
    uri = s3_stack["MLFLOW_TRACKING_URI"]
    study_file = tmp_path / "synthetic.yaml"
    study_file.write_text(yaml.safe_dump(synthetic_tree(name="e2e-s3")))
    out = tmp_path / "study"
    command = [sys.executable, "-m", "orchestrator.cli", "run", str(study_file), "--smoke"]
    command += ["--output", str(out), "--set", f"tracking.uri={uri}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert result.returncode == 0, (
        shlex.join(command) + result.stdout[-3000:] + result.stderr[-3000:]
    )
    assert not (out / "mlflow.db").exists()  # the server holds the study, not the output dir

    study = find_study(uri, "e2e-s3-smoke")
    records = load_members(uri, study.run_id, cache_dir=tmp_path / "cache")
    assert len(records) == 2

    s3 = boto3.client(
        "s3",
        endpoint_url=s3_stack["MLFLOW_STACK_S3_ENDPOINT"],
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    listed = s3.list_objects_v2(
        Bucket=s3_stack["MLFLOW_STACK_BUCKET"], Prefix=s3_stack["MLFLOW_STACK_PREFIX"] + "/"
    )
    keys = {obj["Key"] for obj in listed.get("Contents", [])}
    for record in records:
        for folder in ("snapshots/0", "snapshots/1", "polyak"):
            for name in ("model.pt", "logits_val.npy", "logits_test.npy"):
                assert any(k.endswith(f"{record.run_id}/artifacts/{folder}/{name}") for k in keys)
        # ...and the same files read back through MLflow (downloaded from the server).
        labels = record.load_labels("test")
        logits = record.snapshots[1].load_logits("test")
        assert logits.shape == (len(labels), 4)
        assert "model" in record.polyak.load_weights()
    assert any("/models/" in k and k.endswith("MLmodel") for k in keys)  # LoggedModels


@pytest.fixture
def small_study(study_dir):
    """A study dir whose SQLite store holds one tiny member (no Ray, no LoggedModels)."""
    spec = config.from_dict(synthetic_tree(train={"epochs": 2}, schedule={"cycles": 1}))
    storage = str(study_dir / "ray" / "run-001")
    paths = StudyPaths(study_dir, "run-001", storage, f"{storage}/members", "tune-001")
    trials = expand_trials(spec)
    tracking = start_study(spec, paths, trials) | {"log_models": False}
    train_member(spec, MlflowMemberSink.from_config(tracking, trials[0].to_dict()), member=0)
    return study_dir, tracking, spec


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM the CLI (it stops its server); kill whatever it left behind."""
    try:
        children = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    for child in children:
        if child.is_running():
            child.kill()


def test_ensemble_ui_serves_the_study_and_its_rest_api(small_study):
    study_dir, tracking, spec = small_study
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "ui", str(study_dir), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and process.poll() is None:
            if any(f"MLflow UI: {url}" in line for line in lines):
                break
            time.sleep(0.5)
        assert any(f"MLflow UI: {url}" in line for line in lines), "".join(lines)
        assert healthy(url)  # the printed URL is up
        with urllib.request.urlopen(url, timeout=10) as page:
            assert page.status == 200
        request = urllib.request.Request(
            f"{url}/api/2.0/mlflow/runs/search",
            data=json.dumps({"experiment_ids": [tracking["experiment_id"]]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            runs = json.loads(response.read())["runs"]
        names = {r["info"]["run_name"] for r in runs}
        assert names == {f"{spec.name}/run-001", f"{spec.name}/m000-bf21a9e8"}
    finally:
        _stop(process)
    assert process.returncode == 0  # SIGTERM -> a clean exit that stopped its server
    assert not healthy(url), "the UI server outlived `ensemble ui`"
