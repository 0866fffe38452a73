"""Forgetting metrics of a task sequence, with paired bootstrap CIs. Pure numpy.

``R[i, j]`` is the performance on task j's test split after training on tasks 0..i (Lopez-Paz &
Ranzato 2017, "Gradient Episodic Memory for Continual Learning", Sec. 5); ``b[j]`` the performance of a
reference model that has seen none of them (GEM uses random initialisation; here also the starting
model, row "start"). With T tasks:

- average accuracy  ACC = 1/T sum_j R[T-1, j]
- backward transfer BWT = 1/(T-1) sum_{j<T-1} (R[T-1, j] - R[j, j])   (negative = forgetting)
- forward transfer  FWT = 1/(T-1) sum_{j>0} (R[j-1, j] - b[j])

Every entry of R is a statistic of per-sample scores of task j's test studies: their mean (e.g. top-1
retrieval hits) or, given the studies' binary targets, the macro AUROC of the scores (zero-shot
classification of the task's findings, :func:`macro_auroc`). The bootstrap resamples task j's test
studies once per replicate and applies the same indices to every row i: the CI of BWT keeps the pairing
between "just learned" and "at the end".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from pipelines.evaluation.metrics import auroc


def average_accuracy(matrix: np.ndarray) -> float:
    r = np.asarray(matrix, dtype=float)
    return float(r[-1].mean())


def backward_transfer(matrix: np.ndarray) -> float:
    r = np.asarray(matrix, dtype=float)
    t = r.shape[0]
    if t < 2:
        return math.nan
    return float(np.mean([r[t - 1, j] - r[j, j] for j in range(t - 1)]))


def forward_transfer(matrix: np.ndarray, baseline: Sequence[float]) -> float:
    r = np.asarray(matrix, dtype=float)
    b = np.asarray(baseline, dtype=float)
    t = r.shape[0]
    if t < 2:
        return math.nan
    return float(np.mean([r[j - 1, j] - b[j] for j in range(1, t)]))


def macro_auroc(targets: np.ndarray, scores: np.ndarray) -> float:
    """Unweighted mean over columns (findings) of the AUROC of ``scores[:, c]`` against the binary
    ``targets[:, c]`` on the rows where the target is known (not NaN); columns with a single class are
    left out, as in :func:`pipelines.evaluation.metrics.evaluate_classification`. NaN if none is left."""
    y = np.asarray(targets, dtype=float).reshape(len(targets), -1)
    s = np.asarray(scores, dtype=float).reshape(len(scores), -1)
    values = []
    for c in range(y.shape[1]):
        known = np.isfinite(y[:, c])
        value = auroc(y[known, c] == 1, s[known, c]) if known.any() else math.nan
        if not math.isnan(value):
            values.append(value)
    return float(np.mean(values)) if values else math.nan


def task_entry(scores: np.ndarray, targets: np.ndarray | None = None) -> float:
    """One entry of R from per-sample scores: their mean, or their macro AUROC against ``targets``."""
    if targets is None:
        return float(np.mean(scores)) if len(scores) else math.nan
    return macro_auroc(targets, scores)


def bootstrap_matrix_metrics(
    scores: Sequence[Sequence[np.ndarray]],
    baseline: Sequence[np.ndarray] | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    targets: Sequence[np.ndarray] | None = None,
) -> dict[str, tuple[float, float, float]]:
    """``{"acc"|"bwt"|"fwt": (point, low, high)}`` from per-sample scores.

    ``scores[i][j]`` [n_j] (or [n_j, L_j]): per-sample score of task j's test samples after task i
    (same sample order in every row); ``baseline[j]`` the reference model's. Without ``targets`` an
    entry of R is the mean score; with ``targets[j]`` [n_j, L_j] (1/0, NaN = unknown) it is the macro
    AUROC (:func:`task_entry`). Percentile bootstrap (Efron & Tibshirani 1993, ch. 13), resampling each
    task's samples independently, paired across rows; replicates with a NaN statistic are skipped.
    """
    t = len(scores)
    sizes = [len(scores[0][j]) for j in range(t)]
    stacked = [np.stack([np.asarray(scores[i][j], dtype=float) for i in range(t)]) for j in range(t)]
    base = [np.asarray(baseline[j], dtype=float) for j in range(t)] if baseline is not None else None
    goal = [np.asarray(targets[j], dtype=float) for j in range(t)] if targets is not None else [None] * t

    def entry(values: np.ndarray, j: int, idx: np.ndarray) -> float:
        return task_entry(values[idx], None if goal[j] is None else goal[j][idx])

    def summarise(columns: list[np.ndarray], base_means: list[float] | None) -> dict[str, float]:
        matrix = np.stack(columns, axis=1)  # columns[j] = R[:, j]
        out = {"acc": average_accuracy(matrix), "bwt": backward_transfer(matrix)}
        if base_means is not None:
            out["fwt"] = forward_transfer(matrix, base_means)
        return out

    def entries(idx: list[np.ndarray]) -> tuple[list[np.ndarray], list[float] | None]:
        columns = [np.array([entry(stacked[j][i], j, idx[j]) for i in range(t)]) for j in range(t)]
        base_entries = [entry(base[j], j, idx[j]) for j in range(t)] if base is not None else None
        return columns, base_entries

    point = summarise(*entries([np.arange(n) for n in sizes]))
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {k: [] for k in point}
    for _ in range(n_resamples):
        idx = [rng.integers(0, n, size=n) for n in sizes]
        for k, v in summarise(*entries(idx)).items():
            draws[k].append(v)
    alpha = (1 - confidence) / 2
    out = {}
    for k, v in point.items():
        values = np.asarray(draws[k])
        values = values[np.isfinite(values)]
        low, high = np.quantile(values, [alpha, 1 - alpha]) if values.size >= 2 else (math.nan, math.nan)
        out[k] = (v, float(low), float(high))
    return out


def paired_bootstrap(
    statistic: Callable[[np.ndarray], float],
    n: int,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """``(point, low, high)`` of ``statistic(indices)`` over resampled sample indices ``[0, n)``: the
    caller's statistic uses the same indices for both models it compares (e.g. zero-shot AUROC of the
    starting and the final model on the same resampled studies). NaN replicates are skipped."""
    point = float(statistic(np.arange(n)))
    rng = np.random.default_rng(seed)
    values = np.array([statistic(rng.integers(0, n, size=n)) for _ in range(n_resamples)], dtype=float)
    values = values[np.isfinite(values)]
    if values.size < 2:
        return point, math.nan, math.nan
    alpha = (1 - confidence) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return point, float(low), float(high)
