"""The `ensemble` command as a user runs it (a real subprocess)."""

import re
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, requires_fashion_mnist


def ensemble(*args, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("model.depth=21", ["model.depth", "20, 32, 44, 56, 110"]),
        ("model.dpth=20", ["model.dpth", "unknown key"]),
        ("train.epochs=-3", ["train.epochs", "greater than or equal to 1"]),
        ("data.name=imagenet-xl", ["data.name", "fashion-mnist"]),
    ],
)
def test_train_member_rejects_bad_input_fast(demo_study, override, words):
    start = time.monotonic()
    result = ensemble("train-member", demo_study, "--set", override)
    assert result.returncode != 0
    message = " ".join(result.stderr.split())
    for word in words:
        assert word in message
    assert "training member" not in result.stdout  # failed before any work
    assert time.monotonic() - start < 60


def test_models_lists_the_papers_parameter_counts():
    result = ensemble("models", "--dataset", "cifar10")
    assert result.returncode == 0, result.stderr
    paper = {
        "resnet20": 0.27,
        "resnet32": 0.46,
        "resnet44": 0.66,
        "resnet56": 0.85,
        "resnet110": 1.7,
    }
    for name, millions in paper.items():
        row = re.search(rf"{name}\s.*?([\d,]+)\s", result.stdout)
        assert row, f"{name} missing from:\n{result.stdout}"
        count = int(row.group(1).replace(",", ""))
        assert abs(count / 1e6 - millions) / millions < 0.02
    for name in ("resnet164", "plain56", "resnet50", "mobilenet_v3_small", "shufflenet_v2_x1_0"):
        assert name in result.stdout


def test_models_rejects_unknown_dataset():
    result = ensemble("models", "--dataset", "imagenet-xl")
    assert result.returncode != 0 and "cifar10" in result.stderr


def test_validate_prints_the_resolved_spec(demo_study):
    result = ensemble("validate", demo_study, "--set", "model.depth=32")
    assert result.returncode == 0, result.stderr
    assert "depth: 32" in result.stdout and "name: fashion-mnist-demo" in result.stdout


@pytest.mark.slow
@requires_fashion_mnist
def test_train_member_prints_snapshot_and_polyak_report(demo_study, tmp_path):
    result = ensemble(
        "train-member",
        demo_study,
        "--output",
        tmp_path / "m",
        "--set",
        "data.subset=1500",
        "--set",
        "data.eval_subset=1000",
        "--set",
        "train.epochs=2",
        "--set",
        "schedule.cycles=2",
        "--set",
        "model.width=0.5",
        "--set",
        "polyak.decay=0.9",
        "--set",
        "polyak.start_epoch=1",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "snapshot 0" in out and "snapshot 1" in out
    assert "snapshot ensemble (2)" in out and "polyak weights" in out
    assert (tmp_path / "m/study.yaml").is_file()
