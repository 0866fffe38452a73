"""The one loop's step: a non-finite loss stops the run readably; bf16 autocast keeps fp32 master weights."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from encoders import MultimodalModel
from pipelines.data.dataset import StudyDataset, collate_studies
from pipelines.errors import StageError
from pipelines.training import ContrastiveTask, Engine, ViewEncoder, build_objective
from tests.pipelines.processed_fixture import write_processed_dataset
from tests.pipelines.unlearning.helpers import tiny_pair_config

CPU = torch.device("cpu")


class _NonFiniteTask(ContrastiveTask):
    """The contrastive loss times NaN: what a diverged run looks like to the loop."""

    def loss(self, outputs: dict[str, Any], targets: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        loss, parts = super().loss(outputs, targets)
        return loss * float("nan"), parts


@pytest.fixture(scope="module")
def batch_and_config(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Any]:
    root = write_processed_dataset(tmp_path_factory.mktemp("processed") / "demo", n_studies=24)
    cfg = tiny_pair_config(root)
    train_set = StudyDataset(root, "train", cfg.views)
    return collate_studies([train_set[i] for i in range(8)], cfg.views), cfg


def _engine(cfg: Any, precision: str) -> Engine:
    torch.manual_seed(0)
    model = MultimodalModel(cfg.model)
    return Engine(model, ViewEncoder(model, cfg.views), cfg.optim, 10, CPU, precision)


def test_a_non_finite_loss_stops_the_run_with_a_readable_error(batch_and_config: tuple) -> None:
    batch, cfg = batch_and_config
    engine = _engine(cfg, "fp32")
    before = {n: p.detach().clone() for n, p in engine.model.named_parameters()}
    with pytest.raises(StageError, match="loss became nan"):
        engine.step(_NonFiniteTask(build_objective(cfg.objective, distributed=False), None), [batch])
    assert all(torch.equal(p, before[n]) for n, p in engine.model.named_parameters())


def test_a_bf16_autocast_step_updates_fp32_master_weights(batch_and_config: tuple) -> None:
    batch, cfg = batch_and_config
    engine = _engine(cfg, "bf16")
    before = {n: p.detach().clone() for n, p in engine.model.named_parameters() if p.requires_grad}
    output = engine.step(ContrastiveTask(build_objective(cfg.objective, distributed=False), None), [batch])
    assert math.isfinite(output.loss) and output.grad_norm > 0
    after = dict(engine.model.named_parameters())
    assert all(after[n].dtype == torch.float32 for n in before)
    assert any(not torch.equal(after[n].detach(), p) for n, p in before.items())
