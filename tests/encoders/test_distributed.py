"""Two gloo ranks on CPU (torchrun) give the same loss and gradients as one process on the whole batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
TORCHRUN = Path(sys.executable).with_name("torchrun")
sys.path.insert(0, str(HERE))
import dist_worker  # noqa: E402


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    if not TORCHRUN.exists():
        pytest.skip(f"torchrun not found next to {sys.executable}")
    out_dir = tmp_path_factory.mktemp("dist")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parents[1])}
    command = [
        str(TORCHRUN),
        "--standalone",
        "--nproc_per_node=2",
        str(HERE / "dist_worker.py"),
        str(out_dir),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-4000:]
    return [torch.load(out_dir / f"rank{r}.pt") for r in range(2)]


def single_process(case: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model = dist_worker.ToyEncoders()
    return dist_worker.step(
        model, model, dist_worker.global_batch(), dist_worker.objective_for(case, gather=False)
    )


@pytest.mark.parametrize("name", ["cwcl-both", "dcl-b2a-chunked"])
def test_two_rank_loss_and_gradients_equal_single_process_on_concatenated_batch(rank_results, name):
    loss, grads = single_process(dist_worker.CASES[name])
    for rank in rank_results:
        rank_loss, rank_grads = rank[name]
        torch.testing.assert_close(rank_loss, loss)
        for key, grad in grads.items():
            torch.testing.assert_close(rank_grads[key], grad, msg=lambda m, key=key: f"{key}: {m}")


@pytest.mark.parametrize("name", ["cwcl-both-local", "clip-a2b-local"])
def test_local_loss_mean_over_ranks_and_gradients_equal_single_process(rank_results, name):
    loss, grads = single_process(dist_worker.CASES[name])
    torch.testing.assert_close(sum(rank[name][0] for rank in rank_results) / 2, loss)
    for rank in rank_results:
        for key, grad in grads.items():
            torch.testing.assert_close(rank[name][1][key], grad, msg=lambda m, key=key: f"{key}: {m}")


def test_reinserted_local_slice_gives_each_rank_its_rows_gradients(rank_results):
    model = dist_worker.ToyEncoders()
    batch = dist_worker.global_batch()
    features = model(batch)
    for tensor in features.values():
        tensor.retain_grad()
    objective = dist_worker.objective_for(dist_worker.CASES["cwcl-both"], gather=False)
    present = {"xray": batch["xray_present"], "report": batch["report_present"]}
    loss, _ = objective(features, present, model.logit_scale, {"report": batch["reference"]})
    loss.backward()
    for r, rank in enumerate(rank_results):
        rank_loss, rank_grads = rank["reinsert"]
        torch.testing.assert_close(rank_loss, loss.detach())
        for view, tensor in features.items():
            torch.testing.assert_close(rank_grads[view], tensor.grad[r * 6 : (r + 1) * 6])
