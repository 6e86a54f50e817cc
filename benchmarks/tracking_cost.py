"""What MLflow tracking costs a member per snapshot, with and without LoggedModels.

A ResNet-20 snapshot of the demo's shapes (Fashion-MNIST 28x28, 10 classes; logits for 3000
validation and 10000 test images) goes through `MlflowMemberSink` as a member would send it:
begin, then per snapshot save_snapshot + log_epoch. Timed per snapshot (the sink's own clock):
the artifact upload (weights + logits + metrics) and the LoggedModel (`log_model` with explicit
pip requirements, pickle format). The first LoggedModel of a process also pays MLflow's
imports; it is reported apart.

    .venv/bin/python benchmarks/tracking_cost.py --snapshots 5            # SQLite in a temp dir
    .venv/bin/python benchmarks/tracking_cost.py --uri http://127.0.0.1:5000   # a server
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from orchestrator import config
from orchestrator.cluster.launch import StudyPaths
from orchestrator.cluster.trials import expand_trials
from orchestrator.models import create_model
from orchestrator.tracking.member_sink import MlflowMemberSink
from orchestrator.tracking.study import start_study
from orchestrator.training.sink import MemberInfo, Snapshot

VAL, TEST, CLASSES = 3000, 10000, 10


def member_run(tracking: dict, trial: dict, spec: config.StudySpec, snapshots: int) -> dict:
    sink = MlflowMemberSink.from_config(tracking, trial)
    rng = np.random.default_rng(0)
    info = MemberInfo(
        study=spec.name,
        member=trial["member"],
        seed=trial["seed"],
        data_fingerprint="benchmark",
        num_classes=CLASSES,
        snapshot_epochs=list(range(1, snapshots + 1)),
        spec=spec.to_dict(),
        labels_val=rng.integers(0, CLASSES, VAL),
        labels_test=rng.integers(0, CLASSES, TEST),
    )
    start = time.perf_counter()
    sink.begin(info)
    begin_s = time.perf_counter() - start
    model = create_model(spec.model, in_channels=1, image_size=28, num_classes=CLASSES)
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for k in range(snapshots):
        snap = Snapshot(
            kind="snapshot",
            index=k,
            epoch=k + 1,
            weights=weights,
            logits_val=rng.standard_normal((VAL, CLASSES), dtype=np.float32),
            logits_test=rng.standard_normal((TEST, CLASSES), dtype=np.float32),
            metrics={"val_acc": 0.1, "test_acc": 0.1},
        )
        sink.save_snapshot(snap)
        sink.log_epoch(k + 1, {"train_loss": 1.0, "val_acc": 0.1, "lr": 0.1})
    sink.end({})
    return {"begin_s": begin_s, **sink.timings}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--snapshots", type=int, default=5)
    parser.add_argument(
        "--uri", default=None, help="tracking server (default: SQLite in a temp dir)"
    )
    args = parser.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory(prefix="tracking-cost-") as out:
        run(args, Path(out))


def run(args: argparse.Namespace, out: Path) -> None:
    spec = config.from_dict(
        {
            "name": "tracking-cost",
            "model": {"name": "resnet", "depth": 20},
            "members": {"count": 2},
            "tracking": {"uri": args.uri},
        }
    )
    trials = expand_trials(spec)
    start = time.perf_counter()
    tracking = start_study(spec, StudyPaths(out, "run-001", "r", "r/m", "tune-001"), trials)
    print(f"store: {tracking['uri']}\nstart_study: {time.perf_counter() - start:.2f} s")
    with_models = member_run(tracking, trials[0].to_dict(), spec, args.snapshots)
    without = member_run(
        tracking | {"log_models": False}, trials[1].to_dict(), spec, args.snapshots
    )
    files = statistics.median(without["snapshot_s"] + with_models["snapshot_s"])
    models = with_models["model_s"]
    model = statistics.median(models[1:])
    print(f"member begin (run, params, labels): {without['begin_s']:.3f} s")
    print(f"per snapshot, medians of {args.snapshots}:")
    print(f"  snapshot files (write model.pt + logits, upload): {files:.3f} s")
    print(f"  LoggedModel (log_model, pickle, explicit pip requirements): {model:.3f} s")
    print(f"  total without LoggedModel {files:.3f} s, with {files + model:.3f} s")
    print(f"first LoggedModel of a process (MLflow imports): {models[0]:.2f} s")


if __name__ == "__main__":
    main()
