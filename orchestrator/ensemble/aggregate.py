"""`aggregate(members, options, executor) -> Report`: every ensemble of a finished study.

Order of work (nothing heavy runs, and nothing is written, before every input checks out):
 1. `validate_members`: members exist, have snapshots, share data fingerprint, class count and
    the val/test label arrays; weight files needed by weight jobs exist (local layouts).
 2. Measure every snapshot and Polyak model from its cached logits (val and test), one model
    in memory at a time. This also reads every logits artifact once, so a missing or
    malformed file fails here with the member and the artifact named.
 3. Prediction ensembles from cached logits, each one streamed pass over its components:
    independent members (mean softmax / mean logits / vote), snapshot ensembles per member
    (last K), all members x snapshots, greedy selection on validation, Polyak ensembles.
 4. Weight ensembles through the executor (BN recalibration + inference): SWA of each
    member's last snapshots, uniform and greedy soups where members share an init checkpoint.

Steps 1-4 live in validate.py, candidates.py, prediction_ensembles.py and weight_ensembles.py
(entries.py builds their report entries); this module runs them in order.

Baselines: a member's "single model" is its final snapshot. best single = the highest *test*
accuracy among them (an optimistic baseline, so gains over it are conservative), mean single
= their mean. Gains are test accuracy points (x100). The best ensemble is chosen on
*validation* accuracy (ties: validation NLL) among non-vote entries: the test split is only
reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from orchestrator.ensemble.candidates import measure_members
from orchestrator.ensemble.combine import METHODS
from orchestrator.ensemble.entries import EntryBuilder
from orchestrator.ensemble.metrics import ECE_BINS
from orchestrator.ensemble.prediction_ensembles import ORDER_TEXT, add_prediction_ensembles
from orchestrator.ensemble.records import MemberRecord
from orchestrator.ensemble.report import Report
from orchestrator.ensemble.validate import validate_members
from orchestrator.ensemble.weight_ensembles import add_weight_ensembles, plan_weight_ensembles
from orchestrator.ensemble.weight_jobs import Executor

__all__ = ["ORDER_TEXT", "AggregateOptions", "aggregate", "validate_members"]


@dataclass(frozen=True)
class AggregateOptions:
    study: str | None = None  # report title; default: the members' spec name
    methods: tuple[str, ...] = METHODS  # combiners of the independent-member ensembles
    snapshot_last_k: int | None = None  # snapshots per member in snapshot ensembles (None: all)
    size_order: str = "val_acc"  # order of members in size curves: "val_acc" (best first) | "index"
    greedy: bool = True
    greedy_metric: str = "nll"  # "nll" | "acc" (validation)
    greedy_max_size: int = 25  # picks, counting repeats
    greedy_init: int = 0  # start from the best `init` candidates (0: empty)
    greedy_polyak: bool = True  # Polyak weights are candidates besides the snapshots
    weight_ensembles: bool = True  # SWA of snapshots and soups (need weights + inference)
    swa_last_k: int | None = None  # snapshots averaged per member (None: snapshot_last_k)
    soups: bool = True
    bn_batches: int | None = None  # BN recalibration batches (None: a full training pass)
    device: str = "auto"  # of weight jobs run by the default in-process executor
    val_cache_mb: float = 512.0  # validation probabilities kept in memory for greedy selection

    def __post_init__(self) -> None:
        if unknown := [m for m in self.methods if m not in METHODS]:
            raise ValueError(f"unknown combiner(s) {unknown}; choose from {METHODS}")
        if self.size_order not in ("val_acc", "index"):
            raise ValueError("size_order must be 'val_acc' or 'index'")
        for name in ("snapshot_last_k", "swa_last_k"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 (or None for all snapshots)")


def aggregate(
    members: Sequence[MemberRecord],
    options: AggregateOptions | None = None,
    executor: Executor | None = None,
) -> Report:
    """Build every ensemble of `members` (see the module docstring); writes nothing."""
    options = options or AggregateOptions()
    members = list(members)
    labels_val, labels_test = validate_members(members)
    skipped: list[dict[str, str]] = []

    # Weight jobs are planned first so that missing weight files fail before any work.
    weight_plan = plan_weight_ensembles(members, options, skipped)

    # 2. Measure every snapshot and Polyak model (reads every logits artifact once).
    measured = measure_members(members, labels_val, labels_test, options.val_cache_mb)
    member_entries = measured.members
    final_acc = [m.final.metrics["test_acc"] for m in member_entries]
    best_i = int(np.argmax(final_acc))  # first on ties
    baseline = {
        "definition": "single model = a member's final snapshot; best = highest test accuracy",
        "best_single": {"member": members[best_i].key, "test_acc": final_acc[best_i]},
        "mean_single": {"test_acc": float(np.mean(final_acc))},
        "num_members": len(members),
    }
    build = EntryBuilder(measured.inputs, final_acc[best_i], float(np.mean(final_acc)))

    # 3. Prediction ensembles from cached logits; 4. weight ensembles through the executor.
    add_prediction_ensembles(build, measured, members, labels_val, options, skipped)
    add_weight_ensembles(build, weight_plan, members, member_entries, labels_val, options, executor)

    # Best ensemble: on validation, never on test; vote shares are no usable probabilities
    # (degenerate NLL/ECE, nothing to serve as predict_proba), so a vote is never "best".
    best = max(
        (e for e in build.entries if e.method != "vote"),
        key=lambda e: (e.metrics["val_acc"], -e.metrics["val_nll"]),
        default=None,
    )
    reliability = {"split": "test", "bins": ECE_BINS}
    reliability["best_single"] = {
        "name": members[best_i].key,
        **measured.single_reliability[best_i],
    }
    if best is not None:
        reliability["best_ensemble"] = {"name": best.name, **build.reliability[best.name]}
    return Report(
        study=options.study or str(members[0].spec.get("name") or "study"),
        data_fingerprint=members[0].data_fingerprint,
        num_classes=members[0].num_classes,
        num_val=int(len(labels_val)),
        num_test=int(len(labels_test)),
        options=_options_dict(options),
        baseline=baseline,
        members=member_entries,
        ensembles=build.entries,
        skipped=skipped,
        best_ensemble=best.name if best is not None else None,
        reliability=reliability,
    )


def _options_dict(options: AggregateOptions) -> dict:
    data = asdict(options)
    data["methods"] = list(data["methods"])
    return data
