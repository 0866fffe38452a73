"""precision=auto: bf16 where the hardware has it natively, fp32 elsewhere."""

from __future__ import annotations

import pytest
import torch

from pipelines.training.precision import autocast_context, cpu_has_native_bf16, resolve_precision

AVX2_ONLY = (
    "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n\nprocessor\t: 1\nflags\t\t: fpu sse2 avx avx2 fma\n"
)
SAPPHIRE_RAPIDS = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
AMX_ONLY = "flags\t\t: fpu avx2 amx_bf16\n"


def test_native_bf16_is_read_from_the_cpu_flags() -> None:
    assert cpu_has_native_bf16(SAPPHIRE_RAPIDS) and cpu_has_native_bf16(AMX_ONLY)
    assert not cpu_has_native_bf16(AVX2_ONLY) and not cpu_has_native_bf16("")


def test_auto_is_bf16_on_a_native_bf16_cpu_and_fp32_on_an_avx2_only_cpu() -> None:
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu, SAPPHIRE_RAPIDS) == "bf16"
    assert resolve_precision("auto", cpu, AVX2_ONLY) == "fp32"
    assert resolve_precision("auto", torch.device("cuda", 0), AVX2_ONLY) == "bf16"


def test_an_explicit_precision_is_kept_and_an_unknown_one_refused() -> None:
    assert resolve_precision("fp32", torch.device("cpu"), SAPPHIRE_RAPIDS) == "fp32"
    assert resolve_precision("bf16", torch.device("cpu"), AVX2_ONLY) == "bf16"
    with pytest.raises(ValueError, match="precision must be"):
        resolve_precision("fp8", torch.device("cpu"))


def test_bf16_autocast_lowers_matmuls_and_fp32_leaves_them() -> None:
    x = torch.randn(4, 4)
    with autocast_context(torch.device("cpu"), "bf16"):
        assert (x @ x).dtype == torch.bfloat16
    with autocast_context(torch.device("cpu"), "fp32"):
        assert (x @ x).dtype == torch.float32
