"""The learning-rate schedule and the seeded batch order of an epoch."""

from __future__ import annotations

import math

import torch

from pipelines.training.distributed import DistInfo


def cosine_with_warmup(step: int, warmup_steps: int, total_steps: int, min_ratio: float = 0.0) -> float:
    """LR multiplier: linear warm-up then cosine decay to ``min_ratio`` (Loshchilov & Hutter 2017, SGDR)."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, dist: DistInfo) -> list[list[int]]:
    """Seeded permutation of the epoch, split into global batches, each sliced for this rank.

    Batches are dropped at the end rather than padded so that every rank runs the same number of
    steps; a contrastive batch of one has no negatives anyway.
    """
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + epoch)).tolist()
    global_batch = batch_size * dist.world_size
    n_batches = max(1, n // global_batch) if n >= 2 * dist.world_size else 0
    batches = []
    for b in range(n_batches):
        chunk = order[b * global_batch : (b + 1) * global_batch]
        batches.append(chunk[dist.rank :: dist.world_size])
    return batches
