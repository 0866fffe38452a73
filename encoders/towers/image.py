"""Chest X-ray tower: a ViT (Dosovitskiy et al. 2021) from transformers, from a config or pretrained weights."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import PreTrainedModel, ViTConfig, ViTModel

from encoders.towers.base import Tower

# google/vit-* image processors normalise [0, 1] pixels with mean = std = 0.5 per channel.
DEFAULT_IMAGE_MEAN = (0.5, 0.5, 0.5)
DEFAULT_IMAGE_STD = (0.5, 0.5, 0.5)


def _normalisation_from(source: str | Path | None) -> tuple[list[float], list[float]]:
    """Mean/std from a pretrained dir's ``preprocessor_config.json``, else the ViT default."""
    if source is not None:
        processor = Path(source) / "preprocessor_config.json"
        if processor.is_file():
            values = json.loads(processor.read_text())
            if "image_mean" in values and "image_std" in values:
                return list(values["image_mean"]), list(values["image_std"])
    return list(DEFAULT_IMAGE_MEAN), list(DEFAULT_IMAGE_STD)


class ImageTower(Tower):
    """Encodes ``pixels`` FloatTensor[B, 1 or 3, H, W] with values in [0, 1] (grey X-rays have 1 channel).

    The tower repeats grey images to 3 channels (pretrained ViTs expect RGB) and applies its own
    mean/std, so callers pass the [0, 1] range from preprocessing. Inputs of another size than
    ``image_size_px`` are accepted through interpolated position embeddings.
    """

    def build_backbone(self, source: str | Path | None) -> PreTrainedModel:
        cfg = self.config
        mean, std = _normalisation_from(source)
        self.register_buffer("pixel_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        if source is not None:
            return ViTModel.from_pretrained(
                str(source), add_pooling_layer=False, attn_implementation=cfg.attn_implementation
            )
        config = ViTConfig(
            hidden_size=cfg.hidden_size,
            num_hidden_layers=cfg.num_layers,
            num_attention_heads=cfg.num_heads,
            intermediate_size=cfg.intermediate_size,
            image_size=cfg.image_size_px,
            patch_size=cfg.patch_size,
            num_channels=3,
            hidden_dropout_prob=cfg.dropout,
            attention_probs_dropout_prob=cfg.dropout,
            attn_implementation=cfg.attn_implementation,
        )
        return ViTModel(config, add_pooling_layer=False)

    def forward(self, pixels: torch.Tensor, **_: object) -> torch.Tensor:
        if pixels.ndim != 4 or pixels.shape[1] not in (1, 3):
            raise ValueError(f"expected images of shape [B, 1 or 3, H, W], got {tuple(pixels.shape)}")
        if pixels.shape[1] == 1:
            pixels = pixels.expand(-1, 3, -1, -1)
        pixels = (pixels - self.pixel_mean.to(pixels.dtype)) / self.pixel_std.to(pixels.dtype)
        size = self.base_model.config.image_size
        interpolate = tuple(pixels.shape[-2:]) != (size, size)
        hidden = self.backbone(pixel_values=pixels, interpolate_pos_encoding=interpolate).last_hidden_state
        if self.config.pooling == "cls":
            return hidden[:, 0]
        # Mean over patch tokens, leaving out CLS (the global pooling of MAE, He et al. 2022).
        return hidden[:, 1:].mean(dim=1)
