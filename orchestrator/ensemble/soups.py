"""Planning weight jobs from member records: SWA of snapshots, uniform and greedy soups.

Three kinds, all "average some state_dicts, recalibrate BN on training data, predict":
- SWA of snapshots: the weight average of one member's last snapshots (`swa_of_final_snapshots`).
  Pitfall (REFERENCES.md, Huang et al. 2017 / Izmailov et al. 2018): snapshots from *different*
  cycles of a cyclic schedule sit in different basins; averaging their weights usually lands
  in a high-loss region and hurts, while averaging their *predictions* (snapshot ensemble)
  helps. SWA works on weights of one basin (a constant/low-LR tail). We report it anyway and
  note, per job, how many LR cycles its snapshots span.
- uniform soup: the average of the final weights of members fine-tuned from one checkpoint.
- greedy soup (Wortsman et al. 2022): members sorted by validation accuracy; start from the
  best; add the next one if the soup's validation accuracy does not drop.
  Soups only make sense for models fine-tuned from the *same* pretrained weights (they share a
  basin); independently initialised members are permuted copies of each other, whose average
  is a poor model. `soup_groups` enforces that, with a reason when a soup is skipped.

Only `greedy_soup` runs anything, through the executor it is given; the rest build `WeightJob`s.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.config import StudySpec
from orchestrator.ensemble.metrics import accuracy
from orchestrator.ensemble.records import MemberRecord, SnapshotRef
from orchestrator.ensemble.selection import best_first
from orchestrator.ensemble.weight_jobs import (
    WEIGHTS_FILE,
    Executor,
    WeightJob,
    WeightResult,
    WeightSource,
)
from orchestrator.training.schedules import SchedulePlan


def source_of(member: MemberRecord, ref: SnapshotRef, weight: float = 1.0) -> WeightSource:
    """A picklable source: the local path when the weights are a local file, else the loader."""
    label = f"{member.key}/{ref.kind}/{ref.index}"
    location = Path(ref.location) if ref.location else None
    if location is not None and (location / WEIGHTS_FILE).is_file():
        return WeightSource(label, weight, path=str(location / WEIGHTS_FILE))
    if location is not None and location.suffix == ".pt" and location.is_file():
        return WeightSource(label, weight, path=str(location))
    return WeightSource(label, weight, loader=ref.load_weights)


def snapshot_phase(spec: StudySpec, epoch: int) -> str:
    """Which LR phase/cycle a snapshot taken after 1-based `epoch` ends: "cycle-k", "swa-tail",
    "main" (step/cosine) or "warmup"."""
    plan = SchedulePlan.from_spec(spec, 1)
    if epoch <= plan.warmup_epochs:
        return "warmup"
    if epoch > plan.warmup_epochs + plan.main_epochs:
        return "swa-tail"
    if plan.kind == "cyclic":
        per_cycle = max(1, plan.main_epochs // plan.cycles)
        return f"cycle-{min(plan.cycles - 1, (epoch - plan.warmup_epochs - 1) // per_cycle)}"
    return "main"


def swa_of_final_snapshots(
    member: MemberRecord,
    last_k: int | None = None,
    *,
    bn_batches: int | None = None,
    device: str = "auto",
) -> WeightJob:
    """The job for the SWA-style weight average of `member`'s last `last_k` snapshots (all when
    None). Raises ValueError with fewer than two snapshots (nothing to average)."""
    snaps = member.snapshots[-last_k:] if last_k else list(member.snapshots)
    if len(snaps) < 2:
        raise ValueError(f"member {member.key} has {len(snaps)} snapshot(s); SWA needs >= 2")
    notes: tuple[str, ...] = ()
    try:
        spec = StudySpec.model_validate(member.spec)
        phases = sorted({snapshot_phase(spec, s.epoch) for s in snaps})
    except ValueError:
        phases = []
    if len(phases) > 1:
        notes = (
            f"averages weights from {len(phases)} LR phases ({', '.join(phases)}): weights "
            "from different cycles usually average badly (Huang et al. 2017); compare with "
            "the snapshot ensemble, which averages their predictions",
        )
    return WeightJob(
        name=f"swa/{member.key}",
        spec=member.spec,
        sources=tuple(source_of(member, s) for s in snaps),
        bn_batches=bn_batches,
        device=device,
        notes=notes,
    )


def soup_groups(members: Sequence[MemberRecord]) -> tuple[list[list[int]], list[str]]:
    """Indices of members that may be souped together, and reasons for those that may not.

    A group shares spec.model exactly (architecture and model.init.source) with a non-empty
    init source, and has >= 2 members.
    """
    groups: dict[str, list[int]] = {}
    reasons: list[str] = []

    def init_of(member: MemberRecord) -> dict | None:
        init = (member.spec.get("model") or {}).get("init")
        return init if init and init.get("enabled", True) else None

    no_init = [m.key for m in members if init_of(m) is None]
    if no_init:
        reasons.append(
            f"member(s) {', '.join(no_init)} were not fine-tuned from a checkpoint "
            "(model.init unset or disabled): weight soups need members fine-tuned from one "
            "shared pretrained checkpoint (Wortsman et al. 2022); independently initialised "
            "networks do not average into a good model"
        )
    for i, m in enumerate(members):
        model = m.spec.get("model") or {}
        if init_of(m) is not None:
            groups.setdefault(json.dumps(model, sort_keys=True), []).append(i)
    kept = [g for g in groups.values() if len(g) >= 2]
    for g in groups.values():
        if len(g) < 2:
            reasons.append(
                f"member {members[g[0]].key} shares its model and init source with no other "
                "member: a soup needs at least two"
            )
    return kept, reasons


def soup_job(
    name: str,
    members: Sequence[MemberRecord],
    *,
    splits: tuple[str, ...] = ("val", "test"),
    bn_batches: int | None = None,
    device: str = "auto",
) -> WeightJob:
    """Uniform average of the members' final snapshots."""
    return WeightJob(
        name=name,
        spec=members[0].spec,
        sources=tuple(source_of(m, m.snapshots[-1]) for m in members),
        splits=splits,
        bn_batches=bn_batches,
        device=device,
    )


@dataclass
class SoupResult:
    ingredients: list[int]  # positions in the members given, in the order added
    result: WeightResult
    history: list[dict] = field(default_factory=list)  # per tried member: val_acc, accepted


def greedy_soup(
    members: Sequence[MemberRecord],
    val_acc: Sequence[float],
    labels_val: np.ndarray,
    executor: Executor,
    *,
    name: str = "greedy_soup",
    bn_batches: int | None = None,
    device: str = "auto",
) -> SoupResult:
    """Greedy soup (Wortsman et al. 2022, recipe 1) of the members' final snapshots.

    Members are sorted by validation accuracy (`val_acc`, descending); the soup starts as the
    best one; each next member is kept if the recalibrated soup's validation accuracy does not
    drop (>=). Trials predict only the validation split; the final soup predicts val and test.
    Sequential by nature: each trial depends on the previous choice (one job per call).
    """
    order = best_first(range(len(members)), val_acc)
    ingredients = [order[0]]
    best_acc = float(val_acc[order[0]])
    history = [{"member": members[order[0]].key, "val_acc": best_acc, "accepted": True}]
    for i in order[1:]:
        trial = [members[j] for j in [*ingredients, i]]
        job = soup_job(
            f"{name}/trial", trial, splits=("val",), bn_batches=bn_batches, device=device
        )
        (result,) = executor([job])
        acc = accuracy(result.logits["val"], labels_val)  # argmax of logits = of probabilities
        accepted = acc >= best_acc
        history.append({"member": members[i].key, "val_acc": acc, "accepted": accepted})
        if accepted:
            ingredients.append(i)
            best_acc = acc
    final = soup_job(name, [members[j] for j in ingredients], bn_batches=bn_batches, device=device)
    (result,) = executor([final])
    return SoupResult(ingredients=ingredients, result=result, history=history)


def job_for_components(
    name: str,
    members: Sequence[MemberRecord],
    components: Sequence[Mapping[str, Any]],
    *,
    return_state_dict: bool = True,
    bn_batches: int | None = None,
    device: str = "auto",
) -> WeightJob:
    """The job that rebuilds a weight ensemble of a report from its `components`
    ({"member", "kind", "index", "weight"}), by default returning the averaged, recalibrated
    state_dict: e.g. to log the best weight ensemble as a model."""
    by_key = {m.key: m for m in members}
    sources = []
    for comp in components:
        member = by_key.get(comp["member"])
        if member is None:
            raise ValueError(f"{name}: member {comp['member']} is not among the members given")
        refs = [member.polyak] if comp["kind"] == "polyak" else member.snapshots
        ref = next((r for r in refs if r is not None and r.index == comp["index"]), None)
        if ref is None:
            raise ValueError(f"{name}: member {member.key} has no {comp['kind']} {comp['index']}")
        sources.append(source_of(member, ref, float(comp.get("weight", 1.0))))
    return WeightJob(
        name=name,
        spec=by_key[components[0]["member"]].spec,
        sources=tuple(sources),
        bn_batches=bn_batches,
        device=device,
        return_state_dict=return_state_dict,
    )
