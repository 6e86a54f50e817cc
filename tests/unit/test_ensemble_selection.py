"""Greedy ensemble selection with replacement picks the right models on a constructed case."""

import numpy as np
import pytest

from orchestrator.ensemble.selection import greedy_selection

LABELS = np.array([0, 0, 1, 1])


def candidate(p_true):
    """(4, 2) probabilities giving p_true[i] to the true class of sample i."""
    p = np.asarray(p_true, dtype=np.float64)
    probs = np.empty((4, 2))
    probs[np.arange(4), LABELS] = p
    probs[np.arange(4), 1 - LABELS] = 1 - p
    return probs


# A is right on the first half, B on the second, C is a mediocre all-rounder (the best single
# model by NLL: 0.478 vs 0.511), D is bad everywhere.
A = candidate([0.9, 0.9, 0.4, 0.4])
B = candidate([0.4, 0.4, 0.9, 0.9])
C = candidate([0.62] * 4)
D = candidate([0.2] * 4)


def test_greedy_picks_complementary_models_and_never_the_bad_one():
    result = greedy_selection([A, B, C, D], LABELS)
    # step 1: C (best single); step 2: C+A (0.474, A before B on the tie);
    # step 3: C+A+B (p = 0.64 everywhere, 0.446); step 4: nothing improves -> stop.
    assert [s["candidate"] for s in result.history] == [2, 0, 1]
    assert result.counts == [1, 1, 1, 0]
    assert result.history[-1]["val_nll"] == pytest.approx(-np.log(0.64))
    nlls = [s["val_nll"] for s in result.history]
    assert nlls == sorted(nlls, reverse=True)


def test_with_replacement_a_strong_model_can_be_picked_twice():
    strong = candidate([0.99, 0.99, 0.99, 0.3])
    weak = candidate([0.6, 0.6, 0.6, 0.99])
    # strong 0.309 -> +weak 0.282 -> +strong 0.272 (weights 2:1) -> nothing improves
    result = greedy_selection([strong, weak], LABELS, max_size=10)
    assert result.counts == [2, 1]


def test_max_size_and_init():
    assert greedy_selection([A, B, C, D], LABELS, max_size=2).size == 2
    result = greedy_selection([A, B, C, D], LABELS, init=2)
    # sorted initialisation with the two best singles (C, then A on the A/B tie)
    assert [s["candidate"] for s in result.history][:2] == [2, 0]


def test_accuracy_metric_and_errors():
    result = greedy_selection([A, B, C, D], LABELS, metric="acc")
    assert result.counts[3] == 0
    with pytest.raises(ValueError, match="metric"):
        greedy_selection([A], LABELS, metric="f1")
    with pytest.raises(ValueError, match="at least one"):
        greedy_selection([], LABELS)
