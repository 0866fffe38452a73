"""Mixed precision: which autocast dtype a run uses."""

from __future__ import annotations

import contextlib

import torch


def autocast_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
