"""The training library: the one optimisation loop and its variants, and what they share.

- ``loop``: :func:`fit` with its :class:`Engine` (AdamW, LR schedule, grad scaler, mixed precision,
  feature-cached accumulation, clipping, logit-scale clamp, DDP ``no_sync``, NaN guard) and the
  :class:`Task` / :class:`StepSource` / :class:`Callback` a variant supplies;
- ``contrastive``: :class:`ContrastiveTask` and :func:`train`, the run behind ``train-more``,
  ``train-speech`` and retraining after unlearning (checkpoints, resume, validation);
- ``config``: :class:`TrainingSettings` (one run), :class:`TrainConfig` (a training stage) and the two
  stage defaults; ``objective``, ``references`` (CWCL weights), ``embedding``, ``validation``,
  ``schedule``, ``checkpoint``, ``distributed``, ``precision``.

Continual methods (:mod:`pipelines.continual_methods.training`) and unlearning methods
(:mod:`pipelines.unlearning.methods`) are further :class:`Task` variants run by the same :func:`fit`.

Stage modules (``pipelines/train.py``, ``continual.py``, ``unlearn.py``, ``evidence.py``) import from
here; nothing here imports a stage module.
"""

from pipelines.training.checkpoint import atomic_torch_save, rng_state, set_rng_state, trainable_state
from pipelines.training.config import (
    MoreTrainConfig,
    ObjectiveConfig,
    OptimConfig,
    SpeechTrainConfig,
    TrainConfig,
    TrainingSettings,
    check_config,
    more_objective,
)
from pipelines.training.contrastive import ContrastiveTask, StudyBatches, TrainResult, train
from pipelines.training.distributed import DistInfo, init_distributed, resolve_device
from pipelines.training.embedding import ViewEncoder, embed_dataset, max_speech_samples, move_batch
from pipelines.training.loop import (
    Callback,
    Engine,
    LoopSettings,
    LoopState,
    StepOutput,
    StepSource,
    Task,
    build_optimizer,
    fit,
    optimizer_name,
)
from pipelines.training.objective import build_objective
from pipelines.training.precision import autocast_context, resolve_precision
from pipelines.training.references import ReferenceCache, build_reference_cache
from pipelines.training.schedule import cosine_with_warmup, epoch_batches
from pipelines.training.validation import validate

__all__ = [
    "Callback",
    "ContrastiveTask",
    "Engine",
    "LoopSettings",
    "LoopState",
    "StepOutput",
    "StepSource",
    "StudyBatches",
    "Task",
    "build_optimizer",
    "fit",
    "optimizer_name",
    "DistInfo",
    "ObjectiveConfig",
    "OptimConfig",
    "ReferenceCache",
    "SpeechTrainConfig",
    "TrainConfig",
    "TrainingSettings",
    "MoreTrainConfig",
    "more_objective",
    "TrainResult",
    "ViewEncoder",
    "atomic_torch_save",
    "autocast_context",
    "build_objective",
    "build_reference_cache",
    "check_config",
    "cosine_with_warmup",
    "embed_dataset",
    "epoch_batches",
    "init_distributed",
    "max_speech_samples",
    "move_batch",
    "resolve_device",
    "resolve_precision",
    "rng_state",
    "set_rng_state",
    "train",
    "trainable_state",
    "validate",
]
