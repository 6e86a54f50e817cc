"""Combiners on hand-built logits with answers computed by hand."""

import math

import numpy as np
import pytest

from orchestrator.ensemble.combine import (
    Accumulator,
    combine,
    majority_vote,
    mean_logits,
    mean_softmax,
    softmax,
)

LN9 = math.log(9.0)
# One sample, two classes. softmax(A) = [0.5, 0.5]; softmax(B) = [0.9, 0.1]; softmax(C) ~ [0, 1].
A = np.array([[0.0, 0.0]], dtype=np.float32)
B = np.array([[LN9, 0.0]], dtype=np.float32)
C = np.array([[0.0, 5.0]], dtype=np.float32)


def test_softmax_is_stable_and_float64():
    probs = softmax(np.array([[1000.0, 1000.0 + math.log(3.0)]], dtype=np.float32))
    assert probs.dtype == np.float64
    assert probs == pytest.approx(np.array([[0.25, 0.75]]), abs=1e-4)


def test_mean_softmax_averages_probabilities():
    assert mean_softmax([A, B]) == pytest.approx(np.array([[0.7, 0.3]]))


def test_mean_logits_is_softmax_of_the_mean():
    # mean logits = [ln 3, 0] -> [0.75, 0.25]
    assert mean_logits([A, B]) == pytest.approx(np.array([[0.75, 0.25]]))


def test_vote_shares_and_ties_go_to_the_lowest_class():
    # A ties (argmax -> class 0), B -> 0, C -> 1.
    assert majority_vote([A, B, C]) == pytest.approx(np.array([[2 / 3, 1 / 3]]))
    assert majority_vote([A]) == pytest.approx(np.array([[1.0, 0.0]]))


def test_weights_act_as_counts():
    # (1 * 0.5 + 3 * 0.9) / 4 = 0.8: the same as listing B three times.
    assert mean_softmax([A, B], weights=[1, 3]) == pytest.approx(np.array([[0.8, 0.2]]))
    assert mean_softmax([A, B], weights=[1, 3]) == pytest.approx(mean_softmax([A, B, B, B]))
    assert majority_vote([A, B, C], weights=[1, 1, 3]) == pytest.approx(np.array([[0.4, 0.6]]))
    assert mean_logits([A, B], weights=[1, 3]) == pytest.approx(mean_logits([A, B, B, B]))


def test_combiners_stream_from_a_generator():
    def members():
        yield from (A, B)  # a generator: combiners never need len() or indexing

    assert combine(members(), "mean_softmax") == pytest.approx(np.array([[0.7, 0.3]]))


def test_accumulator_gives_every_method_from_one_pass():
    acc = Accumulator(("mean_softmax", "mean_logits", "vote"))
    acc.add(A)
    assert acc.probs("mean_softmax") == pytest.approx(np.array([[0.5, 0.5]]))
    acc.add(B)
    assert acc.probs("mean_softmax") == pytest.approx(np.array([[0.7, 0.3]]))
    assert acc.probs("mean_logits") == pytest.approx(np.array([[0.75, 0.25]]))
    assert acc.probs("vote") == pytest.approx(np.array([[1.0, 0.0]]))
    assert acc.count == 2


def test_errors_are_clear():
    with pytest.raises(ValueError, match="at least one"):
        mean_softmax([])
    with pytest.raises(ValueError, match="unknown combiner"):
        Accumulator(("median",))
    with pytest.raises(ValueError, match="shape"):
        mean_softmax([A, np.zeros((2, 2))])
    with pytest.raises(ValueError, match="fewer weights"):
        mean_softmax([A, B], weights=[1.0])
