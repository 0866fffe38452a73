"""The frozen pretrained-side text features that give CWCL its weights."""

from __future__ import annotations

from typing import Any

import torch

from encoders import MultimodalModel
from pipelines.data.dataset import StudyDataset
from pipelines.training.config import TrainConfig


class ReferenceCache:
    """Frozen pretrained-side text features for the CWCL weights, computed once per distinct text.

    The reference side never changes during training (LoRA adapters disabled, or a frozen copy), so
    its features are a function of the text alone: caching them removes a text-tower forward per
    view and step. With ``center=True`` the features are centred on the mean over the texts seen
    at construction before the weights are formed: sentence embeddings are anisotropic (reports
    written from one template sit at cosine ~0.6-0.8 to each other), which makes
    ``w_ij = (1 + cos) / 2`` nearly uniform; centring keeps the formula and restores its contrast.
    """

    def __init__(
        self,
        model: MultimodalModel,
        view_towers: dict[str, str],
        texts: dict[str, list[str]],
        center: bool,
        batch_size: int = 64,
    ) -> None:
        self.model = model
        self.view_towers = view_towers
        self.features: dict[str, dict[str, torch.Tensor]] = {view: {} for view in view_towers}
        self.means: dict[str, torch.Tensor | None] = dict.fromkeys(view_towers)
        for view, view_texts in texts.items():
            self._encode(view, sorted(set(view_texts)), batch_size)
            if center and self.features[view]:
                self.means[view] = torch.stack(list(self.features[view].values())).mean(dim=0)

    @torch.no_grad()
    def _encode(self, view: str, texts: list[str], batch_size: int) -> None:
        missing = [t for t in texts if t not in self.features[view]]
        for start in range(0, len(missing), batch_size):
            chunk = missing[start : start + batch_size]
            encoded = self.model.reference_text_features(chunk, tower=self.view_towers[view]).float().cpu()
            self.features[view].update(zip(chunk, encoded, strict=True))

    def __call__(self, batch: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
        refs = {}
        for view in self.view_towers:
            texts = batch.get(view)
            if texts is None:
                continue
            self._encode(view, list(texts), batch_size=len(texts))
            ref = torch.stack([self.features[view][t] for t in texts])
            if self.means[view] is not None:
                ref = ref - self.means[view]
            refs[view] = ref.to(device)
        return refs


def build_reference_cache(
    model: MultimodalModel, cfg: TrainConfig, dataset: StudyDataset
) -> ReferenceCache | None:
    """The CWCL reference cache over the training texts of every ``weights_from`` view (None for CLIP/DCL)."""
    views = sorted({p.weights_from for p in cfg.objective.pairs if p.weights_from})
    if cfg.objective.kind != "cwcl" or not views:
        return None
    view_towers = {view: cfg.views[view].tower for view in views}
    texts = {view: dataset.texts(view) for view in views}
    return ReferenceCache(model, view_towers, texts, center=cfg.objective.center_reference)
