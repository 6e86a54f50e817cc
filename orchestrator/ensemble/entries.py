"""Report entries of ensembles: metrics, gains over the single members, size curves, costs.

`EntryBuilder` turns an ensemble's probabilities into an `EnsembleEntry` (and its reliability
bins); `prediction` streams a prediction ensemble's components once, `weight` checks and
measures the result of a weight job. Gains are test accuracy points (x100) over the best /
the mean single member.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from orchestrator.ensemble.candidates import Inputs, measure, reliability
from orchestrator.ensemble.combine import Accumulator, softmax
from orchestrator.ensemble.errors import AggregateError
from orchestrator.ensemble.metrics import DisagreementAccumulator, accuracy
from orchestrator.ensemble.report import EnsembleEntry
from orchestrator.ensemble.weight_jobs import WeightJob, WeightResult


def skip(name: str, family: str, reason: str) -> dict[str, str]:
    """An entry of the report's `skipped`: an ensemble not built, and why."""
    return {"name": name, "family": family, "reason": reason}


@dataclass
class EntryBuilder:
    inputs: Inputs
    best_single: float
    mean_single: float
    entries: list[EnsembleEntry] = field(default_factory=list)
    reliability: dict[str, dict] = field(default_factory=dict)  # entry name -> bins

    def add(
        self,
        *,
        name: str,
        family: str,
        method: str,
        kind: str,
        components: list[dict],
        probs_val: np.ndarray,
        probs_test: np.ndarray,
        disagreement: float | None = None,
        size_curve: dict | None = None,
        notes: Iterable[str] = (),
    ) -> EnsembleEntry:
        metrics = measure(probs_val, probs_test, self.inputs)
        acc = metrics["test_acc"]
        members = list(dict.fromkeys(c["member"] for c in components))
        entry = EnsembleEntry(
            name=name,
            family=family,
            method=method,
            kind=kind,
            members=members,
            components=components,
            metrics=metrics,
            gain_over_best_single=round(100 * (acc - self.best_single), 10),
            gain_over_mean_single=round(100 * (acc - self.mean_single), 10),
            disagreement=disagreement,
            size_curve=size_curve,
            cost={
                "models_at_test_time": len(components) if kind == "prediction" else 1,
                "members_trained": len(members),
            },
            notes=list(notes),
        )
        self.entries.append(entry)
        self.reliability[name] = reliability(probs_test, self.inputs, metrics)
        return entry

    def prediction(
        self,
        *,
        name: str,
        family: str,
        picks: list[int],
        order: str,
        methods: Sequence[str] = ("mean_softmax",),
        method_suffix: bool = False,
        notes: Iterable[str] = (),
    ) -> list[EnsembleEntry]:
        """Ensembles of candidates `picks` (in curve order; repeats = weight), streamed once.

        One component's logits are in memory at a time; val/test accumulators hold every
        requested combiner, and test accuracy is read after each pick for the size curve.
        """
        inputs = self.inputs
        acc_val, acc_test = Accumulator(methods), Accumulator(methods)
        diversity = DisagreementAccumulator()
        seen: set[int] = set()
        curves: dict[str, list[float]] = {m: [] for m in methods}
        labels_test = inputs.labels["test"]
        for c in picks:
            acc_val.add(inputs.cand_logits(c, "val"))
            test_logits = inputs.cand_logits(c, "test")
            acc_test.add(test_logits)
            if c not in seen:  # diversity of distinct models; repeats are weights, not models
                diversity.add(test_logits)
                seen.add(c)
            for m in methods:
                curves[m].append(accuracy(acc_test.probs(m), labels_test))
        counts: dict[int, int] = {}
        for c in picks:
            counts[c] = counts.get(c, 0) + 1
        components = [
            {
                "member": inputs.members[inputs.candidates[c].member].key,
                "kind": inputs.candidates[c].ref.kind,
                "index": inputs.candidates[c].ref.index,
                "weight": float(w),
            }
            for c, w in counts.items()
        ]
        entries = []
        for m in methods:
            entries.append(
                self.add(
                    name=f"{name}/{m}" if method_suffix or len(methods) > 1 else name,
                    family=family,
                    method=m,
                    kind="prediction",
                    components=components,
                    probs_val=acc_val.probs(m),
                    probs_test=acc_test.probs(m),
                    disagreement=diversity.value(),
                    size_curve={
                        "order": order,
                        "sizes": list(range(1, len(picks) + 1)),
                        "test_acc": curves[m],
                    },
                    notes=notes,
                )
            )
        return entries

    def weight(
        self,
        result: WeightResult,
        job: WeightJob,
        family: str,
        fingerprint: str,
        components: list[dict],
        notes: Iterable[str] = (),
    ) -> EnsembleEntry:
        if result.data_fingerprint != fingerprint:
            raise AggregateError(
                f"weight job {job.name} evaluated on data {result.data_fingerprint[:12]}, but "
                f"the members were trained on {fingerprint[:12]} (data spec/dir differs on "
                "the executor?)"
            )
        probs = {}
        for split in ("val", "test"):
            logits = np.asarray(result.logits.get(split))
            expected = self.inputs.expected_shape(split)
            if logits.shape != expected:
                raise AggregateError(
                    f"weight job {job.name}: {split} logits shape {logits.shape}, expected "
                    f"{expected}"
                )
            probs[split] = softmax(logits)
        recal = "BN recalibrated on training data" if result.bn_recalibrated else "no BatchNorm"
        return self.add(
            name=job.name,
            family=family,
            method="weight_average",
            kind="weight",
            components=components,
            probs_val=probs["val"],
            probs_test=probs["test"],
            notes=[*job.notes, *notes, recal],
        )
