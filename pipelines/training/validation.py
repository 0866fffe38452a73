"""Validation during training: pair retrieval R@1/R@5 on the validation split (picks the best checkpoint)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from encoders import MultimodalModel
from pipelines.data.dataset import StudyDataset
from pipelines.evaluation.metrics import retrieval_both_directions
from pipelines.training.config import TrainConfig
from pipelines.training.embedding import embed_dataset


def _pair_texts(dataset: StudyDataset, cfg: TrainConfig, pair: Any, rows: np.ndarray) -> np.ndarray | None:
    """The texts of a pair's text side on ``rows`` (None when neither side is text)."""
    for view in (pair.b, pair.a):
        spec = cfg.views[view]
        if spec.is_text:
            return dataset.labels(view, [spec.column])[spec.column].fillna("").astype(str).to_numpy()[rows]
    return None


def validate(
    model: MultimodalModel,
    dataset: StudyDataset,
    cfg: TrainConfig,
    device: torch.device,
) -> dict[str, float]:
    feats, present = embed_dataset(model, dataset, cfg.views, cfg.eval_batch_size, device, cfg.precision)
    metrics: dict[str, float] = {}
    r1 = []
    for pair in cfg.objective.pairs:
        both = present[pair.a] & present[pair.b]
        n = int(both.sum())
        if n < 2:
            continue
        scores = retrieval_both_directions(
            feats[pair.a][both].numpy(),
            feats[pair.b][both].numpy(),
            pair.a,
            pair.b,
            ks=(1, 5),
            groups=_pair_texts(dataset, cfg, pair, both.numpy()) if cfg.val_distinct_texts else None,
        )
        metrics.update({f"val.{name}": value for name, value in scores.items()})
        metrics[f"val.n.{pair.a}-{pair.b}"] = float(n)
        r1.extend([scores[f"r@1.{pair.a}->{pair.b}"], scores[f"r@1.{pair.b}->{pair.a}"]])
    metrics["val.mean_r@1"] = float(np.mean(r1)) if r1 else 0.0
    model.train()
    return metrics
