"""The contrastive objective of a training config, and the loss of one batch."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from encoders import ContrastiveObjective, PairSpec
from pipelines.training.config import ObjectiveConfig
from pipelines.training.references import ReferenceCache


def build_objective(cfg: ObjectiveConfig, distributed: bool) -> ContrastiveObjective:
    pairs = [PairSpec(p.a, p.b, weights_from=p.weights_from, weight=p.weight) for p in cfg.pairs]
    return ContrastiveObjective(
        pairs,
        kind=cfg.kind,
        direction=cfg.direction,
        align_uniform_weight=cfg.align_uniform_weight,
        chunk_size=cfg.chunk_size,
        gather=distributed,
        local_loss=cfg.local_loss,
        cwcl_weight_power=cfg.weight_power,
    )


def compute_loss(
    encoder: nn.Module,
    objective: ContrastiveObjective,
    batch: dict[str, Any],
    references: ReferenceCache | None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    features, logit_scale = encoder(batch)
    refs = references(batch, logit_scale.device) if references is not None else {}
    present = {view: batch["present"][view] for view in features}
    return objective(features, present, logit_scale, refs or None)
