"""Demo-size figures of the claim studies in jobs/studies (BENCHMARKS.md, "Claims").

    .venv/bin/python benchmarks/claim_figures.py [--claims independent snapshot ...]

For each claim: train its studies with `ensemble run` (finished members are kept, so a re-run
only reads back), aggregate each with `ensemble aggregate --overwrite`, read the members and
reports back from MLflow, and print one markdown table per claim. Everything lands under
--output (default runs/, where the transfer study's `model.init.study` expects its source);
the figures are also written to <output>/claim-figures.json. Training times are the span of
each study's member runs in MLflow, on whatever machine ran them (2 CPU cores for the figures
in BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mlflow import MlflowClient  # noqa: E402

from orchestrator.ensemble.combine import mean_softmax  # noqa: E402
from orchestrator.ensemble.metrics import accuracy  # noqa: E402
from orchestrator.tracking.reader import find_study, load_members, resolve_store  # noqa: E402

ENSEMBLE = [sys.executable, "-m", "orchestrator.cli"]
STUDIES = ROOT / "jobs" / "studies"
# claim -> its study files, in training order (a transfer target after its source).
CLAIMS = {
    "independent": ["claim_independent_vs_single"],
    "snapshot": ["claim_snapshot_ensemble", "claim_snapshot_independent_arm"],
    "polyak": ["claim_polyak_vs_raw"],
    "depth": ["claim_plain_vs_residual_depth"],
    "transfer": ["claim_transfer_source", "claim_transfer_vs_scratch"],
}
STUDY_NAMES = {
    "claim_independent_vs_single": "claim-independent-vs-single",
    "claim_snapshot_ensemble": "claim-snapshot-ensemble",
    "claim_snapshot_independent_arm": "claim-snapshot-independent-arm",
    "claim_polyak_vs_raw": "claim-polyak-vs-raw",
    "claim_plain_vs_residual_depth": "claim-plain-vs-residual-depth",
    "claim_transfer_source": "claim-transfer-source",
    "claim_transfer_vs_scratch": "claim-transfer-vs-scratch",
}


def run_cli(args: list[str]) -> float:
    print("$ ensemble " + " ".join(args), flush=True)
    start = time.perf_counter()
    result = subprocess.run([*ENSEMBLE, *args], cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(
            f"ensemble {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return time.perf_counter() - start


def train_and_aggregate(study_file: str, output: Path, extra: list[str]) -> dict[str, float]:
    study_dir = output / STUDY_NAMES[study_file]
    train = run_cli(
        ["run", str(STUDIES / f"{study_file}.yaml"), "--output", str(study_dir), *extra]
    )
    aggregate = run_cli(["aggregate", str(study_dir), "--bn-batches", "20", "--overwrite"])
    return {"train_s": round(train, 1), "aggregate_s": round(aggregate, 1)}


def read_study(output: Path, study_file: str):
    study_dir = output / STUDY_NAMES[study_file]
    uri = resolve_store(study_dir)
    study = find_study(uri, STUDY_NAMES[study_file])
    members = load_members(uri, study.run_id)
    report = json.loads((study_dir / "report" / "report.json").read_text())
    return uri, members, report


def training_span_s(output: Path, study_file: str) -> float:
    """First member start to last member end, from MLflow: the time the study's training took
    (without Ray start-up), also when this invocation found the members finished earlier."""
    uri, members, _ = read_study(output, study_file)
    client = MlflowClient(uri)
    infos = [client.get_run(m.run_id).info for m in members]
    return round((max(i.end_time for i in infos) - min(i.start_time for i in infos)) / 1000, 1)


def pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def mean_sd(values: list[float]) -> str:
    if len(values) < 2:
        return pct(values[0])
    return f"{pct(statistics.mean(values))} ± {100 * statistics.stdev(values):.2f}"


def entry(report: dict[str, Any], name: str) -> dict[str, Any]:
    for e in report["ensembles"]:
        if e["name"] == name:
            return e
    raise KeyError(f"{report['study']}: no ensemble {name!r}")


# One function per claim: (markdown rows, figures dict) -----------------------------------
def independent_claim(output: Path):
    _, members, report = read_study(output, "claim_independent_vs_single")
    singles = [m["final"]["metrics"]["test_acc"] for m in report["members"]]
    ens = entry(report, "independent/mean_softmax")
    curve = ens["size_curve"]["test_acc"]
    rows = [
        ("single member, mean ± sd", mean_sd(singles)),
        ("best single member (test, optimistic)", pct(max(singles))),
        (f"ensemble of {len(singles)}, mean softmax", pct(ens["metrics"]["test_acc"])),
        (
            "gain over mean / best single (points)",
            f"+{ens['gain_over_mean_single']:.2f} / +{ens['gain_over_best_single']:.2f}",
        ),
        ("test acc by ensemble size 1..M", " → ".join(pct(a) for a in curve)),
        (
            "test NLL single (mean) → ensemble",
            f"{statistics.mean(m['final']['metrics']['test_nll'] for m in report['members']):.3f}"
            f" → {ens['metrics']['test_nll']:.3f}",
        ),
    ]
    return rows, {"singles": singles, "ensemble": ens["metrics"], "size_curve": curve}


def snapshot_claim(output: Path):
    _, _, snap = read_study(output, "claim_snapshot_ensemble")
    _, _, arm = read_study(output, "claim_snapshot_independent_arm")
    snapshot_accs = [
        entry(snap, f"snapshot/{m['key']}")["metrics"]["test_acc"] for m in snap["members"]
    ]
    final_accs = [m["final"]["metrics"]["test_acc"] for m in snap["members"]]
    arm_ens = entry(arm, "independent/mean_softmax")["metrics"]["test_acc"]
    arm_singles = [m["final"]["metrics"]["test_acc"] for m in arm["members"]]
    cycles = len(snap["members"][0]["snapshots"])
    rows = [
        (
            f"snapshot ensemble ({cycles} cycles of one run), mean ± sd over runs",
            mean_sd(snapshot_accs),
        ),
        ("  its final snapshot alone", mean_sd(final_accs)),
        (f"independent ensemble of {len(arm_singles)} (same total epochs)", pct(arm_ens)),
        ("  its members alone", mean_sd(arm_singles)),
        (
            "snapshot − independent (points)",
            f"{100 * (statistics.mean(snapshot_accs) - arm_ens):+.2f}",
        ),
    ]
    return rows, {
        "snapshot_ensembles": snapshot_accs,
        "snapshot_finals": final_accs,
        "independent_ensemble": arm_ens,
        "independent_singles": arm_singles,
    }


def polyak_claim(output: Path):
    _, _, report = read_study(output, "claim_polyak_vs_raw")
    raw = [m["final"]["metrics"]["test_acc"] for m in report["members"]]
    averaged = [m["polyak"]["metrics"]["test_acc"] for m in report["members"]]
    diffs = [100 * (p - r) for p, r in zip(averaged, raw, strict=True)]
    poly_ens = entry(report, "polyak/mean_softmax")["metrics"]["test_acc"]
    raw_ens = entry(report, "independent/mean_softmax")["metrics"]["test_acc"]
    rows = [
        ("raw final weights, mean ± sd", mean_sd(raw)),
        ("SWA weights (BN recalibrated), mean ± sd", mean_sd(averaged)),
        ("SWA − raw per member (points)", ", ".join(f"{d:+.2f}" for d in diffs)),
        ("ensemble of raw → of SWA weights", f"{pct(raw_ens)} → {pct(poly_ens)}"),
    ]
    return rows, {
        "raw": raw,
        "polyak": averaged,
        "raw_ensemble": raw_ens,
        "polyak_ensemble": poly_ens,
    }


def depth_claim(output: Path):
    uri, members, _ = read_study(output, "claim_plain_vs_residual_depth")
    client = MlflowClient(uri)
    groups: dict[tuple, list[dict[str, float]]] = defaultdict(list)
    for m in members:
        logged = client.get_run(m.run_id).data.metrics
        groups[(m.spec["model"]["name"], m.spec["model"]["depth"])].append(
            {
                "train_loss": logged["train_loss"],
                "train_acc": logged["train_acc"],
                "test_acc": m.snapshots[-1].metrics["test_acc"],
            }
        )
    rows, figures = [], {}
    for (name, depth), runs in sorted(groups.items()):
        avg = {k: statistics.mean(r[k] for r in runs) for k in runs[0]}
        figures[f"{name}-{depth}"] = avg
        rows.append(
            (
                f"{name}-{depth}: last-epoch train error / train loss / test acc",
                f"{pct(1 - avg['train_acc'])} / {avg['train_loss']:.3f} / {pct(avg['test_acc'])}",
            )
        )
    return rows, figures


def transfer_claim(output: Path):
    _, members, _ = read_study(output, "claim_transfer_vs_scratch")
    arms: dict[tuple[str, bool], list] = defaultdict(list)
    for m in members:
        init = m.spec["model"].get("init") or {}
        arms[(m.spec["model"]["name"], bool(init) and init.get("enabled", True))].append(m)
    labels = members[0].load_labels("test")
    rows, figures = [], {}
    for name in sorted({a for a, _ in arms}):
        result = {}
        for transfer in (False, True):
            group = arms.get((name, transfer), [])
            if not group:
                continue
            singles = [g.snapshots[-1].metrics["test_acc"] for g in group]
            probs = mean_softmax(g.snapshots[-1].load_logits("test") for g in group)
            result["transfer" if transfer else "scratch"] = {
                "singles": singles,
                "ensemble": accuracy(probs, labels),
            }
        figures[name] = result
        if {"transfer", "scratch"} <= set(result):
            s, t = result["scratch"], result["transfer"]
            gain = 100 * (statistics.mean(t["singles"]) - statistics.mean(s["singles"]))
            rows.append(
                (
                    f"{name}: scratch → transfer; single (mean); ensemble of {len(t['singles'])}",
                    f"{mean_sd(s['singles'])} → {mean_sd(t['singles'])} ({gain:+.2f}); "
                    f"{pct(s['ensemble'])} → {pct(t['ensemble'])}",
                )
            )
    return rows, figures


READERS = {
    "independent": independent_claim,
    "snapshot": snapshot_claim,
    "polyak": polyak_claim,
    "depth": depth_claim,
    "transfer": transfer_claim,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--claims", nargs="+", choices=list(CLAIMS), default=list(CLAIMS))
    parser.add_argument("--output", type=Path, default=ROOT / "runs")
    parser.add_argument(
        "--read-only", action="store_true", help="only read back studies trained earlier"
    )
    args = parser.parse_args()
    output = args.output.resolve()
    figures_file = output / "claim-figures.json"
    figures = json.loads(figures_file.read_text()) if figures_file.is_file() else {}
    for claim in args.claims:
        times = {}
        if not args.read_only:
            for study_file in CLAIMS[claim]:
                extra = []
                if study_file == "claim_transfer_vs_scratch":
                    source = output / STUDY_NAMES["claim_transfer_source"]
                    extra = ["--set", f"model.init.study={source}"]
                times[study_file] = train_and_aggregate(study_file, output, extra)
        rows, numbers = READERS[claim](output)
        spans = {f: training_span_s(output, f) for f in CLAIMS[claim]}
        figures[claim] = {"figures": numbers, "training_span_s": spans, "this_invocation_s": times}
        print(f"\n### {claim}\n\n| | test accuracy |\n|---|---|")
        for label, value in rows:
            print(f"| {label} | {value} |")
        print(
            "\ntraining (first member start to last member end): "
            + ", ".join(f"{STUDY_NAMES[f]} {s / 60:.1f} min" for f, s in spans.items())
        )
        output.mkdir(parents=True, exist_ok=True)
        figures_file.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
