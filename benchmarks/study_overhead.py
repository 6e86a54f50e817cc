"""Ray orchestration overhead and concurrency, measured as whole commands side by side.

1. overhead: the demo member trained in-process (`ensemble train-member`, 2 threads) vs the
   same member as a one-member study (`ensemble run`, one Train worker with 2 CPUs). The
   study's extra time (Ray start, Tune, TorchTrainer start-up, checkpoint copies) relative
   to the member's own time.
2. concurrency: a 2-member study with both members at once (1 CPU each) vs the same study
   with one member at a time (`resources.max_concurrent_members=1`).

Each command runs in a fresh output dir; pairs alternate over --rounds. Medians reported.

    .venv/bin/python benchmarks/study_overhead.py --rounds 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENSEMBLE = [sys.executable, "-m", "orchestrator.cli"]
# A shorter demo member so the whole benchmark fits in ~15 minutes on 2 cores.
SIZE = ["data.subset=4000", "train.epochs=4", "schedule.cycles=2", "polyak.start_epoch=2"]


def timed(args: list[str]) -> float:
    start = time.perf_counter()
    result = subprocess.run([*ENSEMBLE, *args], cwd=ROOT, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(
            f"{' '.join(args)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
        )
    return elapsed


def sets(values: list[str]) -> list[str]:
    return [a for v in values for a in ("--set", v)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="jobs/studies/fashion_mnist_demo.yaml")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    one = [*SIZE, "members.count=1", "resources.cpus_per_worker=2", "train.threads=2"]
    two = [*SIZE, "members.count=2", "resources.cpus_per_worker=1", "train.threads=1"]
    times: dict[str, list[float]] = {
        k: [] for k in ("member", "study1", "parallel2", "sequential2")
    }
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            out = Path(tmp) / str(r)
            times["member"].append(
                timed(["train-member", args.study, *sets(one), "--output", str(out / "m")])
            )
            times["study1"].append(
                timed(["run", args.study, *sets(one), "--output", str(out / "s1")])
            )
            times["parallel2"].append(
                timed(["run", args.study, *sets(two), "--output", str(out / "p2")])
            )
            times["sequential2"].append(
                timed(
                    [
                        "run",
                        args.study,
                        *sets([*two, "resources.max_concurrent_members=1"]),
                        "--output",
                        str(out / "q2"),
                    ]
                )
            )
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        json.dumps(
            {
                "seconds": {k: round(v, 1) for k, v in med.items()},
                "study_overhead_fraction": round(med["study1"] / med["member"] - 1, 3),
                "two_member_speedup": round(med["sequential2"] / med["parallel2"], 3),
                "rounds": args.rounds,
                "size": SIZE,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
