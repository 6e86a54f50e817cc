"""Greedy ensemble selection with replacement (Caruana et al. 2004), on the validation split.

    ensemble = [] (or the `init` best candidates: Caruana's sorted initialisation)
    repeat up to max_size times:
        for every candidate c (with replacement: already chosen ones too):
            score(c) = metric of mean_softmax(ensemble + [c]) on the validation split
        stop if the best score does not improve on the current ensemble's
        add the best candidate (lowest index on ties)
    return how often each candidate was chosen (its weight in a weighted mean of softmax)

Only validation probabilities are seen here: the test split is only reported, never used to
choose. With replacement, a strong candidate can be picked several times, which lets the
procedure weight members without a separate weight fit, and makes overfitting to the
validation split slower than without replacement (Caruana et al.).

Memory: candidates are given as a sequence of (N_val, classes) probabilities; pass a lazy
sequence (`__len__` + `__getitem__` that loads) when they do not fit in memory; the running
sum is one (N_val, classes) float64 array.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from orchestrator.ensemble.metrics import EPS

METRICS = ("nll", "acc")


@dataclass
class SelectionResult:
    counts: list[int]  # per candidate: times chosen (0 = not in the ensemble)
    history: list[dict] = field(default_factory=list)  # per step: candidate, val_nll, val_acc
    metric: str = "nll"

    @property
    def size(self) -> int:
        return int(sum(self.counts))

    @property
    def chosen(self) -> list[int]:
        """Candidates in the order they were first picked."""
        order: list[int] = []
        for step in self.history:
            if step["candidate"] not in order:
                order.append(step["candidate"])
        return order


def best_first(indices: Iterable[int], scores: Sequence[float]) -> list[int]:
    """`indices` by `scores[i]` (e.g. validation accuracy), best first; ties: lower index first."""
    return sorted(indices, key=lambda i: (-scores[i], i))


def _nll(true_sum: np.ndarray, n: int) -> float:
    """Val NLL of a mean of `n` members whose true-class probabilities sum to true_sum (N,)."""
    return float(-np.log(np.clip(true_sum / n, EPS, None)).mean())


def _key(metric: str, nll: float, acc: float) -> tuple[float, float]:
    # Lower is better. Accuracy has many ties on a small validation split: break them by NLL.
    return (nll, -acc) if metric == "nll" else (-acc, nll)


def greedy_selection(
    val_probs: Sequence[np.ndarray],
    labels: np.ndarray,
    *,
    metric: str = "nll",
    max_size: int = 25,
    init: int = 0,
) -> SelectionResult:
    """Greedy selection with replacement over `val_probs` (each (N_val, classes) probabilities).

    metric: "nll" (default; smooth, rarely ties) or "acc" (ties broken by NLL).
    max_size: most picks (counting repeats). init: start from the `init` best single
    candidates by `metric` (0 and 1 behave the same: the first greedy step picks the best
    single candidate). Stops early when no candidate improves the metric strictly.

    Cost: NLL only needs each candidate's true-class probabilities (N_val,), kept for all
    candidates (8 bytes x N_val each), so an NLL step is O(candidates x N_val); full
    (N_val, classes) probabilities are read for accuracy (metric "acc", NLL ties, history).
    """
    if metric not in METRICS:
        raise ValueError(f"selection metric {metric!r}: choose from {METRICS}")
    if not len(val_probs):
        raise ValueError("greedy selection needs at least one candidate")
    if max_size < 1:
        raise ValueError("max_size must be >= 1")
    labels = np.asarray(labels)
    rows = np.arange(len(labels))
    candidates = range(len(val_probs))
    # (N_val,) true-class probability of every candidate: one read of each candidate.
    true_p = [np.asarray(val_probs[c], dtype=np.float64)[rows, labels] for c in candidates]
    counts = [0] * len(val_probs)
    history: list[dict] = []
    total: np.ndarray | None = None  # (N_val, classes) float64 sum of chosen probabilities
    total_true = np.zeros(len(labels))  # (N_val,) its true-class column

    def acc_with(c: int) -> float:
        p = np.asarray(val_probs[c], dtype=np.float64)
        summed = p if total is None else total + p
        return float((summed.argmax(axis=1) == labels).mean())

    def best_step() -> tuple[tuple[float, float], int, float, float]:
        n = sum(counts) + 1
        nlls = [_nll(total_true + true_p[c], n) for c in candidates]
        if metric == "nll":
            lowest = min(nlls)
            tied = [c for c in candidates if nlls[c] == lowest]  # accuracy breaks exact ties
        else:
            tied = list(candidates)
        scored = [(_key(metric, nlls[c], acc_with(c)), c) for c in tied]
        key, c = min(scored)  # lowest index on full ties
        return key, c, nlls[c], -key[1] if metric == "nll" else -key[0]

    def add(c: int, nll: float, acc: float) -> None:
        nonlocal total, total_true
        p = np.asarray(val_probs[c], dtype=np.float64)
        total = p.copy() if total is None else total + p
        total_true = total_true + true_p[c]
        counts[c] += 1
        history.append({"candidate": c, "val_nll": nll, "val_acc": acc})

    if init > 1:
        # Caruana's sorted initialisation: the best singles, each added once.
        singles = sorted((_key(metric, _nll(true_p[c], 1), acc_with(c)), c) for c in candidates)
        for _, c in singles[: min(init, max_size)]:
            n = sum(counts) + 1
            add(c, _nll(total_true + true_p[c], n), acc_with(c))

    current = _key(metric, history[-1]["val_nll"], history[-1]["val_acc"]) if history else None
    while sum(counts) < max_size:
        key, c, nll, acc = best_step()
        if current is not None and not key < current:
            break  # no candidate improves the validation metric
        add(c, nll, acc)
        current = key
    return SelectionResult(counts=counts, history=history, metric=metric)
