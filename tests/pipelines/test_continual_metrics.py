"""Forgetting metrics (Lopez-Paz & Ranzato 2017) on hand-made matrices, and their bootstrap CIs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipelines.continual_methods.metrics import (
    average_accuracy,
    backward_transfer,
    bootstrap_matrix_metrics,
    forward_transfer,
    macro_auroc,
    paired_bootstrap,
    task_entry,
)
from pipelines.evaluation.metrics import auroc, retrieval_hits

# R[i, j]: performance on task j after training on tasks 0..i.
R = np.array(
    [
        [0.8, 0.3, 0.2],
        [0.6, 0.9, 0.25],
        [0.5, 0.7, 0.95],
    ]
)
BASELINE = [0.1, 0.2, 0.15]


def test_average_accuracy_is_the_mean_of_the_last_row() -> None:
    assert average_accuracy(R) == pytest.approx((0.5 + 0.7 + 0.95) / 3)


def test_backward_transfer_averages_final_minus_just_learned() -> None:
    # ((0.5 - 0.8) + (0.7 - 0.9)) / 2
    assert backward_transfer(R) == pytest.approx(-0.25)
    assert backward_transfer(np.triu(np.ones((3, 3))) + np.tril(np.ones((3, 3)), -1)) == pytest.approx(0.0)


def test_forward_transfer_compares_before_learning_with_the_baseline() -> None:
    # ((R[0,1] - b1) + (R[1,2] - b2)) / 2 = ((0.3 - 0.2) + (0.25 - 0.15)) / 2
    assert forward_transfer(R, BASELINE) == pytest.approx(0.1)


def test_single_task_has_no_transfer() -> None:
    assert math.isnan(backward_transfer(np.array([[0.7]])))
    assert math.isnan(forward_transfer(np.array([[0.7]]), [0.1]))


def test_top1_retrieval_hits_score_ties_as_random_tie_breaking() -> None:
    q = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    c = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert retrieval_hits(q, c, k=1).tolist() == [1.0, 0.5, 0.5]
    assert retrieval_hits(q, c[::-1], k=1)[0] == 0.0


def test_bootstrap_point_estimates_equal_the_matrix_formulas_and_ci_brackets_them() -> None:
    rng = np.random.default_rng(0)
    scores = [[rng.binomial(1, R[i, j], size=40).astype(float) for j in range(3)] for i in range(3)]
    baseline = [rng.binomial(1, b, size=40).astype(float) for b in BASELINE]
    stats = bootstrap_matrix_metrics(scores, baseline, n_resamples=300, seed=1)
    matrix = np.array([[s.mean() for s in row] for row in scores])
    assert stats["bwt"][0] == pytest.approx(backward_transfer(matrix))
    assert stats["fwt"][0] == pytest.approx(forward_transfer(matrix, [b.mean() for b in baseline]))
    assert stats["acc"][0] == pytest.approx(average_accuracy(matrix))
    for point, low, high in stats.values():
        assert low <= point <= high and high - low > 0


def test_no_forgetting_gives_a_zero_width_bwt_interval() -> None:
    same = np.array([1.0, 0.0, 1.0, 1.0])
    scores = [[same, same], [same, same]]
    point, low, high = bootstrap_matrix_metrics(scores, None, n_resamples=50)["bwt"]
    assert point == low == high == 0.0


def test_paired_bootstrap_of_a_difference_is_zero_for_identical_models() -> None:
    x = np.random.default_rng(0).normal(size=30)
    assert paired_bootstrap(lambda idx: x[idx].mean() - x[idx].mean(), 30, 100) == (0.0, 0.0, 0.0)
    point, low, high = paired_bootstrap(lambda idx: x[idx].mean(), 30, 200)
    assert low < point < high


def test_macro_auroc_averages_findings_with_both_classes_and_ignores_unknown_targets() -> None:
    targets = np.array([[1, 1, 1], [1, 0, 1], [0, np.nan, 1], [0, 0, 1], [np.nan, 1, 1]], dtype=float)
    scores = np.array([[0.9, 0.2, 0.5], [0.8, 0.9, 0.1], [0.1, 0.5, 0.3], [0.3, 0.1, 0.2], [0.0, 0.7, 0.9]])
    # Column 0: perfect on its 4 known rows; column 1: AUROC of [.2,.9,.1,.7] vs [1,0,0,1]; column 2 has
    # a single class and is left out (as make evaluate leaves it out of the macro average).
    expected = (1.0 + auroc(np.array([1, 0, 0, 1]) == 1, np.array([0.2, 0.9, 0.1, 0.7]))) / 2
    assert macro_auroc(targets, scores) == pytest.approx(expected)
    assert math.isnan(macro_auroc(targets[:, 2:], scores[:, 2:]))
    assert task_entry(np.array([1.0, 0.0, 1.0])) == pytest.approx(2 / 3)
    assert task_entry(scores, targets) == macro_auroc(targets, scores)


def test_bootstrap_with_targets_uses_auroc_entries_paired_across_rows() -> None:
    rng = np.random.default_rng(3)
    targets = [rng.integers(0, 2, size=(30, 2)).astype(float) for _ in range(2)]
    noise = [[rng.normal(size=(30, 2)) for _ in range(2)] for _ in range(2)]
    # Row i knows task j well when j <= i (signal + noise), not at all otherwise.
    scores = [[targets[j] * (2.0 if j <= i else 0.0) + noise[i][j] for j in range(2)] for i in range(2)]
    baseline = [rng.normal(size=(30, 2)) for _ in range(2)]
    stats = bootstrap_matrix_metrics(scores, baseline, n_resamples=200, seed=0, targets=targets)
    matrix = np.array([[macro_auroc(targets[j], scores[i][j]) for j in range(2)] for i in range(2)])
    assert stats["bwt"][0] == pytest.approx(backward_transfer(matrix))
    assert stats["acc"][0] == pytest.approx(average_accuracy(matrix))
    base = [macro_auroc(targets[j], baseline[j]) for j in range(2)]
    assert stats["fwt"][0] == pytest.approx(forward_transfer(matrix, base))
    # Same model state in every row: no forgetting, and pairing makes the interval exactly zero.
    same = [[scores[1][j] for j in range(2)] for _ in range(2)]
    assert bootstrap_matrix_metrics(same, None, n_resamples=50, targets=targets)["bwt"] == (0.0, 0.0, 0.0)
