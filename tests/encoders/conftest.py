"""Tiny tower configs and a tiny BERT-family text model directory for the encoder tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer, BertConfig, BertModel

from encoders import LoraSettings, MultimodalConfig, TowerConfig, default_text_model_dir

TINY = dict(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The real packaged all-MiniLM-L6-v2 (offline)."""
    return default_text_model_dir()


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> Path:
    """A 1-layer, width-32 BERT saved with the MiniLM tokenizer: a stand-in for a user's local clinical BERT."""
    import torch

    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(config, add_pooling_layer=False).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def tiny_tower(kind: str, mode: str = "lora", **overrides) -> TowerConfig:
    values = dict(TINY, kind=kind, lora=LoraSettings(mode=mode, r=2, alpha=4, dropout=0.0))
    if kind == "image":
        values.update(image_size_px=32, patch_size=8)
    if kind == "ecg":
        values.update(patch_len=25, max_len=250)
    if kind == "audio":
        values.update(
            conv_dim=[16, 16],
            conv_kernel=[10, 4],
            conv_stride=[5, 4],
            num_conv_pos_embeddings=8,
            num_conv_pos_embedding_groups=2,
        )
    values.update(overrides)
    return TowerConfig(**values)


def tiny_config(tiny_bert_dir: Path, modes: dict[str, str] | None = None, **kwargs) -> MultimodalConfig:
    modes = {"image": "lora", "ecg": "lora", "audio": "lora", "text": "lora", **(modes or {})}
    return MultimodalConfig(
        towers={
            "image": tiny_tower("image", modes["image"]),
            "ecg": tiny_tower("ecg", modes["ecg"]),
            "audio": tiny_tower("audio", modes["audio"]),
            "text": tiny_tower("text", modes["text"], pretrained=str(tiny_bert_dir)),
        },
        embed_dim=16,
        **kwargs,
    )


@pytest.fixture
def make_tower():
    """Builder of tiny TowerConfigs: ``make_tower("ecg", "full", pooling="cls")``."""
    return tiny_tower


@pytest.fixture
def make_config(tiny_bert_dir: Path):
    """Builder of a tiny four-tower MultimodalConfig: ``make_config({"image": "full"}, projection="mlp")``."""

    def build(modes: dict[str, str] | None = None, **kwargs) -> MultimodalConfig:
        return tiny_config(tiny_bert_dir, modes, **kwargs)

    return build
