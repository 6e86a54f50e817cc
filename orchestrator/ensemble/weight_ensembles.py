"""Step 4 of `aggregate`: weight ensembles through the executor (BN recalibration +
inference): SWA of each member's last snapshots, uniform and greedy soups where members share
an init checkpoint.

Planned (`plan_weight_ensembles`) before any other work, so that missing weight files fail
first; run (`add_weight_ensembles`) after the prediction ensembles.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from orchestrator.ensemble.entries import EntryBuilder, skip
from orchestrator.ensemble.errors import AggregateError
from orchestrator.ensemble.records import MemberRecord
from orchestrator.ensemble.report import MemberEntry
from orchestrator.ensemble.soups import greedy_soup, soup_groups, soup_job, swa_of_final_snapshots
from orchestrator.ensemble.validate import check_weights
from orchestrator.ensemble.weight_jobs import Executor, WeightJob, WeightResult
from orchestrator.ensemble.weights import InProcessExecutor

if TYPE_CHECKING:
    from orchestrator.ensemble.aggregate import AggregateOptions


@dataclass
class WeightPlan:
    swa_jobs: list[WeightJob]
    soup_groups: list[list[int]]  # member indices souped together


def plan_weight_ensembles(
    members: Sequence[MemberRecord], options: AggregateOptions, skipped: list[dict[str, str]]
) -> WeightPlan:
    """The SWA jobs and soup groups of `options`; checks their local weight files exist."""
    plan = WeightPlan([], [])
    if not options.weight_ensembles:
        skipped.append(skip("weight ensembles", "swa", "disabled (weight_ensembles=False)"))
        return plan
    last_k = options.swa_last_k or options.snapshot_last_k
    for m in members:
        try:
            job = swa_of_final_snapshots(
                m, last_k, bn_batches=options.bn_batches, device=options.device
            )
        except ValueError as exc:
            skipped.append(skip(f"swa/{m.key}", "swa", str(exc)))
            continue
        check_weights(m, m.snapshots[-len(job.sources) :])
        plan.swa_jobs.append(job)
    if options.soups:
        plan.soup_groups, reasons = soup_groups(members)
        for reason in reasons:
            skipped.append(skip("soups", "soup", reason))
        for group in plan.soup_groups:
            for i in group:
                check_weights(members[i], [members[i].snapshots[-1]])
    return plan


def add_weight_ensembles(
    build: EntryBuilder,
    plan: WeightPlan,
    members: Sequence[MemberRecord],
    member_entries: Sequence[MemberEntry],
    labels_val: np.ndarray,
    options: AggregateOptions,
    executor: Executor | None,
) -> None:
    """Run the planned jobs (SWA and uniform soups in one call, then each greedy soup)."""
    if not (plan.swa_jobs or plan.soup_groups):
        return
    executor = executor or InProcessExecutor()
    fingerprint = members[0].data_fingerprint

    def soup_name(kind: str, group: list[int]) -> str:
        # One group keeps the plain name; several are told apart by their members.
        if len(plan.soup_groups) > 1:
            return f"{kind}/{'+'.join(members[i].key for i in group)}"
        return kind

    uniform = [
        soup_job(
            soup_name("uniform_soup", g),
            [members[i] for i in g],
            bn_batches=options.bn_batches,
            device=options.device,
        )
        for g in plan.soup_groups
    ]
    jobs = plan.swa_jobs + uniform
    results = _run(executor, jobs)
    for n, (job, result) in enumerate(zip(jobs, results, strict=True)):
        family = "swa" if n < len(plan.swa_jobs) else "uniform_soup"
        build.weight(result, job, family, fingerprint, _source_components(job))
    for g in plan.soup_groups:
        group = [members[i] for i in g]
        name = soup_name("greedy_soup", g)
        soup = greedy_soup(
            group,
            [member_entries[i].final.metrics["val_acc"] for i in g],
            labels_val,
            executor,
            name=name,
            bn_batches=options.bn_batches,
            device=options.device,
        )
        final_job = soup_job(name, [group[j] for j in soup.ingredients])
        build.weight(
            soup.result,
            final_job,
            "greedy_soup",
            fingerprint,
            _source_components(final_job),
            notes=[
                "Wortsman et al. 2022: tried "
                + ", ".join(
                    f"{h['member']} (val {100 * h['val_acc']:.2f}%, "
                    f"{'kept' if h['accepted'] else 'dropped'})"
                    for h in soup.history
                )
            ],
        )


def _source_components(job: WeightJob) -> list[dict]:
    # Source labels are "<key>/<kind>/<index>" (soups.source_of).
    out = []
    for s in job.sources:
        key, kind, index = s.label.rsplit("/", 2)
        out.append({"member": key, "kind": kind, "index": int(index), "weight": s.weight})
    return out


def _run(executor: Executor, jobs: list[WeightJob]) -> list[WeightResult]:
    if not jobs:
        return []
    results = list(executor(jobs))
    if len(results) != len(jobs):
        raise AggregateError(f"the executor returned {len(results)} results for {len(jobs)} jobs")
    return results
