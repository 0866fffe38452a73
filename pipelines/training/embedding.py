"""Encoding batches of studies: the per-view encoder DDP wraps, device moves, and embedding a whole
dataset for validation and evaluation."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from encoders import MultimodalModel
from pipelines.data import registry
from pipelines.data.dataset import StudyDataset, ViewSpec, collate_studies
from pipelines.training.precision import autocast_context


def max_speech_samples(data_root: str, max_speech_s: float) -> int:
    """``max_speech_s`` in samples at the rate the processed speech is stored at (modality registry)."""
    return int(max_speech_s * (registry.sample_rate_hz("speech", data_root) or 0))


class ViewEncoder(nn.Module):
    """Encodes every view of a batch with its tower: the unit DDP wraps (DDP hooks ``forward``)."""

    def __init__(self, model: MultimodalModel, views: dict[str, ViewSpec]) -> None:
        super().__init__()
        self.model = model
        self.views = views

    def forward(self, batch: dict[str, Any]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Features per view, and the logit scale: returned from ``forward`` so that DDP all-reduces its
        gradient like any other parameter's (used only inside the loss, it would otherwise diverge)."""
        features = {}
        for view, spec in self.views.items():
            inputs = batch.get(view)
            if inputs is None:
                continue
            # The view's modality says what its tower needs (ECG lead mask, speech lengths, image size).
            tower_cfg = self.model.config.towers[spec.tower]
            inputs, kwargs = registry.view_kind(spec).tower_inputs(view, batch, tower_cfg)
            features[view] = self.model.encode(spec.tower, inputs, **kwargs)
        return features, self.model.logit_scale * 1.0


def move_batch(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    def move(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return value.to(device, non_blocking=True)
        if isinstance(value, dict):
            return {k: move(v) for k, v in value.items()}
        return value

    return {k: move(v) for k, v in batch.items()}


@torch.no_grad()
def embed_dataset(
    model: MultimodalModel,
    dataset: StudyDataset,
    views: dict[str, ViewSpec],
    batch_size: int,
    device: torch.device,
    precision: str = "fp32",
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Embeddings ``[N, D]`` per view in dataset order, and presence masks ``[N]``."""
    model.eval()
    encoder = ViewEncoder(model, views)
    feats: dict[str, list[torch.Tensor]] = {v: [] for v in views}
    present: dict[str, list[torch.Tensor]] = {v: [] for v in views}
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(len(dataset), start + batch_size))]
        batch = move_batch(collate_studies(items, dataset.views), device)
        with autocast_context(device, precision):
            out, _ = encoder(batch)
        for view in views:
            n = len(items)
            feats[view].append(
                out[view].float().cpu() if view in out else torch.zeros(n, model.config.embed_dim)
            )
            present[view].append(batch["present"][view].cpu())
    return (
        {v: torch.cat(x) for v, x in feats.items()},
        {v: torch.cat(x) for v, x in present.items()},
    )
