"""Metrics of class probabilities (N, classes) against integer labels (N,).

All take probabilities, not logits, so single models (softmax of logits) and ensembles
(combined probabilities) are measured the same way.
"""

from __future__ import annotations

import numpy as np

# Probabilities are clipped before the log so a confidently wrong vote-share ensemble
# (probability exactly 0) gives a large but finite NLL.
EPS = 1e-12


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


def ece(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error with `bins` equal-width confidence bins (Guo et al. 2017).

    ECE = sum_b |B_b|/N * |acc(B_b) - conf(B_b)|, confidence = max probability; a bin holds
    confidences in (lo, hi], the first bin also holds 0.
    """
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    # digitize with right=True puts c in bin b where edges[b-1] < c <= edges[b].
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            total += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(total)
