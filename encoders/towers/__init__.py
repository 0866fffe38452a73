"""Encoder towers, one per modality family, each a Hugging Face backbone plus pooling."""

from __future__ import annotations

from pathlib import Path

from encoders.config import TowerConfig
from encoders.towers.audio import AudioTower
from encoders.towers.base import Tower, resolve_source
from encoders.towers.ecg import EcgTower, EcgTransformerConfig, EcgTransformerModel
from encoders.towers.image import ImageTower
from encoders.towers.text import TextTower

TOWER_CLASSES: dict[str, type[Tower]] = {
    "image": ImageTower,
    "ecg": EcgTower,
    "audio": AudioTower,
    "text": TextTower,
}


def build_tower(config: TowerConfig) -> Tower:
    """A tower from its config: pretrained weights when ``config.pretrained`` is set, else random init."""
    if config.kind not in TOWER_CLASSES:
        raise ValueError(f"unknown tower kind {config.kind!r}; expected one of {sorted(TOWER_CLASSES)}")
    return TOWER_CLASSES[config.kind](config, source=config.pretrained)


def load_tower(config: TowerConfig, directory: str | Path) -> Tower:
    """A tower written by :meth:`Tower.save`: its saved base (or the original source) plus any adapter."""
    source, adapter = resolve_source(Path(directory), config)
    return TOWER_CLASSES[config.kind](config, source=source, adapter=adapter)


__all__ = [
    "AudioTower",
    "EcgTower",
    "EcgTransformerConfig",
    "EcgTransformerModel",
    "ImageTower",
    "TextTower",
    "Tower",
    "build_tower",
    "load_tower",
]
