"""Cross-modal retrieval over embedded splits: R@k in both directions (one metric,
:func:`pipelines.evaluation.metrics.retrieval_recall`, for evaluation, training validation, continual
learning and unlearning verification) and the modality gap, on the studies that have both views."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from pipelines.evaluation import metrics as M
from pipelines.evaluation.embeddings import SplitEmbeddings


def parse_pair(pair: str | tuple[str, str]) -> tuple[str, str]:
    """``"a:b"`` or ``(a, b)`` -> ``(a, b)``."""
    if isinstance(pair, str):
        a, sep, b = pair.partition(":")
        if not sep or not a.strip() or not b.strip():
            raise ValueError(f"a view pair is written a:b, got {pair!r}")
        return a.strip(), b.strip()
    a, b = pair
    return a, b


def both_present(split: SplitEmbeddings, a: str, b: str) -> np.ndarray:
    """Rows that have both views (all False when the split lacks one of them)."""
    if a not in split.embeddings or b not in split.embeddings:
        return np.zeros(len(split.keys), dtype=bool)
    return split.present[a] & split.present[b]


def retrieval_and_gap(
    split: SplitEmbeddings, pairs: Sequence[str | tuple[str, str]]
) -> tuple[dict[str, float], list[dict], list[dict]]:
    """Retrieval metrics (MLflow names) and report rows, over studies that have both views."""
    metrics: dict[str, float] = {}
    retrieval_rows, gap_rows = [], []
    for pair in pairs:
        a, b = parse_pair(pair)
        both = both_present(split, a, b)
        if both.sum() < 2:
            continue
        ea, eb = split.embeddings[a][both], split.embeddings[b][both]
        scores = M.retrieval_both_directions(ea, eb, a, b)
        metrics.update(scores)
        for src, dst in ((a, b), (b, a)):
            retrieval_rows.append(
                {
                    "query": src,
                    "target": dst,
                    "n": int(both.sum()),
                    **{f"R@{k}": scores[f"r@{k}.{src}->{dst}"] for k in (1, 5, 10)},
                    "chance R@1": scores[f"chance_r@1.{a}-{b}"],
                }
            )
        gap = M.modality_gap(ea, eb)
        metrics.update({f"gap.{k}.{a}-{b}": v for k, v in gap.items()})
        gap_rows.append({"pair": f"{a} / {b}", **gap})
    return metrics, retrieval_rows, gap_rows


def mean_r_at_1(split: SplitEmbeddings, pairs: Sequence[str | tuple[str, str]]) -> float:
    """Mean R@1 over the pairs (both directions), on studies having both views; NaN if none has."""
    values = []
    for pair in pairs:
        a, b = parse_pair(pair)
        both = both_present(split, a, b)
        if both.sum() < 2:
            continue
        scores = M.retrieval_both_directions(
            split.embeddings[a][both], split.embeddings[b][both], a, b, ks=(1,)
        )
        values += [scores[f"r@1.{a}->{b}"], scores[f"r@1.{b}->{a}"]]
    return float(np.mean(values)) if values else math.nan


def study_top1_hits(
    split: SplitEmbeddings, rows: np.ndarray, pairs: Sequence[str | tuple[str, str]]
) -> np.ndarray:
    """Per study of ``rows``: mean top-1 retrieval hit over the pairs and both directions it has; NaN
    where it has no pair. The gallery is every study of the split with the pair (not only ``rows``), so
    chance is 1/N of the whole split and a subset's score does not depend on how small it is."""
    hits = np.full((len(rows), 2 * len(pairs)), np.nan)
    for p, pair in enumerate(pairs):
        a, b = parse_pair(pair)
        both = both_present(split, a, b)
        if both.sum() < 2:
            continue
        ea, eb = split.embeddings[a][both], split.embeddings[b][both]
        per_study = np.full((both.size, 2), np.nan)
        per_study[both, 0] = M.retrieval_hits(ea, eb, k=1)
        per_study[both, 1] = M.retrieval_hits(eb, ea, k=1)
        hits[:, 2 * p : 2 * p + 2] = per_study[rows]
    with np.errstate(all="ignore"):
        return np.nanmean(hits, axis=1) if hits.shape[1] else np.full(len(rows), np.nan)
