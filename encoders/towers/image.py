"""Chest X-ray tower: a ViT (Dosovitskiy et al. 2021) or a ResNet (He et al. 2016) from transformers.

Built from the config's sizes (random init) or loaded from a local directory of pretrained weights;
``TowerConfig.image_arch`` picks the family.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import PreTrainedModel, ResNetConfig, ResNetModel, ViTConfig, ViTModel

from encoders.towers.base import Tower

# google/vit-* image processors normalise [0, 1] pixels with mean = std = 0.5 per channel; a
# from-scratch ResNet uses the same (its first batch norm makes the choice nearly irrelevant).
DEFAULT_IMAGE_MEAN = (0.5, 0.5, 0.5)
DEFAULT_IMAGE_STD = (0.5, 0.5, 0.5)

# transformers' model_type of each image_arch, checked against a pretrained directory's config.json.
_MODEL_TYPES = {"vit": "vit", "resnet": "resnet"}


def _normalisation_from(source: str | Path | None) -> tuple[list[float], list[float]]:
    """Mean/std from a pretrained dir's ``preprocessor_config.json``, else the ViT default."""
    if source is not None:
        processor = Path(source) / "preprocessor_config.json"
        if processor.is_file():
            values = json.loads(processor.read_text())
            if "image_mean" in values and "image_std" in values:
                return list(values["image_mean"]), list(values["image_std"])
    return list(DEFAULT_IMAGE_MEAN), list(DEFAULT_IMAGE_STD)


def _check_model_type(source: str | Path, arch: str) -> None:
    """Refuse a local pretrained directory of another family than ``image_arch`` (hub ids are not checked)."""
    config_file = Path(source) / "config.json"
    if not config_file.is_file():
        return
    model_type = json.loads(config_file.read_text()).get("model_type")
    if model_type is not None and model_type != _MODEL_TYPES[arch]:
        raise ValueError(
            f"image tower: {source} holds a {model_type!r} model but image_arch is {arch!r}; "
            f"set image_arch to match the pretrained weights"
        )


class ImageTower(Tower):
    """Encodes ``pixels`` FloatTensor[B, 1 or 3, H, W] with values in [0, 1] (grey X-rays have 1 channel).

    The tower repeats grey images to 3 channels (pretrained ViTs and ResNets expect RGB) and applies
    its own mean/std, so callers pass the [0, 1] range from preprocessing. Inputs of another size than
    ``image_size_px`` are accepted: the ViT interpolates its position embeddings, the ResNet is
    convolutional and ends in a global average pool.
    """

    def build_backbone(self, source: str | Path | None) -> PreTrainedModel:
        cfg = self.config
        mean, std = _normalisation_from(source)
        self.register_buffer("pixel_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        if source is not None:
            _check_model_type(source, cfg.image_arch)
        if cfg.image_arch == "resnet":
            return self._build_resnet(source)
        if cfg.image_arch != "vit":
            raise ValueError(f"unknown image_arch {cfg.image_arch!r}; expected 'vit' or 'resnet'")
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

    def _build_resnet(self, source: str | Path | None) -> ResNetModel:
        cfg = self.config
        if source is not None:
            model = ResNetModel.from_pretrained(str(source))
        else:
            model = ResNetModel(
                ResNetConfig(
                    num_channels=3,
                    embedding_size=cfg.resnet_embedding_size,
                    hidden_sizes=list(cfg.resnet_hidden_sizes),
                    depths=list(cfg.resnet_depths),
                    layer_type=cfg.resnet_layer_type,
                )
            )
        # Tower and the projection head read the feature width from config.hidden_size; a ResNet's
        # pooled features are as wide as its last stage.
        model.config.hidden_size = int(model.config.hidden_sizes[-1])
        return model

    def forward(self, pixels: torch.Tensor, **_: object) -> torch.Tensor:
        if pixels.ndim != 4 or pixels.shape[1] not in (1, 3):
            raise ValueError(f"expected images of shape [B, 1 or 3, H, W], got {tuple(pixels.shape)}")
        if pixels.shape[1] == 1:
            pixels = pixels.expand(-1, 3, -1, -1)
        pixels = (pixels - self.pixel_mean.to(pixels.dtype)) / self.pixel_std.to(pixels.dtype)
        if self.config.image_arch == "resnet":
            # Global average pool over the last stage's feature map: [B, C, 1, 1] -> [B, C].
            return self.backbone(pixel_values=pixels).pooler_output.flatten(1)
        size = self.base_model.config.image_size
        interpolate = tuple(pixels.shape[-2:]) != (size, size)
        hidden = self.backbone(pixel_values=pixels, interpolate_pos_encoding=interpolate).last_hidden_state
        if self.config.pooling == "cls":
            return hidden[:, 0]
        # Mean over patch tokens, leaving out CLS (the global pooling of MAE, He et al. 2022).
        return hidden[:, 1:].mean(dim=1)
