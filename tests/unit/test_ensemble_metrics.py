"""Metrics against values computed by hand on a four-sample example."""

import math

import numpy as np
import pytest

from orchestrator.ensemble.metrics import (
    DisagreementAccumulator,
    accuracy,
    brier,
    ece,
    nll,
    pairwise_disagreement,
    reliability_bins,
    summarize,
)

# confidence 0.9 (right, bin 13), 0.65 (wrong, bin 9), 0.7 (right) and 0.72 (wrong) share bin 10.
PROBS = np.array([[0.9, 0.1], [0.35, 0.65], [0.3, 0.7], [0.72, 0.28]])
LABELS = np.array([0, 0, 1, 1])


def test_accuracy_nll_brier_by_hand():
    assert accuracy(PROBS, LABELS) == 0.5
    assert nll(PROBS, LABELS) == pytest.approx(
        -(math.log(0.9) + math.log(0.35) + math.log(0.7) + math.log(0.28)) / 4
    )
    # per sample sum_c (p_c - onehot_c)^2: 0.02, 0.845, 0.18, 1.0368
    assert brier(PROBS, LABELS) == pytest.approx((0.02 + 0.845 + 0.18 + 1.0368) / 4)


def test_ece_by_hand_with_15_bins():
    # 1/4 |1 - 0.9| + 1/4 |0 - 0.65| + 2/4 |0.5 - 0.71| = 0.025 + 0.1625 + 0.105
    assert ece(PROBS, LABELS) == pytest.approx(0.2925)
    bins = reliability_bins(PROBS, LABELS)
    assert len(bins["count"]) == 15 and sum(bins["count"]) == 4
    assert bins["count"][10] == 2 and bins["confidence"][10] == pytest.approx(0.71)
    assert bins["accuracy"][10] == 0.5 and bins["accuracy"][0] is None


def test_perfectly_calibrated_predictions_have_zero_ece():
    probs = np.array([[0.5, 0.5]] * 4)
    assert ece(probs, np.array([0, 1, 0, 1])) == pytest.approx(0.0)


def test_nll_of_a_zero_probability_is_finite():
    assert math.isfinite(nll(np.array([[1.0, 0.0]]), np.array([1])))


def test_summarize_names_every_metric():
    summary = summarize(PROBS, LABELS)
    assert summary == pytest.approx(
        {"acc": 0.5, "nll": nll(PROBS, LABELS), "ece": 0.2925, "brier": brier(PROBS, LABELS)}
    )


def test_pairwise_disagreement_by_hand():
    a, b, c = np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), np.array([1, 1, 1, 0])
    # pairs: ab 1/4, ac 3/4, bc 2/4 -> mean 0.5
    assert pairwise_disagreement([a, b, c]) == pytest.approx(0.5)
    assert pairwise_disagreement([a, a]) == 0.0
    assert pairwise_disagreement([a]) is None


def test_disagreement_takes_logits_and_streams():
    logits = [np.eye(2)[[0, 0, 1, 1]], np.eye(2)[[0, 1, 1, 1]]]  # argmax = the classes above
    acc = DisagreementAccumulator()
    for x in logits:
        acc.add(x)
    assert acc.value() == pytest.approx(0.25)
