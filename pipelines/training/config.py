"""Training settings: optimiser, objective, one optimisation run (:class:`TrainingSettings`) and a
training stage (:class:`TrainConfig`), with the two stage defaults (:class:`MoreTrainConfig` for
X-ray + ECG + reports, :class:`SpeechTrainConfig` for speech + transcripts).

They live in the library rather than in ``pipelines/train.py`` because continual learning composes a
training section and unlearning retrains with the training stage's own config.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from encoders import MultimodalConfig, PairSpec, default_more_config, default_speech_config
from pipelines.data.augment import AugmentConfig
from pipelines.data.dataset import ViewSpec, more_views
from pipelines.errors import StageError


@dataclasses.dataclass
class OptimConfig:
    lr: float = 5e-4
    weight_decay: float = 0.05
    betas: list[float] = dataclasses.field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-6
    warmup_steps: int = 10
    min_lr_ratio: float = 0.05
    max_grad_norm: float = 1.0
    accumulation_steps: int = 1
    fused: Literal["auto", "on", "off"] = dataclasses.field(
        default="auto",
        metadata={
            "help": "AdamW's fused kernel (one pass over all parameters instead of a loop of tensor ops): "
            "auto = on where torch has it for the parameters' device (CPU, CUDA)"
        },
    )


@dataclasses.dataclass
class ObjectiveConfig:
    kind: Literal["cwcl", "clip", "dcl"] = "cwcl"
    direction: Literal["both", "a2b", "b2a"] = "both"
    align_uniform_weight: float = 0.0
    chunk_size: int | None = None
    local_loss: bool = False
    weight_power: float = dataclasses.field(
        default=1.0, metadata={"help": "CWCL weights w_ij ** power (1 = the paper's formula; >1 sharpens)"}
    )
    center_reference: bool = dataclasses.field(
        default=True, metadata={"help": "centre CWCL reference features on the training-text mean"}
    )
    pairs: list[PairSpec] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class TrainingSettings:
    """What one optimisation run does: views, model, objective, optimiser, batches, precision.

    The training stages extend it with the run's data, files and tracking (:class:`TrainConfig`);
    continual learning composes it as its ``train:`` section, one run per task.
    """

    key: str = dataclasses.field(default="study_id", metadata={"help": "column joining views into one study"})
    views: dict[str, ViewSpec] = dataclasses.field(default_factory=dict)
    model: MultimodalConfig = dataclasses.field(default_factory=default_more_config)
    objective: ObjectiveConfig = dataclasses.field(default_factory=ObjectiveConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
    epochs: int = 8
    batch_size: int = dataclasses.field(default=32, metadata={"help": "studies per micro-batch (per rank)"})
    eval_batch_size: int = 64
    max_steps: int | None = dataclasses.field(default=None, metadata={"help": "stop after this many steps"})
    seed: int = 0
    precision: Literal["auto", "fp32", "bf16", "fp16"] = dataclasses.field(
        default="auto",
        metadata={
            "help": "auto = bf16 autocast where native (CUDA, CPUs with AVX-512 BF16 / AMX), else fp32"
        },
    )
    log_every: int = dataclasses.field(default=5, metadata={"help": "steps between tracked step metrics"})
    max_speech_s: float = 2.0

    def __post_init__(self) -> None:
        check_config(self)


@dataclasses.dataclass
class TrainConfig(TrainingSettings):
    """A training stage: :class:`TrainingSettings` plus its data, device, checkpoints and tracking."""

    task: str = "more"
    data_root: str = "data/processed/demo"
    device: str = dataclasses.field(default="auto", metadata={"help": "auto | cpu | cuda"})
    compile: bool = False
    checkpoint_dir: str = "checkpoints/more"
    checkpoint_every: int = 20
    resume: bool = False
    val_distinct_texts: bool = dataclasses.field(
        default=False,
        metadata={
            "help": "validation R@1 (which picks the best checkpoint) counts identical texts as one candidate: "
            "needed when many pairs share a text (keyword and digit datasets)"
        },
    )
    tracking_uri: str | None = None
    experiment: str = "morE"
    registered_model: str = "morE-cxr-ecg-report"
    register: bool = True
    threads: int | None = dataclasses.field(
        default=None, metadata={"help": "torch CPU threads (default: all)"}
    )


def more_objective() -> ObjectiveConfig:
    # Reports are the pretrained side (MiniLM): their intra-modal similarity gives the CWCL weights.
    # X-ray <-> ECG has no pretrained side, so that pair is plain CLIP (weights_from None).
    return ObjectiveConfig(
        pairs=[
            PairSpec("xray", "radiology_report", weights_from="radiology_report"),
            PairSpec("ecg", "cardiology_report", weights_from="cardiology_report"),
            PairSpec("xray", "ecg", weights_from=None, weight=0.5),
        ]
    )


@dataclasses.dataclass
class MoreTrainConfig(TrainConfig):
    """X-ray + ECG + report alignment (MoRE-style)."""

    views: dict[str, ViewSpec] = dataclasses.field(default_factory=more_views)
    objective: ObjectiveConfig = dataclasses.field(default_factory=more_objective)


@dataclasses.dataclass
class SpeechTrainConfig(TrainConfig):
    """Speech <-> transcript alignment."""

    task: str = "speech"
    key: str = "sample_id"
    views: dict[str, ViewSpec] = dataclasses.field(
        default_factory=lambda: {
            "speech": ViewSpec(modality="speech", tower="audio"),
            "transcript": ViewSpec(modality="speech", tower="text", column="transcript"),
        }
    )
    model: MultimodalConfig = dataclasses.field(default_factory=default_speech_config)
    objective: ObjectiveConfig = dataclasses.field(
        default_factory=lambda: ObjectiveConfig(pairs=[PairSpec("speech", "transcript", "transcript")])
    )
    epochs: int = 10
    val_distinct_texts: bool = True  # commands and keywords repeat: R@1 over distinct transcripts
    checkpoint_dir: str = "checkpoints/speech"
    experiment: str = "speech"
    registered_model: str = "speech-text"


def check_config(cfg: TrainingSettings) -> None:
    """Views name towers of the model, pairs name views, CWCL weights come from a text view, and a
    batch has negatives: a readable error before any data is read."""
    towers = set(cfg.model.towers)
    for name, view in cfg.views.items():
        if view.tower not in towers:
            raise StageError(
                f"view {name!r} uses tower {view.tower!r}, but the model has towers {sorted(towers)}"
            )
    for pair in cfg.objective.pairs:
        for view in (pair.a, pair.b, pair.weights_from):
            if view is not None and view not in cfg.views:
                raise StageError(f"objective pair ({pair.a}, {pair.b}) names unknown view {view!r}")
        if pair.weights_from and cfg.views[pair.weights_from].tower != "text":
            raise StageError(f"CWCL weights_from={pair.weights_from!r} must be a text view (pretrained side)")
    if cfg.batch_size < 2:
        raise StageError("batch_size must be at least 2: a contrastive batch needs negatives")
    if cfg.optim.accumulation_steps < 1:
        raise StageError(f"optim.accumulation_steps must be at least 1, got {cfg.optim.accumulation_steps}")
    if cfg.precision not in ("auto", "fp32", "bf16", "fp16"):
        raise StageError(f"precision must be auto, fp32, bf16 or fp16, got {cfg.precision!r}")
