"""The contrastive objective of a training config, and the loss of one batch."""

from __future__ import annotations

from encoders import ContrastiveObjective, PairSpec
from pipelines.training.config import ObjectiveConfig


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
