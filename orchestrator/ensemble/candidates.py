"""Step 2 of `aggregate`: measure every stored model of the members, one at a time.

Every snapshot and Polyak model is measured from its cached logits (val and test), one model
in memory at a time. This also reads every logits artifact once, so a missing or malformed
file fails here with the member and the artifact named. The measured models are the
*candidates* the prediction ensembles are built from; `Inputs` gives checked access to their
logits and keeps validation probabilities, within a memory budget, for greedy selection.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from orchestrator.ensemble.combine import softmax
from orchestrator.ensemble.errors import AggregateError
from orchestrator.ensemble.metrics import ECE_BINS, reliability_bins, summarize
from orchestrator.ensemble.records import MemberRecord, SnapshotRef
from orchestrator.ensemble.report import MemberEntry, ModelEntry
from orchestrator.ensemble.validate import read_artifact


@dataclass
class Candidate:
    member: int  # position in the members list
    ref: SnapshotRef
    entry: ModelEntry


class Inputs:
    """Checked access to cached logits, and the validation-probability cache for selection."""

    def __init__(self, members, labels_val, labels_test, budget_mb: float):
        self.members = members
        self.labels = {"val": labels_val, "test": labels_test}
        self.num_classes = members[0].num_classes
        self._val: dict[int, np.ndarray] = {}  # candidate -> float32 (N_val, classes)
        self._budget = budget_mb * 2**20
        self._used = 0
        self.candidates: list[Candidate] = []

    def expected_shape(self, split: str) -> tuple[int, int]:
        """(N_split, classes): the shape of any model's logits on `split`."""
        return (len(self.labels[split]), self.num_classes)

    def logits(self, member: MemberRecord, ref: SnapshotRef, split: str) -> np.ndarray:
        what = f"{ref.kind} {ref.index} logits_{split}"
        logits = np.asarray(
            read_artifact(member, what, ref.location, lambda: ref.load_logits(split))
        )
        expected = self.expected_shape(split)
        if logits.shape != expected:
            raise AggregateError(
                f"member {member.key}: {what} has shape {logits.shape}, expected {expected}"
            )
        if not np.isfinite(logits).all():
            raise AggregateError(
                f"member {member.key}: {what} holds NaN/inf (a diverged model?); "
                "exclude this member"
            )
        return logits

    def cand_logits(self, c: int, split: str) -> np.ndarray:
        cand = self.candidates[c]
        return self.logits(self.members[cand.member], cand.ref, split)

    def keep_val(self, c: int, probs: np.ndarray) -> None:
        if self._used + probs.size * 4 <= self._budget:
            self._val[c] = probs.astype(np.float32)
            self._used += probs.size * 4

    def val_probs(self, c: int) -> np.ndarray:
        if c in self._val:
            return self._val[c]
        return softmax(self.cand_logits(c, "val"))


class ValProbs(Sequence):
    """The candidates' validation probabilities as a lazy sequence (cached within budget)."""

    def __init__(self, inputs: Inputs, indices: list[int]):
        self.inputs, self.indices = inputs, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i):
        return self.inputs.val_probs(self.indices[i])


def measure(probs_val: np.ndarray, probs_test: np.ndarray, inputs: Inputs) -> dict[str, float]:
    """The report's metrics (METRIC_KEYS) of a model or ensemble from its probabilities."""
    val = summarize(probs_val, inputs.labels["val"])
    test = summarize(probs_test, inputs.labels["test"])
    metrics = {f"test_{k}": v for k, v in test.items()}
    return metrics | {f"val_{k}": v for k, v in val.items()}


def reliability(probs_test: np.ndarray, inputs: Inputs, metrics: dict[str, float]) -> dict:
    """Reliability bins on the test split, with the ECE already in `metrics`."""
    bins = reliability_bins(probs_test, inputs.labels["test"], ECE_BINS)
    bins["ece"] = metrics["test_ece"]
    return bins


@dataclass
class Measured:
    inputs: Inputs  # with every candidate, in member order (snapshots, then Polyak)
    members: list[MemberEntry]
    final_of: list[int]  # member -> candidate index of its final snapshot
    polyak_of: dict[int, int]  # member -> candidate index of its Polyak weights (if any)
    single_reliability: dict[int, dict]  # member -> reliability of its final snapshot


def measure_members(
    members: Sequence[MemberRecord],
    labels_val: np.ndarray,
    labels_test: np.ndarray,
    val_cache_mb: float,
) -> Measured:
    """Measure every snapshot and Polyak model (reads every logits artifact once)."""
    inputs = Inputs(members, labels_val, labels_test, val_cache_mb)
    member_entries: list[MemberEntry] = []
    final_of: list[int] = []
    polyak_of: dict[int, int] = {}
    single_reliability: dict[int, dict] = {}
    for i, m in enumerate(members):
        snaps: list[ModelEntry] = []
        polyak_entry = None
        for ref in [*m.snapshots, *([m.polyak] if m.polyak is not None else [])]:
            probs_val = softmax(inputs.logits(m, ref, "val"))
            probs_test = softmax(inputs.logits(m, ref, "test"))
            entry = ModelEntry(
                ref.kind, ref.index, ref.epoch, measure(probs_val, probs_test, inputs)
            )
            c = len(inputs.candidates)
            inputs.candidates.append(Candidate(i, ref, entry))
            inputs.keep_val(c, probs_val)
            if ref.kind == "polyak":
                polyak_entry = entry
                polyak_of[i] = c
            else:
                snaps.append(entry)
            if ref is m.snapshots[-1]:
                final_of.append(c)
                single_reliability[i] = reliability(probs_test, inputs, entry.metrics)
        member_entries.append(
            MemberEntry(m.key, m.member, m.seed, dict(m.values), m.run_id, snaps, polyak_entry)
        )
    return Measured(inputs, member_entries, final_of, polyak_of, single_reliability)
