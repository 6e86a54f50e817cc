"""`ensemble submit` to a real Ray head started on 127.0.0.1 inside the test."""

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from tests.conftest import ROOT
from tests.integration.study_helpers import ensemble, members_dir, snapshot_dirs, write_study

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dashboard_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/api/version", timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # e.g. 401 under Ray's token auth: the dashboard is up
    except OSError:
        return False


@pytest.fixture
def ray_head(tmp_path):
    """A Ray head on 127.0.0.1, as `ray start --head`. `--block` keeps its processes under
    this one, so the teardown stops this cluster only (`ray stop --force` would kill every
    Ray on the machine, a developer's running study included)."""
    gcs, dashboard = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    # As a user with the project's environment activated: the job's `python` is the venv's.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    log = tmp_path / "ray-head.log"
    with open(log, "w") as out:
        head = subprocess.Popen(
            [
                RAY,
                "start",
                "--head",
                "--block",
                "--node-ip-address=127.0.0.1",
                f"--port={gcs}",
                "--num-cpus=2",
                "--include-dashboard=true",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={dashboard}",
                # Not Ray's fixed default 52365: any other Ray on the machine (a developer's
                # local study) holds it, and the head would then never accept a job.
                f"--dashboard-agent-listen-port={free_port()}",
                "--disable-usage-stats",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.monotonic() + 180
        while not dashboard_answers(url):
            assert head.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        yield url
    finally:
        cluster = psutil.Process(head.pid).children(recursive=True)
        head.terminate()  # --block stops every process it started
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
        _, alive = psutil.wait_procs(cluster, timeout=30)
        for process in alive:
            process.kill()
        assert not alive, f"Ray processes outlived the head: {[p.pid for p in alive]}"


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


def test_local_study_starts_its_own_ray_beside_a_running_head(ray_head, tmp_path):
    # A bare ray.init() would join the `ray start` cluster (and refuse num_cpus); without
    # --address the study must run on its own local Ray and leave that cluster alone.
    study = write_study(tmp_path / "beside.yaml", name="beside-head", train={"epochs": 2})
    result = ensemble("run", study, "--output", tmp_path / "out", timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "local Ray" in result.stdout
    assert len(list(members_dir(tmp_path / "out").glob("*/COMPLETE.json"))) == 2
    assert dashboard_answers(ray_head)
