"""Process-wide environment: offline by construction, and a deterministic seed helper."""

from __future__ import annotations

import os
import random

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "TOKENIZERS_PARALLELISM": "false",
}


def set_offline_env() -> None:
    """Nothing in this project may reach the network: set the switches unless the user did."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
