"""The training library: configs, the contrastive run, and the pieces continual learning and unlearning
share with it (encoding, objective, schedule, checkpoints, distributed set-up, precision).

Stage modules (``pipelines/train.py``, ``continual.py``, ``unlearn.py``, ``evidence.py``) import from
here; nothing here imports a stage module.
"""

from pipelines.training.checkpoint import atomic_torch_save, rng_state, set_rng_state, trainable_state
from pipelines.training.config import (
    Config,
    ObjectiveConfig,
    OptimConfig,
    PairConfig,
    SpeechConfig,
    TrainConfig,
    check_config,
)
from pipelines.training.contrastive import TrainResult, train
from pipelines.training.distributed import DistInfo, init_distributed, resolve_device
from pipelines.training.embedding import SPEECH_FS_HZ, ViewEncoder, augment_batch, embed_dataset, move_batch
from pipelines.training.objective import build_objective, compute_loss
from pipelines.training.precision import autocast_context
from pipelines.training.references import ReferenceCache, build_reference_cache
from pipelines.training.schedule import cosine_with_warmup, epoch_batches
from pipelines.training.validation import validate

__all__ = [
    "SPEECH_FS_HZ",
    "Config",
    "DistInfo",
    "ObjectiveConfig",
    "OptimConfig",
    "PairConfig",
    "ReferenceCache",
    "SpeechConfig",
    "TrainConfig",
    "TrainResult",
    "ViewEncoder",
    "atomic_torch_save",
    "augment_batch",
    "autocast_context",
    "build_objective",
    "build_reference_cache",
    "check_config",
    "compute_loss",
    "cosine_with_warmup",
    "embed_dataset",
    "epoch_batches",
    "init_distributed",
    "move_batch",
    "resolve_device",
    "rng_state",
    "set_rng_state",
    "train",
    "trainable_state",
    "validate",
]
