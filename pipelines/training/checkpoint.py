"""Checkpoints: atomic writes, the trainable part of a model, and the RNG state a resume restores."""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


def atomic_torch_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only what training changes (adapters, heads, logit scale, fully tuned towers): frozen bases are
    rebuilt from their pretrained weights, which keeps checkpoints small.

    Training also changes the persistent buffers of a module it tunes: a batch norm's running mean,
    variance and batch count (the ResNet X-ray tower) are part of the state, or a resumed run and the
    best checkpoint would normalise with statistics from another step."""
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    for prefix, module in model.named_modules():
        if any(p.requires_grad for p in module.parameters(recurse=False)):
            skip = getattr(module, "_non_persistent_buffers_set", set())
            names.update(
                f"{prefix}.{b}" if prefix else b
                for b, _ in module.named_buffers(recurse=False)
                if b not in skip
            )
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if k in names}


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
