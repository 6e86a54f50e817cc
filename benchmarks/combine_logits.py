"""Speed of combining cached logits: 50 members x 5 snapshots on 10,000 test images (issue 5).

Writes synthetic logits as .npy files in the member-directory layout (member.json,
labels_*.npy, snapshots/<k>/logits_{val,test}.npy + metrics.json, polyak/) to a temp dir,
reads them back through `from_member_dir` records (lazy loaders, one array at a time), and
times:
  combine    one streamed pass over every snapshot's test logits computing mean softmax,
             mean logits and vote together (the "combine step");
  aggregate  the whole prediction side of `aggregate` (weight ensembles off: they need
             trained weights): measuring every snapshot + Polyak model on val and test,
             independent / per-member snapshot / members x snapshots / Polyak ensembles with
             size curves and disagreement, and greedy selection on validation.
Peak RSS is reported to show that members are streamed (all test logits together would be
members x snapshots x 10,000 x 10 x 4 bytes = 100 MB for the defaults).

    .venv/bin/python benchmarks/combine_logits.py
    .venv/bin/python benchmarks/combine_logits.py --members 50 --snapshots 5 --test 10000
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from orchestrator.ensemble import AggregateOptions, aggregate, from_member_dir
from orchestrator.ensemble.combine import Accumulator


def make_study(root: Path, members: int, snapshots: int, n_val: int, n_test: int, classes: int):
    """Member dirs with informative synthetic logits: true-class bonus + per-model noise."""
    rng = np.random.default_rng(0)
    labels = {"val": rng.integers(0, classes, n_val), "test": rng.integers(0, classes, n_test)}
    # A shared "difficulty" per image makes members correlated, as real members are.
    shared = {s: rng.normal(size=(len(y), classes)) for s, y in labels.items()}
    for m in range(members):
        d = root / f"m{m:03d}"
        (d / "snapshots").mkdir(parents=True)
        meta = {"member": m, "seed": m, "data_fingerprint": "bench", "num_classes": classes}
        (d / "member.json").write_text(json.dumps(meta))
        (d / "spec.json").write_text(json.dumps({"name": "combine-bench"}))
        for split, y in labels.items():
            np.save(d / f"labels_{split}.npy", y)
        dirs = [d / "snapshots" / str(k) for k in range(snapshots)] + [d / "polyak"]
        for k, snap in enumerate(dirs):
            snap.mkdir()
            for split, y in labels.items():
                logits = shared[split] + 1.5 * rng.normal(size=(len(y), classes))
                logits[np.arange(len(y)), y] += 1.2
                np.save(snap / f"logits_{split}.npy", logits.astype(np.float32))
            (snap / "metrics.json").write_text(json.dumps({"epoch": 2 * (k + 1)}))
    return labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, default=50)
    parser.add_argument("--snapshots", type=int, default=5)
    parser.add_argument("--val", type=int, default=5000)
    parser.add_argument("--test", type=int, default=10000)
    parser.add_argument("--classes", type=int, default=10)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="combine-bench-") as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        labels = make_study(root, args.members, args.snapshots, args.val, args.test, args.classes)
        generate_s = time.perf_counter() - start
        records = [from_member_dir(d, key=d.name) for d in sorted(root.iterdir())]
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

        start = time.perf_counter()
        acc = Accumulator(("mean_softmax", "mean_logits", "vote"))
        for record in records:
            for ref in record.snapshots:
                acc.add(ref.load_logits("test"))  # one (N, classes) array in memory at a time
        accuracy = {
            m: float((acc.probs(m).argmax(1) == labels["test"]).mean()) for m in acc.methods
        }
        combine_s = time.perf_counter() - start

        start = time.perf_counter()
        report = aggregate(records, AggregateOptions(weight_ensembles=False))
        aggregate_s = time.perf_counter() - start
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    result = {
        "members": args.members,
        "snapshots_per_member": args.snapshots,
        "test_images": args.test,
        "val_images": args.val,
        "classes": args.classes,
        "generate_s": round(generate_s, 2),
        "combine_s": round(combine_s, 2),
        "combine_models": acc.count,
        "combine_test_acc": {k: round(v, 4) for k, v in accuracy.items()},
        "aggregate_s": round(aggregate_s, 2),
        "aggregate_ensembles": len(report.ensembles),
        "best_ensemble": report.best_ensemble,
        "peak_rss_mb_before_after": [rss_before // 1024, rss_after // 1024],
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
