"""Tiny training configs for tests: small towers, the real offline MiniLM text tower with LoRA.

Precision is fp32: ``auto`` would pick bf16 on a CPU with native bf16 and fp32 on an AVX2-only one, and
test figures must not depend on the machine."""

from __future__ import annotations

from pathlib import Path

from encoders import LoraSettings, MultimodalConfig, TowerConfig
from pipelines.training import MoreTrainConfig, SpeechTrainConfig


def tiny_more_config(data_root: Path, tmp_path: Path, **overrides) -> MoreTrainConfig:
    model = MultimodalConfig(
        towers={
            "image": TowerConfig(
                kind="image",
                hidden_size=32,
                num_layers=1,
                num_heads=2,
                intermediate_size=64,
                image_size_px=32,
                patch_size=8,
                pooling="cls",
                lora=LoraSettings(mode="full"),
            ),
            "ecg": TowerConfig(
                kind="ecg",
                hidden_size=32,
                num_layers=1,
                num_heads=2,
                intermediate_size=64,
                patch_len=50,
                max_len=5000,
                lora=LoraSettings(mode="full"),
            ),
            "text": TowerConfig(
                kind="text", max_text_tokens=32, lora=LoraSettings(mode="lora", r=4, alpha=8)
            ),
        },
        embed_dim=32,
    )
    values = dict(
        data_root=str(data_root),
        model=model,
        epochs=2,
        batch_size=8,
        eval_batch_size=16,
        checkpoint_dir=str(tmp_path / "ckpt"),
        checkpoint_every=2,
        log_every=1,
        threads=1,
        precision="fp32",
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
    )
    values.update(overrides)
    return MoreTrainConfig(**values)


def tiny_speech_config(data_root: Path, tmp_path: Path, **overrides) -> SpeechTrainConfig:
    model = MultimodalConfig(
        towers={
            "audio": TowerConfig(
                kind="audio",
                hidden_size=32,
                num_layers=1,
                num_heads=2,
                intermediate_size=64,
                conv_dim=[16, 16],
                conv_kernel=[10, 3],
                conv_stride=[5, 2],
                num_conv_pos_embeddings=16,
                num_conv_pos_embedding_groups=2,
                lora=LoraSettings(mode="full"),
            ),
            "text": TowerConfig(
                kind="text", max_text_tokens=16, lora=LoraSettings(mode="lora", r=4, alpha=8)
            ),
        },
        embed_dim=32,
    )
    values = dict(
        data_root=str(data_root),
        model=model,
        epochs=1,
        batch_size=8,
        max_speech_s=0.1,
        checkpoint_dir=str(tmp_path / "ckpt-speech"),
        threads=1,
        precision="fp32",
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
    )
    values.update(overrides)
    return SpeechTrainConfig(**values)
