"""Metrics of class probabilities (N, classes) against integer labels (N,).

All take probabilities, not logits, so single models (softmax of logits) and ensembles
(combined probabilities) are measured the same way. Diversity (pairwise disagreement) is
computed from the members' predicted classes, streamed one member at a time.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

# Probabilities are clipped before the log so a confidently wrong vote-share ensemble
# (probability exactly 0) gives a large but finite NLL.
EPS = 1e-12
ECE_BINS = 15


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    return float((probs.argmax(axis=1) == labels).mean())


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the true class."""
    picked = probs[np.arange(len(labels)), labels]
    return float(-np.log(np.clip(picked, EPS, None)).mean())


def brier(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean over samples of sum_c (p_c - onehot_c)^2 (multi-class Brier score, in [0, 2])."""
    onehot = np.zeros_like(probs, dtype=np.float64)
    onehot[np.arange(len(labels)), labels] = 1.0
    return float(((probs - onehot) ** 2).sum(axis=1).mean())


def _bins(confidence: np.ndarray, correct: np.ndarray, bins: int) -> dict:
    edges = np.linspace(0.0, 1.0, bins + 1)
    # digitize with right=True puts c in bin b where edges[b-1] < c <= edges[b].
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    conf_sum = np.bincount(which, weights=confidence, minlength=bins)
    correct_sum = np.bincount(which, weights=correct.astype(np.float64), minlength=bins)
    return {
        "edges": edges.tolist(),
        "count": [int(n) for n in counts],
        "confidence": [float(c / n) if n else None for c, n in zip(conf_sum, counts, strict=True)],
        "accuracy": [float(a / n) if n else None for a, n in zip(correct_sum, counts, strict=True)],
    }


def _ece(table: dict, n: int) -> float:
    return float(
        sum(
            count / n * abs(acc - conf)
            for count, acc, conf in zip(
                table["count"], table["accuracy"], table["confidence"], strict=True
            )
            if count
        )
    )


def reliability_bins(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> dict:
    """Per confidence bin: sample count, mean confidence and accuracy (None for empty bins).

    Confidence = max probability; `bins` equal-width bins over [0, 1]; a bin holds confidences
    in (lo, hi], the first bin also holds 0. Plain lists, ready for JSON and plotting.
    """
    pred = probs.argmax(axis=1)
    return _bins(probs[np.arange(len(pred)), pred], pred == labels, bins)


def ece(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error with `bins` equal-width confidence bins (Guo et al. 2017).

    ECE = sum_b |B_b|/N * |acc(B_b) - conf(B_b)| (bins as in `reliability_bins`).
    """
    return _ece(reliability_bins(probs, labels, bins), len(labels))


def summarize(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """{"acc", "nll", "ece", "brier"} of probabilities (N, classes) against labels (N,).

    Same values as the single-metric functions; the argmax (slow for narrow rows) is taken once.
    """
    rows = np.arange(len(labels))
    pred = probs.argmax(axis=1)
    correct = pred == labels
    return {
        "acc": float(correct.mean()),
        "nll": nll(probs, labels),
        "ece": _ece(_bins(probs[rows, pred], correct, ECE_BINS), len(labels)),
        "brier": brier(probs, labels),
    }


class DisagreementAccumulator:
    """Mean pairwise disagreement of M members, streamed: one member's predictions at a time.

    Disagreement of a pair = fraction of samples where their argmax classes differ; the result
    is its mean over all M(M-1)/2 pairs. Instead of M^2 comparisons we keep per-sample class
    counts n_ic (N, classes): sample i has sum_c n_ic (n_ic - 1) / 2 agreeing pairs, so
        disagreement = 1 - mean_i [sum_c n_ic (n_ic - 1)] / (M (M - 1)).
    """

    def __init__(self) -> None:
        self._counts: np.ndarray | None = None  # (N, classes) int64
        self.members = 0

    def add(self, predictions: np.ndarray, num_classes: int | None = None) -> None:
        """`predictions`: logits/probabilities (N, classes) or predicted classes (N,)."""
        predictions = np.asarray(predictions)
        if predictions.ndim == 2:
            num_classes = predictions.shape[1]
            predictions = predictions.argmax(axis=1)
        if self._counts is None:
            if num_classes is None:
                num_classes = int(predictions.max()) + 1
            self._counts = np.zeros((len(predictions), num_classes), dtype=np.int64)
        elif len(predictions) != len(self._counts):
            raise ValueError(f"{len(predictions)} predictions, expected {len(self._counts)}")
        if predictions.size and predictions.max() >= self._counts.shape[1]:
            grow = int(predictions.max()) + 1 - self._counts.shape[1]
            self._counts = np.pad(self._counts, ((0, 0), (0, grow)))
        self._counts[np.arange(len(predictions)), predictions] += 1
        self.members += 1

    def value(self) -> float | None:
        """The mean pairwise disagreement, or None with fewer than two members."""
        m = self.members
        if m < 2:
            return None
        agreeing = (self._counts * (self._counts - 1)).sum(axis=1)  # (N,) = 2 * agreeing pairs
        return float(1.0 - agreeing.mean() / (m * (m - 1)))


def pairwise_disagreement(predictions: Iterable[np.ndarray]) -> float | None:
    """Mean pairwise disagreement of members' predictions (each (N, classes) or (N,) classes).

    None with fewer than two members (no pair to compare).
    """
    acc = DisagreementAccumulator()
    for member_predictions in predictions:
        acc.add(member_predictions)
    return acc.value()
