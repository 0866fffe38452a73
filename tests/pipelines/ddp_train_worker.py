"""Run by ``torchrun`` in test_train.py: train a few steps and save this rank's trainable weights."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from pipelines.config import load_config
from pipelines.training import MoreTrainConfig, train, trainable_state


class _Quiet:
    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        pass


def main() -> None:
    cfg = load_config(MoreTrainConfig, sys.argv[1])
    out = Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    result = train(cfg, _Quiet())
    rank = dist.get_rank()
    torch.save(result.last_state, out / f"rank{rank}.pt")
    if rank == 0:
        from encoders import MultimodalModel

        torch.manual_seed(cfg.seed)
        torch.save(trainable_state(MultimodalModel(cfg.model)), out / "initial.pt")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
