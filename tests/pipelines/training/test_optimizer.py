"""The training loop's AdamW: the fused kernel where torch has it, the same update as the foreach one."""

from __future__ import annotations

import pytest
import torch

from encoders import MultimodalModel
from pipelines.training.config import OptimConfig
from pipelines.training.loop import build_optimizer, optimizer_name
from tests.pipelines.train_helpers import tiny_more_config


@pytest.fixture()
def model(tmp_path) -> MultimodalModel:
    torch.manual_seed(0)
    return MultimodalModel(tiny_more_config(tmp_path, tmp_path, precision="fp32", device="cpu").model)


def _steps(model: MultimodalModel, fused: str, steps: int = 3) -> dict[str, torch.Tensor]:
    """``steps`` AdamW updates of a copy of ``model`` with fixed, seeded gradients."""
    copy = MultimodalModel(model.config)
    copy.load_state_dict(model.state_dict())
    optimizer = build_optimizer(copy, OptimConfig(lr=1e-2, weight_decay=0.05, fused=fused))
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        for p in copy.parameters():
            if p.requires_grad:
                p.grad = torch.randn(p.shape, generator=generator)
        optimizer.step()
    return {n: p.detach().clone() for n, p in copy.named_parameters() if p.requires_grad}


def test_auto_picks_the_fused_kernel_on_cpu_and_off_keeps_foreach(model: MultimodalModel) -> None:
    assert optimizer_name(build_optimizer(model, OptimConfig())) == "AdamW (fused)"
    assert optimizer_name(build_optimizer(model, OptimConfig(fused="off"))) == "AdamW (foreach)"


def test_fused_updates_equal_the_foreach_updates(model: MultimodalModel) -> None:
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    fused, foreach = _steps(model, "on"), _steps(model, "off")
    assert fused.keys() == foreach.keys() == before.keys()
    for name in fused:
        assert not torch.equal(fused[name], before[name]), f"{name} did not move"
        torch.testing.assert_close(fused[name], foreach[name], rtol=1e-5, atol=1e-6, msg=name)


def test_fused_on_is_refused_where_torch_has_no_fused_kernel(model: MultimodalModel) -> None:
    model.to("meta")
    with pytest.raises(ValueError, match="no fused AdamW"):
        build_optimizer(model, OptimConfig(fused="on"))
