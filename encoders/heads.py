"""Projection heads from a tower's pooled features to the shared embedding space."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn


class ProjectionHead(nn.Module):
    """``linear``: one bias-free matrix, as CLIP (Radford et al. 2021); ``mlp``: Linear-GELU-Linear, as SimCLR (Chen et al. 2020)."""

    def __init__(self, in_features: int, embed_dim: int, kind: Literal["linear", "mlp"] = "linear") -> None:
        super().__init__()
        if kind == "linear":
            self.proj: nn.Module = nn.Linear(in_features, embed_dim, bias=False)
        elif kind == "mlp":
            self.proj = nn.Sequential(
                nn.Linear(in_features, in_features), nn.GELU(), nn.Linear(in_features, embed_dim, bias=False)
            )
        else:
            raise ValueError(f"unknown projection {kind!r}; expected linear or mlp")

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.proj(pooled)
