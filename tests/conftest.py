"""Shared fixtures. Tests run offline and seeded; real sample data is used when ../shared/data exists."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

for _key, _value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "TOKENIZERS_PARALLELISM": "false",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}.items():
    os.environ[_key] = _value

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real public samples); tests using it skip cleanly when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real sample data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _deterministic_torch():
    """Every test starts from the same RNG state and a small thread count (CI has 2 cores)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        yield
        return
    torch.manual_seed(0)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    yield
