"""Step 3 of `aggregate`: prediction ensembles from cached logits, each one streamed pass over
its components: independent members (mean softmax / mean logits / vote), snapshot ensembles
per member (last K), all members x snapshots, greedy selection on validation, Polyak ensembles.

Each family adds its entries (with accuracy-vs-size curves) to the `EntryBuilder`, or says
in `skipped` why it was not built. Size curves add members in `options.size_order`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from orchestrator.ensemble.candidates import Measured, ValProbs
from orchestrator.ensemble.combine import softmax
from orchestrator.ensemble.entries import EntryBuilder, skip
from orchestrator.ensemble.records import MemberRecord
from orchestrator.ensemble.selection import best_first, greedy_selection

if TYPE_CHECKING:
    import numpy as np

    from orchestrator.ensemble.aggregate import AggregateOptions

ORDER_TEXT = {
    "val_acc": "by validation accuracy, best first (ties: member order)",
    "index": "in member order as given",
}


def _order(indices: list[int], val_acc: Sequence[float], how: str) -> list[int]:
    if how == "index":
        return list(indices)
    return best_first(indices, val_acc)


def add_prediction_ensembles(
    build: EntryBuilder,
    measured: Measured,
    members: Sequence[MemberRecord],
    labels_val: np.ndarray,
    options: AggregateOptions,
    skipped: list[dict[str, str]],
) -> None:
    """Every prediction ensemble of `options`, in report order."""
    val_acc = [c.entry.metrics["val_acc"] for c in build.inputs.candidates]
    _independent(build, measured.final_of, val_acc, options, skipped)
    snapshot_picks = _snapshots(build, members, options, skipped)
    _members_x_snapshots(build, snapshot_picks, len(members), val_acc, options, skipped)
    if options.greedy:
        _greedy(build, labels_val, options)
    _polyak(build, members, measured.polyak_of, val_acc, options, skipped)


def _independent(build, final_of, val_acc, options, skipped) -> None:
    """3a. Independent members (final snapshots)."""
    if len(final_of) >= 2:
        build.prediction(
            name="independent",
            family="independent",
            picks=_order(final_of, val_acc, options.size_order),
            methods=options.methods,
            method_suffix=True,
            order=f"members' final snapshots {ORDER_TEXT[options.size_order]}",
        )
    else:
        skipped.append(skip("independent", "independent", "a single member: nothing to combine"))


def _snapshots(build, members, options, skipped) -> list[int]:
    """3b. Snapshot ensembles per member (last K), newest first in the size curve; returns
    the candidates used (every member's last K snapshots)."""
    k = options.snapshot_last_k
    snapshot_picks: list[int] = []
    for i, m in enumerate(members):
        member_cands = [
            c
            for c, cand in enumerate(build.inputs.candidates)
            if cand.member == i and cand.ref.kind == "snapshot"
        ]
        chosen = member_cands[-k:] if k else member_cands
        snapshot_picks += chosen
        if len(chosen) < 2:
            reason = (
                f"member {m.key} has {len(chosen)} snapshot(s) in the last "
                f"{k or 'all'}: a snapshot ensemble needs >= 2 (cyclic schedule)"
            )
            skipped.append(skip(f"snapshot/{m.key}", "snapshot", reason))
            continue
        build.prediction(
            name=f"snapshot/{m.key}",
            family="snapshot",
            picks=chosen[::-1],
            order="snapshots newest first (size m = the member's last m snapshots)",
        )
    return snapshot_picks


def _members_x_snapshots(build, snapshot_picks, num_members, val_acc, options, skipped) -> None:
    """3c. All members x snapshots."""
    if len(snapshot_picks) > num_members:
        build.prediction(
            name="members_x_snapshots",
            family="members_x_snapshots",
            picks=_order(snapshot_picks, val_acc, options.size_order),
            order=f"snapshots (last {options.snapshot_last_k or 'all'} per member) "
            f"{ORDER_TEXT[options.size_order]}",
        )
    else:
        reason = "every member has a single snapshot: same as independent"
        skipped.append(skip("members_x_snapshots", "members_x_snapshots", reason))


def _greedy(build, labels_val, options) -> None:
    """3d. Greedy selection with replacement on validation (all snapshots + Polyak models)."""
    pool = [
        c
        for c, cand in enumerate(build.inputs.candidates)
        if cand.ref.kind == "snapshot" or options.greedy_polyak
    ]
    selection = greedy_selection(
        ValProbs(build.inputs, pool),
        labels_val,
        metric=options.greedy_metric,
        max_size=options.greedy_max_size,
        init=options.greedy_init,
    )
    picks = [pool[step["candidate"]] for step in selection.history]
    build.prediction(
        name="greedy",
        family="greedy",
        picks=picks,
        order="greedy selection order on validation (with replacement: size = picks)",
        notes=[
            f"Caruana et al. 2004 on validation {selection.metric}, {len(pool)} candidates "
            f"(snapshots{' + Polyak' if options.greedy_polyak else ''}), "
            f"{selection.size} picks of {len(set(picks))} distinct models "
            f"(max {options.greedy_max_size}); its validation scores are optimistic"
        ],
    )


def _polyak(build, members, polyak_of, val_acc, options, skipped) -> None:
    """3e. Polyak weights: each member's (cached, recalibrated in training) and their ensemble."""
    for i, c in polyak_of.items():
        m = members[i]
        polyak = m.spec.get("polyak") or {}
        desc = polyak.get("kind", "polyak")
        if polyak.get("kind") == "ema":
            desc += f" (decay {polyak.get('decay')})"
        build.add(
            name=f"polyak/{m.key}",
            family="polyak",
            method="weight_average",
            kind="weight",
            components=[{"member": m.key, "kind": "polyak", "index": 0, "weight": 1.0}],
            probs_val=softmax(build.inputs.cand_logits(c, "val")),
            probs_test=softmax(build.inputs.cand_logits(c, "test")),
            notes=[
                f"{desc} weights of the member, BN recalibrated on training data "
                "when it was trained"
            ],
        )
    if len(polyak_of) >= 2:
        build.prediction(
            name="polyak/mean_softmax",
            family="polyak",
            picks=_order(list(polyak_of.values()), val_acc, options.size_order),
            order=f"members' Polyak weights {ORDER_TEXT[options.size_order]}",
        )
    elif not polyak_of:
        reason = "no member stored Polyak weights (polyak.kind=none?)"
        skipped.append(skip("polyak", "polyak", reason))
