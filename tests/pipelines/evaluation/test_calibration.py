"""Specification of reliability bins, ECE and temperature scaling."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.evaluation.calibration import (
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    reliability_bins,
)


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
