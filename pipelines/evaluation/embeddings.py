"""Embedded splits: what every measurement of a model (zero-shot, retrieval, membership inference,
forgetting) starts from. Rows are studies (or samples); a view a study lacks is marked absent."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np


@dataclasses.dataclass
class SplitEmbeddings:
    """One split, rows = studies: embeddings ``[N, D]`` and presence ``[N]`` per view, raw labels
    (1/0/-1/NaN) per ``labels_from`` view as ``{view: {label: [N]}}``."""

    keys: list[str]
    embeddings: dict[str, np.ndarray]
    present: dict[str, np.ndarray]
    labels: dict[str, dict[str, np.ndarray]] = dataclasses.field(default_factory=dict)

    def rows(self, rows: np.ndarray) -> SplitEmbeddings:
        """The studies ``rows`` of this split (in that order)."""
        return SplitEmbeddings(
            [self.keys[r] for r in rows],
            {v: e[rows] for v, e in self.embeddings.items()},
            {v: p[rows] for v, p in self.present.items()},
            {view: {c: a[rows] for c, a in columns.items()} for view, columns in self.labels.items()},
        )


def embed_split(
    model: Any,
    dataset: Any,
    views: Mapping[str, Any],
    tasks: Iterable[Any] = (),
    batch_size: int = 64,
    device: Any = "cpu",
    precision: str = "fp32",
) -> SplitEmbeddings:
    """Embeddings per view of every study of ``dataset`` (a ``StudyDataset``) in float64, with the raw
    labels the zero-shot ``tasks`` read (:func:`pipelines.evaluation.tasks.task_labels`)."""
    from pipelines.evaluation.tasks import task_labels
    from pipelines.training.embedding import embed_dataset

    feats, masks = embed_dataset(model, dataset, dict(views), batch_size, device, precision)
    return SplitEmbeddings(
        list(dataset.keys),
        {v: f.numpy().astype(np.float64) for v, f in feats.items()},
        {v: m.numpy().astype(bool) for v, m in masks.items()},
        task_labels(dataset, list(tasks), views),
    )
