"""Combining cached predictions of ensemble members (all numpy, float64 accumulation).

Every combiner takes logits of shape (N, classes) per model and returns class probabilities
(N, classes), so metrics treat single models and ensembles alike.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (N, classes) logits, computed stably in float64."""
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def mean_softmax(logits: Iterable[np.ndarray]) -> np.ndarray:
    """Average of the members' softmax probabilities: the standard deep-ensemble combiner."""
    total, count = None, 0
    for member_logits in logits:  # streamed: only one member's logits are held at a time
        probs = softmax(member_logits)
        total = probs if total is None else total + probs
        count += 1
    if count == 0:
        raise ValueError("mean_softmax needs at least one set of logits")
    return total / count


def mean_logits(logits: Iterable[np.ndarray]) -> np.ndarray:
    """Softmax of the averaged logits (a geometric mean of the members' probabilities)."""
    total, count = None, 0
    for member_logits in logits:
        total = member_logits.astype(np.float64) if total is None else total + member_logits
        count += 1
    if count == 0:
        raise ValueError("mean_logits needs at least one set of logits")
    return softmax(total / count)


def majority_vote(logits: Iterable[np.ndarray]) -> np.ndarray:
    """Vote shares per class; ties go to the class with the lowest index (argmax order)."""
    votes, count = None, 0
    for member_logits in logits:
        one_hot = np.eye(member_logits.shape[1])[member_logits.argmax(axis=1)]
        votes = one_hot if votes is None else votes + one_hot
        count += 1
    if count == 0:
        raise ValueError("majority_vote needs at least one set of logits")
    return votes / count
