"""Pretrained weights that ship inside packages, converted offline into Hugging Face directories."""

from __future__ import annotations

from encoders.pretrained.whisper import (
    PACKAGED_MODELS,
    WHISPER_TINY_EN,
    ConversionError,
    resolve_packaged,
    whisper_tiny_en_dir,
)

__all__ = ["PACKAGED_MODELS", "WHISPER_TINY_EN", "ConversionError", "resolve_packaged", "whisper_tiny_en_dir"]
