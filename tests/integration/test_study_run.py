"""Whole studies on a real local Ray: smoke run, resume, worker failure, bad input."""

import json
import signal
import socket
import subprocess
import time

import psutil
import pytest

from tests.conftest import ROOT
from tests.integration.study_helpers import (
    ENSEMBLE,
    ensemble,
    members_dir,
    snapshot_dirs,
    write_study,
)

pytestmark = [pytest.mark.slow]


def test_smoke_study_stores_two_members_with_two_snapshot_checkpoints(demo_study, tmp_path):
    result = ensemble("run", demo_study, "--smoke", "--output", tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    members = sorted(p for p in members_dir(tmp_path).iterdir() if p.is_dir())
    assert len(members) == 2
    for member in members:
        snaps = snapshot_dirs(member)
        assert [p.name for p in snaps] == ["snapshot_000", "snapshot_001"]
        for snap in snaps:
            for name in (
                "model.pt",
                "checkpoint.pt",
                "logits_val.npy",
                "logits_test.npy",
                "member.json",
            ):
                assert (snap / name).is_file(), snap / name
        assert (snaps[-1] / "polyak" / "logits_test.npy").is_file()
        assert json.loads((member / "COMPLETE.json").read_text())["trial"]["key"] == member.name
    assert "(done)" in result.stdout and str(tmp_path) in result.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "search.space.model.dpth=[20, 32]"], "search.space.model.dpth"),
        (["--address", "127.0.0.1:{port}"], "does not answer"),
        (["--set", "resources.gpus_per_worker=1"], "resources.gpus_per_worker=1"),
    ],
)
def test_bad_input_fails_before_any_training(demo_study, tmp_path, args, message):
    args = [a.format(port=free_port()) for a in args]
    result = ensemble("run", demo_study, "--smoke", "--output", tmp_path, *args, timeout=180)
    assert result.returncode != 0
    assert message in " ".join(result.stderr.split())
    assert not members_dir(tmp_path).exists()


def test_interrupted_study_resumes_without_retraining_finished_members(tmp_path):
    study = write_study(
        tmp_path / "resume.yaml",
        name="resume-test",
        train={"epochs": 6},
        schedule={"kind": "cyclic", "cycles": 3},
        data={"synthetic_size": 2048},
        resources={"max_concurrent_members": 1},
    )
    out = tmp_path / "out"
    proc = start_study(study, out)
    wait_until(proc, lambda: list(members_dir(out).glob("*/COMPLETE.json")), poll=0.2)
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    first_output = proc.communicate(timeout=120)[0]
    finished = list(members_dir(out).glob("*/COMPLETE.json"))
    assert len(finished) == 1, first_output
    stamp = finished[0].stat().st_mtime_ns
    first_snapshots = {p: p.stat().st_mtime_ns for p in snapshot_dirs(finished[0].parent)}

    again = ensemble("run", study, "--output", out)
    assert again.returncode == 0, again.stdout + again.stderr
    assert finished[0].stat().st_mtime_ns == stamp
    assert {p: p.stat().st_mtime_ns for p in snapshot_dirs(finished[0].parent)} == first_snapshots
    assert "done earlier" in again.stdout
    assert len(list(members_dir(out).glob("*/COMPLETE.json"))) == 2
    assert len(list(members_dir(out).iterdir())) == 2  # nothing duplicated


def start_study(study, out) -> subprocess.Popen:
    return subprocess.Popen(
        [*ENSEMBLE, "run", str(study), "--output", str(out)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_until(proc, found, poll: float, timeout: float = 300):
    """`found()`'s first truthy result while the study runs (None if it ends or times out)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        result = found()
        if result:
            return result
        time.sleep(poll)
    return None


def _train_workers(study: subprocess.Popen) -> list[psutil.Process]:
    """The Ray Train workers of this study only: its local Ray runs under its own process, so
    workers of any other Ray on the machine are left alone."""
    found = []
    for child in psutil.Process(study.pid).children(recursive=True):
        try:
            if "RayTrainWorker" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


def reported_epochs(out) -> list[int]:
    """Tune's record of the epochs the study's members reported, in order."""
    results = list((out / "ray" / "run-001").glob("tune-*/*/result.json"))
    return [
        json.loads(line)["epoch"]
        for f in results
        for line in f.read_text().splitlines()
        if line.strip()
    ]


def test_killed_worker_resumes_member_from_its_last_snapshot(tmp_path):
    study = write_study(
        tmp_path / "fault.yaml",
        name="fault-test",
        members={"count": 1},
        train={"epochs": 8},
        schedule={"kind": "cyclic", "cycles": 4},
        data={"synthetic_size": 4096},
    )
    out = tmp_path / "out"
    proc = start_study(study, out)
    # Epoch 2 ends with snapshot 0; once Tune has its result, Ray Train has registered that
    # checkpoint (a file merely present in storage may not be registered yet).
    assert wait_until(proc, lambda: 2 in reported_epochs(out), poll=0.05), proc.communicate()[0]
    first = snapshot_dirs(next(p for p in members_dir(out).iterdir() if p.is_dir()))[0]
    workers = _train_workers(proc)
    assert workers, "no Ray Train worker process found"
    stamp = (first / "checkpoint.pt").stat().st_mtime_ns
    for worker in workers:
        worker.kill()
    output = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, output
    member = first.parent
    assert [p.name for p in snapshot_dirs(member)] == [f"snapshot_{k:03d}" for k in range(4)]
    assert (first / "checkpoint.pt").stat().st_mtime_ns == stamp  # not retrained
    # Resumed after the last snapshot, not from epoch 1.
    epochs = reported_epochs(out)
    assert epochs.count(1) == 1 and sorted(set(epochs)) == list(range(1, 9))
