"""Run by ``torchrun`` in test_multinode_train.py, one torchrun per "node": the training stage's own
entry point (``pipelines.train.run``: checkpoints, MLflow on rank 0), then this rank's final trainable
weights saved to ``<out>/rank<r>.pt`` for the test to compare."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

import pipelines.train as stage
from pipelines.config import load_config


def main() -> None:
    cfg = load_config(stage.MoreTrainConfig, sys.argv[1])
    out = Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    finals: list[dict[str, torch.Tensor]] = []
    train = stage.train

    def train_and_keep(config, tracker):  # noqa: ANN001, ANN202 - same signature as stage.train
        result = train(config, tracker)
        finals.append(result.last_state)
        return result

    stage.train = train_and_keep  # observe what each rank ends with; the stage runs unchanged
    assert stage.run(cfg) == 0
    torch.save(finals[0], out / f"rank{os.environ['RANK']}.pt")


if __name__ == "__main__":
    main()
