"""Feature-cached gradient accumulation: 4 micro-batches of 8 are one batch of 32 for the contrastive loss."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from encoders import MultimodalModel
from pipelines.data.dataset import StudyDataset, collate_studies
from pipelines.training import ViewEncoder, build_objective, build_reference_cache, resolve_device
from pipelines.training.contrastive import ContrastiveTask
from pipelines.training.loop import Engine
from tests.pipelines.processed_fixture import write_processed_dataset
from tests.pipelines.train_helpers import tiny_more_config


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_processed_dataset(tmp_path_factory.mktemp("processed") / "demo", n_studies=48)


def _gradients(
    engine: Engine, task: ContrastiveTask, batches: list[dict]
) -> tuple[float, dict[str, torch.Tensor]]:
    engine.optimizer.zero_grad(set_to_none=True)
    loss, _ = engine.backward(task, batches)
    grads = {n: p.grad.clone() for n, p in engine.model.named_parameters() if p.grad is not None}
    return float(loss.detach()), grads


@pytest.mark.parametrize("kind", ["clip", "cwcl"])
def test_four_accumulated_batches_of_8_give_the_loss_and_gradients_of_one_batch_of_32(
    data_root: Path, tmp_path: Path, kind: str
) -> None:
    cfg = tiny_more_config(data_root, tmp_path, batch_size=32, precision="fp32", device="cpu")
    cfg.objective.kind = kind
    torch.manual_seed(0)
    model = MultimodalModel(cfg.model)
    model.eval()  # dropout off: the two batchings would draw different masks
    train_set = StudyDataset(cfg.data_root, "train", cfg.views, key=cfg.key)
    items = [train_set[i] for i in range(32)]
    task = ContrastiveTask(
        build_objective(cfg.objective, distributed=False), build_reference_cache(model, cfg, train_set)
    )
    engine = Engine(model, ViewEncoder(model, cfg.views), cfg.optim, 10, resolve_device("cpu"), "fp32")

    whole_loss, whole = _gradients(engine, task, [collate_studies(items, cfg.views)])
    micro = [collate_studies(items[i : i + 8], cfg.views) for i in range(0, 32, 8)]
    accumulated_loss, accumulated = _gradients(engine, task, micro)

    assert accumulated_loss == pytest.approx(whole_loss, rel=1e-6)
    assert set(accumulated) == set(whole) and "logit_scale" in whole
    for name, grad in whole.items():
        torch.testing.assert_close(accumulated[name], grad, rtol=1e-4, atol=1e-5, msg=name)
