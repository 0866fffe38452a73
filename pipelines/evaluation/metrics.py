"""Zero-shot evaluation metrics: per-finding classification with bootstrap CIs, retrieval, modality gap,
linear probe. Pure functions: arrays in, numbers out.

Label convention (docs/data-layout.md, reports manifest): ``1`` positive, ``0`` negative, ``-1``
uncertain, empty/NaN not mentioned. Uncertain labels are always excluded from the binary metrics and
counted separately; "not mentioned" follows ``missing`` (default ``"exclude"``; ``"negative"`` is the
CheXpert-style convention and must be asked for explicitly). Nothing is ever silently made negative.

AUROC and average precision are computed here in numpy (rank formulas, vectorised over bootstrap
resamples would not fit sklearn's API); tests check both against ``sklearn.metrics`` exactly.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from scipy.stats import rankdata

MissingPolicy = Literal["exclude", "negative"]
ThresholdMethod = Literal["f1", "youden"]
TieMode = Literal["expected", "optimistic", "pessimistic"]


# --------------------------------------------------------------------------- labels


@dataclasses.dataclass(frozen=True)
class LabelCounts:
    """How many samples a finding has in each label state (after the missing policy)."""

    positive: int
    negative: int
    uncertain: int
    missing: int

    @property
    def evaluable(self) -> int:
        return self.positive + self.negative


def binarise_labels(
    labels: Sequence[float | int | None] | np.ndarray, missing: MissingPolicy = "exclude"
) -> tuple[np.ndarray, np.ndarray, LabelCounts]:
    """Raw labels (1 / 0 / -1 / NaN / None) -> (``y`` int 0/1, ``keep`` bool mask, counts).

    ``y`` is only meaningful where ``keep``. Values other than 1, 0, -1 and NaN/None raise
    ``ValueError``: a label vocabulary mismatch must not turn into negatives.
    """
    raw = np.array(
        [np.nan if v is None else v for v in np.asarray(labels, dtype=object).ravel()], dtype=float
    )
    is_missing = np.isnan(raw)
    known = raw[~is_missing]
    bad = set(np.unique(known)) - {1.0, 0.0, -1.0}
    if bad:
        raise ValueError(f"labels must be 1, 0, -1 or empty; found {sorted(float(b) for b in bad)}")
    is_uncertain = raw == -1
    y = (raw == 1).astype(int)
    keep = ~is_uncertain & ~is_missing
    if missing == "negative":
        keep = keep | is_missing
    elif missing != "exclude":
        raise ValueError(f"missing policy must be 'exclude' or 'negative', got {missing!r}")
    counts = LabelCounts(
        positive=int((y[keep] == 1).sum()),
        negative=int((y[keep] == 0).sum()),
        uncertain=int(is_uncertain.sum()),
        missing=int(is_missing.sum()),
    )
    return y, keep, counts


# --------------------------------------------------------------------------- binary metrics


def auroc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Area under the ROC curve via the Mann-Whitney U statistic with mid-ranks for ties
    (Hanley & McNeil 1982): ``(sum of positive ranks - n_pos (n_pos + 1) / 2) / (n_pos n_neg)``.
    NaN when only one class is present."""
    y_true = np.asarray(y_true).astype(bool)
    n_pos = int(y_true.sum())
    n_neg = y_true.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(np.asarray(y_score, dtype=float))
    return float((ranks[y_true].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Area under the precision-recall curve as sklearn's step-wise average precision:
    ``AP = sum_n (R_n - R_{n-1}) P_n`` over distinct score thresholds (tied scores form one step)."""
    y_true = np.asarray(y_true).astype(bool)
    n_pos = int(y_true.sum())
    if n_pos == 0 or n_pos == y_true.size:
        return math.nan
    order = np.argsort(-np.asarray(y_score, dtype=float), kind="mergesort")
    scores = np.asarray(y_score, dtype=float)[order]
    hits = y_true[order]
    tp = np.cumsum(hits)
    # the last index of each run of tied scores is where a threshold actually sits
    last = np.r_[np.nonzero(np.diff(scores))[0], scores.size - 1]
    tp_at = tp[last]
    precision = tp_at / (last + 1)
    recall = tp_at / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def confusion_at(y_true: np.ndarray, y_score: np.ndarray, threshold: float) -> dict[str, int]:
    """Counts with the rule ``predict positive iff score >= threshold``."""
    y_true = np.asarray(y_true).astype(bool)
    pred = np.asarray(y_score, dtype=float) >= threshold
    return {
        "tp": int((pred & y_true).sum()),
        "fp": int((pred & ~y_true).sum()),
        "fn": int((~pred & y_true).sum()),
        "tn": int((~pred & ~y_true).sum()),
    }


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den else math.nan


def f1_from_counts(c: Mapping[str, int]) -> float:
    return _ratio(2 * c["tp"], 2 * c["tp"] + c["fp"] + c["fn"])


def choose_threshold(y_true: np.ndarray, y_score: np.ndarray, method: ThresholdMethod = "f1") -> float:
    """Operating point chosen on the *validation* split and then frozen for the test split.

    ``"f1"`` maximises F1 (the harmonic mean of precision and sensitivity: appropriate when positives
    are rare and false alarms and misses both matter); ``"youden"`` maximises Youden's J =
    sensitivity + specificity - 1 (Youden 1950), the ROC point farthest above the chance diagonal.
    Candidates are the distinct observed scores; ties between candidates go to the higher threshold
    (fewer positive calls). Returns 0.5 when the split has only one class (no information).
    """
    y_true = np.asarray(y_true).astype(bool)
    y_score = np.asarray(y_score, dtype=float)
    n_pos = int(y_true.sum())
    n_neg = y_true.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return 0.5
    candidates = np.unique(y_score)[::-1]
    order = np.argsort(-y_score, kind="mergesort")
    sorted_scores, hits = y_score[order], y_true[order]
    tp_cum, fp_cum = np.cumsum(hits), np.cumsum(~hits)
    # number of samples with score >= candidate, for each (descending) candidate
    n_at = np.searchsorted(-sorted_scores, -candidates, side="right")
    tp = tp_cum[n_at - 1]
    fp = fp_cum[n_at - 1]
    if method == "f1":
        objective = 2 * tp / (2 * tp + fp + (n_pos - tp))
    elif method == "youden":
        objective = tp / n_pos - fp / n_neg
    else:
        raise ValueError(f"threshold method must be 'f1' or 'youden', got {method!r}")
    return float(candidates[int(np.argmax(objective))])


def binary_metrics(y_true: np.ndarray, y_score: np.ndarray, threshold: float) -> dict[str, float]:
    """AUROC, AUPRC, and F1 / sensitivity / specificity / precision at ``threshold``."""
    c = confusion_at(y_true, y_score, threshold)
    return {
        "auroc": auroc(y_true, y_score),
        "auprc": average_precision(y_true, y_score),
        "f1": f1_from_counts(c),
        "sensitivity": _ratio(c["tp"], c["tp"] + c["fn"]),
        "specificity": _ratio(c["tn"], c["tn"] + c["fp"]),
        "precision": _ratio(c["tp"], c["tp"] + c["fp"]),
    }


# --------------------------------------------------------------------------- bootstrap

CLASS_STATS = ("auroc", "auprc", "f1", "sensitivity", "specificity")


def _resample_indices(
    y_true: np.ndarray, n_resamples: int, rng: np.random.Generator, stratified: bool
) -> np.ndarray:
    n = y_true.size
    if not stratified:
        return rng.integers(0, n, size=(n_resamples, n))
    pos, neg = np.flatnonzero(y_true), np.flatnonzero(~y_true)
    parts = []
    for group in (pos, neg):
        if group.size:
            parts.append(group[rng.integers(0, group.size, size=(n_resamples, group.size))])
    return np.concatenate(parts, axis=1)


def bootstrap_ci(
    y_true: np.ndarray,
    y_score: np.ndarray,
    threshold: float = 0.5,
    n_resamples: int = 500,
    seed: int = 0,
    stratified: bool = True,
    confidence: float = 0.95,
) -> tuple[dict[str, tuple[float, float]], int]:
    """Percentile bootstrap CIs (Efron & Tibshirani 1993, ch. 13) of every ``binary_metrics`` statistic.

    Stratified resampling keeps the class counts of the sample (so every resample is evaluable for
    AUROC); plain resampling draws rows, and resamples with a single class are skipped. Returns
    ``({stat: (low, high)}, n_used)``; NaNs when fewer than 2 resamples were usable.
    """
    y_true = np.asarray(y_true).astype(bool)
    y_score = np.asarray(y_score, dtype=float)
    stats = (*CLASS_STATS, "precision")
    nan_ci = {s: (math.nan, math.nan) for s in stats}
    if y_true.size == 0 or n_resamples <= 0:
        return nan_ci, 0
    rng = np.random.default_rng(seed)
    values: dict[str, list[float]] = {s: [] for s in stats}
    used = 0
    for idx in _resample_indices(y_true, n_resamples, rng, stratified):
        yt = y_true[idx]
        if yt.all() or not yt.any():
            continue
        used += 1
        for stat, value in binary_metrics(yt, y_score[idx], threshold).items():
            values[stat].append(value)
    if used < 2:
        return nan_ci, used
    alpha = (1 - confidence) / 2
    out = {}
    for stat, v in values.items():
        finite = np.asarray(v)[~np.isnan(v)]
        out[stat] = (
            (float(np.quantile(finite, alpha)), float(np.quantile(finite, 1 - alpha)))
            if finite.size >= 2
            else (math.nan, math.nan)
        )
    return out, used


def accuracy_ci(
    correct: np.ndarray, n_resamples: int = 1000, seed: int = 0, confidence: float = 0.95
) -> tuple[float, float, float]:
    """Accuracy and its percentile bootstrap CI over samples (Efron & Tibshirani 1993, ch. 13):
    ``(accuracy, low, high)``; NaNs for an empty sample, a point CI when ``n_resamples`` is 0."""
    correct = np.asarray(correct, dtype=float)
    if correct.size == 0:
        return math.nan, math.nan, math.nan
    acc = float(correct.mean())
    if n_resamples <= 0:
        return acc, acc, acc
    rng = np.random.default_rng(seed)
    means = correct[rng.integers(0, correct.size, size=(n_resamples, correct.size))].mean(axis=1)
    alpha = (1 - confidence) / 2
    return acc, float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """``[n_classes, n_classes]`` counts, rows = true class index, columns = predicted."""
    out = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(out, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return out


# --------------------------------------------------------------------------- per-finding report


@dataclasses.dataclass
class ClassResult:
    """One finding: counts, the validation-chosen threshold, point estimates and 95% CIs."""

    label: str
    counts: LabelCounts
    threshold: float
    metrics: dict[str, float]
    ci: dict[str, tuple[float, float]]


@dataclasses.dataclass
class ClassificationResult:
    per_class: dict[str, ClassResult]
    macro: dict[str, float]
    macro_ci: dict[str, tuple[float, float]]
    micro: dict[str, float]
    threshold_method: str
    n_resamples: int
    n_resamples_used_macro: int


def _macro(per_class: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    out = {}
    for stat in CLASS_STATS:
        values = [m[stat] for m in per_class.values() if not math.isnan(m[stat])]
        out[stat] = float(np.mean(values)) if values else math.nan
    return out


def evaluate_classification(
    test_labels: Mapping[str, np.ndarray],
    test_scores: Mapping[str, np.ndarray],
    val_labels: Mapping[str, np.ndarray] | None = None,
    val_scores: Mapping[str, np.ndarray] | None = None,
    threshold_method: ThresholdMethod = "f1",
    missing: MissingPolicy = "exclude",
    n_resamples: int = 500,
    seed: int = 0,
    stratified: bool = True,
    min_per_class: int = 1,
) -> ClassificationResult:
    """Per-finding zero-shot metrics on the test split, threshold chosen on validation.

    ``*_labels[label]`` are raw labels (1/0/-1/NaN) aligned with ``*_scores[label]`` (probabilities or
    any monotone score). Findings without at least ``min_per_class`` positives *and* negatives on
    test get NaN metrics (they are still listed with their counts). Without validation data the
    threshold is 0.5 (the pair-softmax decision point) and the result says so in
    ``threshold_method``.

    Macro averages are the unweighted mean over evaluable findings; their CI comes from a joint
    bootstrap over test *samples* (the same resampled rows for every finding, so correlation
    between findings is kept; stratification is not defined for multi-label rows, so this one is
    plain, skipping resamples in which an evaluable finding loses a class). Micro averages pool
    every (sample, finding) pair: AUROC/AUPRC on the pooled scores, F1/sensitivity/specificity from
    the summed confusion counts at each finding's own threshold.
    """
    per_class: dict[str, ClassResult] = {}
    prepared: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    method_used = threshold_method if val_labels is not None and val_scores is not None else "fixed-0.5"
    for i, label in enumerate(test_labels):
        y, keep, counts = binarise_labels(test_labels[label], missing)
        scores = np.asarray(test_scores[label], dtype=float)
        if scores.shape != y.shape:
            raise ValueError(f"{label}: {scores.size} scores for {y.size} labels")
        threshold = 0.5
        if method_used != "fixed-0.5" and label in val_labels and label in val_scores:
            vy, vkeep, _ = binarise_labels(val_labels[label], missing)
            threshold = choose_threshold(
                vy[vkeep], np.asarray(val_scores[label], dtype=float)[vkeep], threshold_method
            )
        evaluable = counts.positive >= min_per_class and counts.negative >= min_per_class
        yk, sk = y[keep].astype(bool), scores[keep]
        if evaluable:
            metrics = binary_metrics(yk, sk, threshold)
            ci, _ = bootstrap_ci(yk, sk, threshold, n_resamples, seed + 1009 * i, stratified)
            prepared[label] = (yk, sk, np.flatnonzero(keep))
        else:
            metrics = {s: math.nan for s in (*CLASS_STATS, "precision")}
            ci = {s: (math.nan, math.nan) for s in CLASS_STATS}
        per_class[label] = ClassResult(label, counts, threshold, metrics, ci)

    macro = _macro({k: v.metrics for k, v in per_class.items()})
    macro_ci, used = _macro_bootstrap(prepared, per_class, n_resamples, seed)
    micro = _micro(prepared, per_class)
    return ClassificationResult(per_class, macro, macro_ci, micro, method_used, n_resamples, used)


def _macro_bootstrap(
    prepared: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    per_class: Mapping[str, ClassResult],
    n_resamples: int,
    seed: int,
) -> tuple[dict[str, tuple[float, float]], int]:
    nan_ci = {s: (math.nan, math.nan) for s in CLASS_STATS}
    if not prepared or n_resamples <= 0:
        return nan_ci, 0
    n_rows = 1 + max(int(rows.max()) for _, _, rows in prepared.values() if rows.size)
    # Per finding: row index -> position in that finding's evaluable arrays (-1 where excluded).
    position = {}
    for label, (_, _, rows) in prepared.items():
        pos = np.full(n_rows, -1)
        pos[rows] = np.arange(rows.size)
        position[label] = pos
    rng = np.random.default_rng(seed + 7)
    samples: dict[str, list[float]] = {s: [] for s in CLASS_STATS}
    for _ in range(n_resamples):
        idx = rng.integers(0, n_rows, size=n_rows)
        per_resample = {}
        for label, (y, s, _) in prepared.items():
            p = position[label][idx]
            p = p[p >= 0]
            yt = y[p]
            if yt.all() or not yt.any():
                break
            per_resample[label] = binary_metrics(yt, s[p], per_class[label].threshold)
        else:
            for stat, value in _macro(per_resample).items():
                samples[stat].append(value)
    used = len(samples["auroc"])
    if used < 2:
        return nan_ci, used
    return {s: tuple(float(q) for q in np.nanquantile(v, [0.025, 0.975])) for s, v in samples.items()}, used


def _micro(
    prepared: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]], per_class: Mapping[str, ClassResult]
) -> dict[str, float]:
    if not prepared:
        return {s: math.nan for s in CLASS_STATS}
    y = np.concatenate([v[0] for v in prepared.values()])
    s = np.concatenate([v[1] for v in prepared.values()])
    total = {"tp": 0, "fp": 0, "fn": 0, "tn": 0}
    for label, (yl, sl, _) in prepared.items():
        for k, v in confusion_at(yl, sl, per_class[label].threshold).items():
            total[k] += v
    return {
        "auroc": auroc(y, s),
        "auprc": average_precision(y, s),
        "f1": f1_from_counts(total),
        "sensitivity": _ratio(total["tp"], total["tp"] + total["fn"]),
        "specificity": _ratio(total["tn"], total["tn"] + total["fp"]),
    }


def roc_points(y_true: np.ndarray, y_score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) at every distinct threshold, for plotting."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(np.asarray(y_true).astype(int), np.asarray(y_score, dtype=float))
    return fpr, tpr


# --------------------------------------------------------------------------- retrieval


def _rank_counts(
    queries: np.ndarray, candidates: np.ndarray, groups: Sequence[Any] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Per query: how many candidates score strictly better than its true match, and how many others tie."""
    q = np.asarray(queries, dtype=np.float64)
    c = np.asarray(candidates, dtype=np.float64)
    if q.shape != c.shape or q.ndim != 2:
        raise ValueError(f"paired embeddings must have equal [N, D] shapes, got {q.shape} and {c.shape}")
    sims = q @ c.T
    if groups is None:
        target = np.diag(sims)[:, None]
    else:
        codes = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)[1].ravel()
        if codes.size != q.shape[0]:
            raise ValueError(f"{codes.size} groups for {q.shape[0]} pairs")
        sims = np.stack([sims[:, codes == g].max(axis=1) for g in range(int(codes.max()) + 1)], axis=1)
        target = sims[np.arange(q.shape[0]), codes][:, None]
    # float equality up to rounding: a true tie in exact arithmetic can differ in the last bits
    tol = 1e-9 * np.maximum(1.0, np.abs(target))
    better = (sims > target + tol).sum(axis=1)
    tied = (np.abs(sims - target) <= tol).sum(axis=1) - 1
    return better, tied


def _hits(better: np.ndarray, tied: np.ndarray, k: int, ties: TieMode) -> np.ndarray:
    if ties == "expected":
        return np.clip((k - better) / (tied + 1), 0.0, 1.0)
    if ties == "optimistic":
        return (better < k).astype(float)
    if ties == "pessimistic":
        return (better + tied < k).astype(float)
    raise ValueError(f"ties must be expected/optimistic/pessimistic, got {ties!r}")


def retrieval_hits(
    queries: np.ndarray,
    candidates: np.ndarray,
    k: int = 1,
    ties: TieMode = "expected",
    groups: Sequence[Any] | None = None,
) -> np.ndarray:
    """Per query ``i``: the probability that candidate ``i`` is among the top ``k`` (ties as in
    :func:`retrieval_recall`, whose R@k is the mean of these)."""
    better, tied = _rank_counts(queries, candidates, groups)
    return _hits(better, tied, k, ties)


def retrieval_recall(
    queries: np.ndarray,
    candidates: np.ndarray,
    ks: Sequence[int] = (1, 5, 10),
    ties: TieMode = "expected",
    groups: Sequence[Any] | None = None,
) -> dict[str, float]:
    """Recall@k of finding candidate ``i`` for query ``i`` by cosine similarity (rows L2-normalised).

    Ties (several candidates scoring exactly like the true match, e.g. identical report texts or a
    collapsed model) are handled explicitly: with ``s`` candidates strictly better and ``t`` others
    tied, the true match's position is uniform on ``s .. s + t`` under random tie-breaking, so
    ``"expected"`` scores ``P(position < k) = clip((k - s) / (t + 1), 0, 1)``; ``"optimistic"`` uses
    position ``s`` and ``"pessimistic"`` ``s + t``. Also returns the median rank (1-based, expected).

    ``groups`` (one label per pair, e.g. the transcript) makes candidates with the same label one
    candidate scored by its best member: retrieving any "seven" for a "seven" is a hit. Without it, a
    dataset where many pairs share a text caps R@1 at about 1 / (pairs per text) however good the model.
    """
    better, tied = _rank_counts(queries, candidates, groups)
    out = {f"r@{k}": float(_hits(better, tied, k, ties).mean()) for k in ks}
    out["median_rank"] = float(np.median(better + tied / 2 + 1))
    out["n"] = float(len(better))
    return out


def retrieval_both_directions(
    a: np.ndarray,
    b: np.ndarray,
    name_a: str,
    name_b: str,
    ks: Sequence[int] = (1, 5, 10),
    groups: Sequence[Any] | None = None,
) -> dict[str, float]:
    """``r@k.<a>-><b>`` and ``r@k.<b>-><a>`` (the naming logged to MLflow), plus chance level ``k / N``
    (``N`` = distinct groups when ``groups`` is given; see ``retrieval_recall``)."""
    out: dict[str, float] = {}
    for qa, qb, src, dst in ((a, b, name_a, name_b), (b, a, name_b, name_a)):
        scores = retrieval_recall(qa, qb, ks, groups=groups)
        for k in ks:
            out[f"r@{k}.{src}->{dst}"] = scores[f"r@{k}"]
        out[f"median_rank.{src}->{dst}"] = scores["median_rank"]
    n = len(a) if groups is None else len(set(map(str, groups)))
    for k in ks:
        out[f"chance_r@{k}.{name_a}-{name_b}"] = min(1.0, k / n) if n else math.nan
    return out


# --------------------------------------------------------------------------- modality gap


def l2_normalise(x: np.ndarray, axis: int = -1, eps: float = 1e-12) -> np.ndarray:
    """``x / max(||x||, eps)`` along ``axis`` in float64 (zero vectors stay zero): the one normaliser of
    embeddings in evaluation, prompt weighting and unlearning verification."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.clip(np.linalg.norm(x, axis=axis, keepdims=True), eps, None)


def alignment(a: np.ndarray, b: np.ndarray, alpha: float = 2.0) -> float:
    """``E ||f(x) - f(y)||^alpha`` over positive pairs (Wang & Isola 2020, eq. 4; lower is better)."""
    return float(np.mean(np.linalg.norm(l2_normalise(a) - l2_normalise(b), axis=1) ** alpha))


def uniformity(x: np.ndarray, t: float = 2.0) -> float:
    """``log E exp(-t ||f(x) - f(y)||^2)`` over distinct pairs (Wang & Isola 2020, eq. 5; lower is
    more uniform on the sphere)."""
    x = l2_normalise(x)
    n = x.shape[0]
    if n < 2:
        return math.nan
    sq = np.clip(2.0 - 2.0 * (x @ x.T), 0.0, None)
    iu = np.triu_indices(n, k=1)
    values = -t * sq[iu]
    # log-mean-exp, stable
    m = values.max()
    return float(m + np.log(np.mean(np.exp(values - m))))


def modality_gap(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Gap between two modalities' paired embeddings: Euclidean distance between the centroids of
    the normalised embeddings (Liang et al. 2022, "Mind the Gap"), alignment of the pairs and each
    side's uniformity (Wang & Isola 2020)."""
    a, b = l2_normalise(a), l2_normalise(b)
    return {
        "centroid_distance": float(np.linalg.norm(a.mean(axis=0) - b.mean(axis=0))),
        "alignment": alignment(a, b),
        "uniformity_a": uniformity(a),
        "uniformity_b": uniformity(b),
        "mean_pair_cosine": float(np.mean(np.sum(a * b, axis=1))),
    }


# --------------------------------------------------------------------------- linear probe


def linear_probe(
    train_x: np.ndarray,
    train_labels: Mapping[str, np.ndarray],
    test_x: np.ndarray,
    test_labels: Mapping[str, np.ndarray],
    c: float = 1.0,
    missing: MissingPolicy = "exclude",
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Supervised reference: one L2-regularised logistic regression per finding on frozen embeddings
    (train split -> test split; the protocol of Radford et al. 2021, sec. 3.2). Findings lacking
    both classes on either split get NaN. Returns ``{label: {"auroc", "auprc", "n_train", "n_test"}}``.
    """
    from sklearn.linear_model import LogisticRegression

    out = {}
    for label in test_labels:
        ytr, ktr, ctr = binarise_labels(train_labels.get(label, np.full(len(train_x), np.nan)), missing)
        yte, kte, cte = binarise_labels(test_labels[label], missing)
        row = {
            "auroc": math.nan,
            "auprc": math.nan,
            "n_train": float(ctr.evaluable),
            "n_test": float(cte.evaluable),
        }
        if min(ctr.positive, ctr.negative, cte.positive, cte.negative) > 0:
            clf = LogisticRegression(C=c, max_iter=2000, random_state=seed)
            clf.fit(np.asarray(train_x)[ktr], ytr[ktr])
            prob = clf.predict_proba(np.asarray(test_x)[kte])[:, 1]
            row["auroc"] = auroc(yte[kte], prob)
            row["auprc"] = average_precision(yte[kte], prob)
        out[label] = row
    return out


# --------------------------------------------------------------------------- MLflow naming


def classification_metric_names(result: ClassificationResult, prefix: str = "zs") -> dict[str, float]:
    """Flat metrics in the naming shared with the promotion gate: ``zs_auroc_macro``,
    ``zs_auroc_macro_ci_low``/``_ci_high``, ``zs_auroc.<label>`` with ``_ci_low``/``_ci_high``; the same
    for auprc, f1, sensitivity, specificity; ``zs_<stat>_micro``. NaNs are dropped (MLflow stores
    them, but a gate comparing NaN would silently pass or fail)."""
    out: dict[str, float] = {}
    for stat in CLASS_STATS:
        out[f"{prefix}_{stat}_macro"] = result.macro[stat]
        out[f"{prefix}_{stat}_macro_ci_low"], out[f"{prefix}_{stat}_macro_ci_high"] = result.macro_ci[stat]
        out[f"{prefix}_{stat}_micro"] = result.micro[stat]
        for label, res in result.per_class.items():
            key = f"{prefix}_{stat}.{metric_label(label)}"
            out[key] = res.metrics[stat]
            out[f"{key}_ci_low"], out[f"{key}_ci_high"] = res.ci[stat]
    return {k: float(v) for k, v in out.items() if not math.isnan(v)}


def metric_label(label: str) -> str:
    """A finding name as an MLflow metric-name component (MLflow allows ``[\\w\\-. /]``)."""
    return "_".join(str(label).strip().lower().replace("/", " ").split())
