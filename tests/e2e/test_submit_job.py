"""`ensemble submit` to a real Ray head started on 127.0.0.1 inside the test."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.integration.study_helpers import ensemble, members_dir, snapshot_dirs

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_head():
    gcs, dashboard = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    # As a user with the project's environment activated: the job's `python` is the venv's.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    start = subprocess.run(
        [
            RAY,
            "start",
            "--head",
            "--node-ip-address=127.0.0.1",
            f"--port={gcs}",
            "--num-cpus=2",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard}",
            "--disable-usage-stats",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert start.returncode == 0, start.stdout + start.stderr
    try:
        yield f"http://127.0.0.1:{dashboard}"
    finally:
        subprocess.run([RAY, "stop", "--force"], capture_output=True, timeout=120, env=env)


def test_submitted_smoke_study_succeeds_and_leaves_results(ray_head, demo_study, tmp_path):
    out = tmp_path / "job-output"
    result = ensemble(
        "submit", demo_study, "--smoke", "--address", ray_head, "--output", out, timeout=900
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "SUCCEEDED" in result.stdout
    members = [p for p in members_dir(out).iterdir() if p.is_dir()]
    assert len(members) == 2
    assert all(len(snapshot_dirs(m)) == 2 for m in members)


def test_submit_to_an_address_that_does_not_answer_fails_clearly(demo_study):
    result = ensemble(
        "submit", demo_study, "--smoke", "--address", f"http://127.0.0.1:{free_port()}", timeout=120
    )
    assert result.returncode != 0
    assert "did not accept" in result.stderr


def test_submit_needs_a_dashboard_address(demo_study):
    result = ensemble("submit", demo_study, "--address", "127.0.0.1:6379", timeout=60)
    assert result.returncode != 0 and "http://HEAD:8265" in result.stderr
    assert ROOT.is_dir()
