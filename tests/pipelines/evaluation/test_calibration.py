"""Specification of reliability bins, ECE and temperature scaling."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.evaluation.calibration import (
    T_MAX,
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    fit_temperature_bias,
    reliability_bins,
)
from pipelines.evaluation.metrics import auroc


def test_reliability_bins_count_every_sample_once_with_the_right_means():
    p = np.array([0.05, 0.15, 0.15, 0.95, 1.0])
    y = np.array([0, 0, 1, 1, 1])
    bins = reliability_bins(y, p, n_bins=10)
    assert bins.count.sum() == 5 and bins.count[0] == 1 and bins.count[1] == 2 and bins.count[9] == 2
    assert bins.confidence[1] == pytest.approx(0.15) and bins.frequency[1] == pytest.approx(0.5)
    assert np.isnan(bins.frequency[5])


def test_ece_matches_the_definition_by_hand():
    p = np.array([0.1, 0.1, 0.9, 0.9])
    y = np.array([0, 1, 1, 1])
    # bin 1: conf 0.1, freq 0.5 -> 0.4 * 2/4; bin 9: conf 0.9, freq 1.0 -> 0.1 * 2/4
    assert expected_calibration_error(y, p) == pytest.approx(0.25)


def test_perfectly_calibrated_sampling_has_small_ece():
    rng = np.random.default_rng(0)
    p = rng.uniform(size=20000)
    y = rng.uniform(size=p.size) < p
    assert expected_calibration_error(y, p, 10) < 0.02


def test_fitted_temperature_recovers_the_generating_temperature():
    rng = np.random.default_rng(1)
    true_logits = rng.normal(0, 2, 4000)
    y = rng.uniform(size=true_logits.size) < 1 / (1 + np.exp(-true_logits))
    overconfident = true_logits * 3.0
    assert fit_temperature(overconfident, y) == pytest.approx(3.0, rel=0.1)


def test_multiclass_temperature_improves_calibration():
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 1.5, (3000, 4))
    prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = np.array([rng.choice(4, p=row) for row in prob])
    t = fit_temperature(logits * 4.0, y)
    assert t == pytest.approx(4.0, rel=0.15)
    assert apply_temperature(logits * 4.0, t).sum(1) == pytest.approx(np.ones(3000))


def test_temperature_is_one_when_there_is_a_single_class():
    assert fit_temperature(np.array([0.3, 1.0]), np.array([1, 1])) == 1.0


def test_probabilities_outside_unit_interval_are_rejected():
    with pytest.raises(ValueError, match="\\[0, 1\\]"):
        reliability_bins([1, 0], [0.5, 1.2])


def test_temperature_and_bias_recover_an_overconfident_offset_logit():
    rng = np.random.default_rng(3)
    true_logits = rng.normal(-1.0, 2.0, 6000)
    y = rng.uniform(size=true_logits.size) < 1 / (1 + np.exp(-true_logits))
    # a pair logit that is 3x overconfident and shifted by +2: sigmoid(z / 3 + b) with b = -2 / 3
    t, b = fit_temperature_bias(3.0 * true_logits + 2.0, y)
    assert t == pytest.approx(3.0, rel=0.1)
    assert b == pytest.approx(-2.0 / 3.0, abs=0.1)


def test_an_offset_that_temperature_alone_must_flatten_is_removed_by_the_bias():
    """A weak but real signal on top of a constant offset (every sample scored P > 0.5): temperature
    scaling can only shrink the offset by shrinking the signal; the bias removes it and keeps the slope."""
    rng = np.random.default_rng(4)
    signal = rng.normal(0.0, 1.0, 4000)
    y = rng.uniform(size=signal.size) < 1 / (1 + np.exp(-(signal - 1.5)))
    z = signal + 4.0
    t_only = fit_temperature(z, y)
    t, b = fit_temperature_bias(z, y)
    assert t == pytest.approx(1.0, rel=0.1) and b == pytest.approx(-5.5, abs=0.3)
    assert t_only > 3.0
    nll = lambda p: -np.mean(np.where(y, np.log(p), np.log(1 - p)))  # noqa: E731
    assert nll(apply_temperature(z, t, b)) < nll(apply_temperature(z, t_only)) - 0.05


def test_logits_that_rank_validation_below_chance_end_at_the_prevalence_never_reversed():
    """Calibration never flips a ranking: an inverted logit gets the largest temperature and a bias
    that predicts the validation prevalence for every sample."""
    rng = np.random.default_rng(5)
    z = rng.normal(0.1, 0.05, 400)
    y = (rng.uniform(size=400) < np.where(z < 0.1, 0.35, 0.05)).astype(float)  # higher z, fewer positives
    assert auroc(y, z) < 0.5
    t, b = fit_temperature_bias(z, y)
    assert t == T_MAX
    p = apply_temperature(z, t, b)
    assert p == pytest.approx(np.full(400, y.mean()), abs=0.01)
    assert np.all(np.diff(p[np.argsort(z)]) >= 0)


def test_temperature_and_bias_are_neutral_when_there_is_a_single_class():
    assert fit_temperature_bias(np.array([0.3, 1.0]), np.array([0, 0])) == (1.0, 0.0)


def test_a_bias_is_refused_for_a_softmax():
    with pytest.raises(ValueError, match="binary"):
        apply_temperature(np.zeros((2, 3)), 1.0, bias=0.5)
