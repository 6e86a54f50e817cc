"""Killing the training process mid-run and running it again resumes from the last snapshot."""

import json
import signal
import subprocess
import sys
import time

import pytest
import yaml

from tests.conftest import ROOT, synthetic_tree


@pytest.mark.slow
def test_killed_member_resumes_from_its_last_snapshot(tmp_path):
    tree = synthetic_tree(
        train={"epochs": 12},
        schedule={"kind": "cyclic", "cycles": 6},
        data={"synthetic_size": 2048},
    )
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump(tree))
    out = tmp_path / "member"
    cmd = [
        sys.executable,
        "-m",
        "orchestrator.cli",
        "train-member",
        str(study),
        "--output",
        str(out),
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    first = out / "snapshots/0/checkpoint.pt"
    while not first.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert first.exists(), proc.communicate()[0]
    proc.send_signal(signal.SIGKILL)  # no chance to clean up, like a lost worker
    proc.wait()
    done = sorted(p.name for p in (out / "snapshots").iterdir() if p.name.isdigit())
    assert len(done) < 6, "the kill came too late to test resuming"

    rerun = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed_from_epoch"] == 2 * len(done)
    assert sorted(int(p.name) for p in (out / "snapshots").iterdir() if p.name.isdigit()) == list(
        range(6)
    )
    assert (out / "polyak/logits_test.npy").is_file()
