"""Specification of gradient saliency against any model with ``encode(tower, inputs, lead_mask=None)``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pipelines.evaluation.explain import ecg_saliency, input_gradient, xray_heatmap


class TinyTwoTower(nn.Module):
    """Image tower that only looks at the top-left 4x4 pixels; ECG tower that only looks at lead II."""

    def __init__(self, size_px: int = 16, n_samples: int = 50, dim: int = 4) -> None:
        super().__init__()
        mask = torch.zeros(size_px, size_px)
        mask[:4, :4] = 1.0
        self.register_buffer("image_mask", mask)
        self.image_proj = nn.Linear(size_px * size_px, dim)
        self.ecg_proj = nn.Linear(n_samples, dim)

    def encode(self, tower: str, inputs: torch.Tensor, lead_mask: torch.Tensor | None = None) -> torch.Tensor:
        if tower == "image":
            x = torch.tanh(inputs[:, 0] * self.image_mask).flatten(1)
            out = self.image_proj(x)
        elif tower == "ecg":
            lead_ii = inputs[:, 1]
            if lead_mask is not None:
                lead_ii = lead_ii * lead_mask[:, 1:2]
            out = self.ecg_proj(torch.sin(lead_ii))
        else:
            raise ValueError(tower)
        return nn.functional.normalize(out, dim=-1)


def test_xray_heatmap_highlights_only_the_pixels_the_tower_sees():
    model = TinyTwoTower()
    image = torch.rand(1, 16, 16)
    heat = xray_heatmap(model, image, torch.ones(4), n_samples=4)
    assert heat.shape == (16, 16)
    assert heat.max() == pytest.approx(1.0) and heat.min() == pytest.approx(0.0)
    assert heat[:4, :4].mean() > 0.1
    assert np.all(heat[4:, :] == 0) and np.all(heat[:, 4:] == 0)


def test_ecg_saliency_puts_all_importance_on_the_lead_the_tower_uses():
    model = TinyTwoTower()
    signal = torch.randn(12, 50)
    saliency, importance = ecg_saliency(model, signal, torch.ones(4), n_samples=4)
    assert saliency.shape == (12, 50) and importance.shape == (12,)
    assert importance.sum() == pytest.approx(1.0)
    assert importance[1] == pytest.approx(1.0)


def test_absent_leads_get_no_importance():
    model = TinyTwoTower()
    mask = torch.ones(12, dtype=torch.bool)
    mask[1] = False
    _, importance = ecg_saliency(model, torch.randn(12, 50), torch.ones(4), lead_mask=mask, n_samples=2)
    assert np.all(importance == 0)


def test_plain_gradient_equals_autograd_and_leaves_the_model_untouched():
    model = TinyTwoTower()
    model.train()
    image = torch.rand(1, 16, 16)
    direction = torch.tensor([1.0, -1.0, 0.5, 0.0])
    grad = input_gradient(model, "image", image, direction, n_samples=1, noise_level=0.0)
    assert all(p.grad is None for p in model.parameters())
    assert model.training and all(p.requires_grad for p in model.parameters())
    x = image.unsqueeze(0).clone().requires_grad_(True)
    (model.encode("image", x) @ direction).sum().backward()
    assert torch.allclose(grad, x.grad.squeeze(0))


def test_smoothgrad_is_seeded():
    model = TinyTwoTower()
    image = torch.rand(1, 16, 16)
    a = xray_heatmap(model, image, torch.ones(4), n_samples=3, seed=5)
    b = xray_heatmap(model, image, torch.ones(4), n_samples=3, seed=5)
    assert np.array_equal(a, b)
