"""Combining cached predictions of ensemble members (numpy only, float64 accumulation).

Every combiner takes logits of shape (N, classes) per model and returns class probabilities
(N, classes) float64, so metrics treat single models and ensembles alike.

Streaming: members arrive as an iterable (typically a generator of `SnapshotRef.load_logits`
calls) and only one member's logits are held at a time; the running sums are (N, classes)
float64, i.e. 800 KB for 10,000 images x 10 classes, whatever the number of members.

Weights: every combiner accepts per-member weights (greedy selection with replacement passes
its pick counts). Weights need not sum to one; they are normalised by their sum.

Combiners (`METHODS`):
- mean_softmax: mean_m softmax(z_m)          the deep-ensemble / snapshot-ensemble combiner
- mean_logits:  softmax(mean_m z_m)          a normalised geometric mean of the probabilities
- vote:         share of members whose argmax is each class; ties -> lowest class index
                (np.argmax order). Vote shares are exactly 0 for classes nobody voted for, so
                its NLL is dominated by the metrics' clipping; read its accuracy, not its NLL.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

METHODS = ("mean_softmax", "mean_logits", "vote")


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (N, classes) logits, computed stably in float64."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


class Accumulator:
    """Running weighted sums for several combiners at once, fed one member at a time.

    One pass over the members therefore yields mean_softmax, mean_logits and vote together, and
    `probs(method)` can be read after every `add` (for accuracy-vs-ensemble-size curves).
    """

    def __init__(self, methods: Sequence[str] = ("mean_softmax",)):
        unknown = [m for m in methods if m not in METHODS]
        if unknown or not methods:
            raise ValueError(f"unknown combiner(s) {unknown or methods}; choose from {METHODS}")
        self.methods = tuple(methods)
        self._sums: dict[str, np.ndarray] = {}  # method -> (N, classes) float64
        self.total_weight = 0.0
        self.count = 0

    def add(self, logits: np.ndarray, weight: float = 1.0) -> None:
        """Add one member's logits (N, classes) with `weight` (>= 0)."""
        if weight < 0:
            raise ValueError(f"member weights must be >= 0, got {weight}")
        logits = np.asarray(logits)
        if logits.ndim != 2:
            raise ValueError(f"logits must be (N, classes), got shape {logits.shape}")
        if self._sums:
            expected = next(iter(self._sums.values())).shape
            if logits.shape != expected:
                raise ValueError(f"logits shape {logits.shape} differs from {expected}")
        for method in self.methods:
            if method == "mean_softmax":
                term = softmax(logits)
            elif method == "mean_logits":
                term = logits.astype(np.float64)
            else:  # vote: one-hot of the argmax, without an (N, C) eye() temporary per call
                term = np.zeros(logits.shape, dtype=np.float64)
                term[np.arange(len(logits)), logits.argmax(axis=1)] = 1.0
            if weight != 1.0:
                term *= weight
            if method in self._sums:
                self._sums[method] += term
            else:
                self._sums[method] = term
        self.total_weight += float(weight)
        self.count += 1

    def probs(self, method: str | None = None) -> np.ndarray:
        """Current class probabilities (N, classes) float64 of `method` (default: the first)."""
        method = method or self.methods[0]
        if method not in self._sums:
            if self.count == 0:
                raise ValueError("no members added: an ensemble needs at least one")
            raise ValueError(f"{method} is not accumulated here (methods: {self.methods})")
        if self.total_weight <= 0:
            raise ValueError("the member weights sum to zero")
        mean = self._sums[method] / self.total_weight
        return softmax(mean) if method == "mean_logits" else mean


def combine(
    logits: Iterable[np.ndarray],
    method: str = "mean_softmax",
    weights: Iterable[float] | None = None,
) -> np.ndarray:
    """Probabilities (N, classes) of the ensemble of `logits` (streamed) under `method`."""
    acc = Accumulator((method,))
    weight_iter = iter(weights) if weights is not None else None
    for member_logits in logits:
        weight = 1.0 if weight_iter is None else next(weight_iter, None)
        if weight is None:
            raise ValueError("fewer weights than members")
        acc.add(member_logits, float(weight))
    if acc.count == 0:
        raise ValueError(f"{method} needs at least one set of logits")
    return acc.probs(method)


def mean_softmax(
    logits: Iterable[np.ndarray], weights: Iterable[float] | None = None
) -> np.ndarray:
    """Average of the members' softmax probabilities: the standard deep-ensemble combiner."""
    return combine(logits, "mean_softmax", weights)


def mean_logits(logits: Iterable[np.ndarray], weights: Iterable[float] | None = None) -> np.ndarray:
    """Softmax of the averaged logits (a geometric mean of the members' probabilities)."""
    return combine(logits, "mean_logits", weights)


def majority_vote(
    logits: Iterable[np.ndarray], weights: Iterable[float] | None = None
) -> np.ndarray:
    """(Weighted) vote shares per class; ties go to the lowest class index (argmax order)."""
    return combine(logits, "vote", weights)
