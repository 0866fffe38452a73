"""Mixed precision: which autocast dtype a run uses.

``precision="auto"`` is bf16 autocast where the hardware runs bf16 natively (every CUDA device this
project supports; a CPU whose ``/proc/cpuinfo`` flags list ``avx512_bf16`` or ``amx_bf16``) and fp32
elsewhere: on an AVX2-only CPU bf16 is emulated and hundreds of times slower than fp32. Master
weights stay fp32 either way; autocast only lowers the matmuls.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Literal

import torch

Precision = Literal["fp32", "bf16", "fp16"]
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@functools.cache
def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: no flags to read, so no claim of native bf16
        return ""


def cpu_flags(cpuinfo: str) -> set[str]:
    """The union of the ``flags`` lines of a ``/proc/cpuinfo`` text."""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip() == "flags":
            flags.update(value.split())
    return flags


def native_bf16_flags(cpuinfo: str | None = None) -> set[str]:
    """The flags by which the CPU computes bf16 in hardware (empty: bf16 is emulated)."""
    return cpu_flags(_cpuinfo() if cpuinfo is None else cpuinfo) & NATIVE_BF16_FLAGS


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether the CPU computes bf16 in hardware (AVX-512 BF16 or AMX-BF16)."""
    return bool(native_bf16_flags(cpuinfo))


def resolve_precision(precision: str, device: torch.device, cpuinfo: str | None = None) -> Precision:
    """The precision a run uses on ``device``: ``auto`` resolved as the module docstring says."""
    if precision in ("fp32", "bf16", "fp16"):
        return precision  # type: ignore[return-value]
    if precision != "auto":
        raise ValueError(f"precision must be auto, fp32, bf16 or fp16, got {precision!r}")
    if device.type == "cuda":
        return "bf16"
    if device.type == "cpu" and cpu_has_native_bf16(cpuinfo):
        return "bf16"
    return "fp32"


def autocast_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    resolved = resolve_precision(precision, device)
    if resolved == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if resolved == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
