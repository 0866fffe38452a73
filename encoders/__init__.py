"""Clinical encoders: Hugging Face towers (image, ECG, audio, text), LoRA, projection heads and contrastive losses.

A model library: it knows nothing of files, stages or MLflow (those live in ``pipelines/``).
"""

from encoders.config import (
    LoraSettings,
    MultimodalConfig,
    TowerConfig,
    default_more_config,
    default_speech_config,
    default_text_model_dir,
)
from encoders.distributed import gather_features
from encoders.losses import (
    ContrastiveObjective,
    PairSpec,
    align_uniform_loss,
    alignment_loss,
    clip_loss,
    cwcl_loss,
    cwcl_weights,
    dcl_loss,
    uniformity_loss,
)
from encoders.model import MultimodalModel
from encoders.towers.ecg import EcgTransformerConfig, EcgTransformerModel

__all__ = [
    "ContrastiveObjective",
    "EcgTransformerConfig",
    "EcgTransformerModel",
    "LoraSettings",
    "MultimodalConfig",
    "MultimodalModel",
    "PairSpec",
    "TowerConfig",
    "align_uniform_loss",
    "alignment_loss",
    "clip_loss",
    "cwcl_loss",
    "cwcl_weights",
    "dcl_loss",
    "default_more_config",
    "default_speech_config",
    "default_text_model_dir",
    "gather_features",
    "uniformity_loss",
]
