"""Training on two "nodes" (two torchrun launchers, one process each) joined through torchrun's c10d
rendezvous on 127.0.0.1, as on two machines: both ranks end with identical weights, only rank 0 writes
checkpoints and MLflow, and a resumed run resumes every rank from rank 0's checkpoint."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch
import yaml

from pipelines.registry.server import free_port
from tests.pipelines.processed_fixture import write_processed_dataset
from tests.pipelines.train_helpers import tiny_more_config

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
WORKER = REPO / "tests" / "scale" / "multinode_train_worker.py"


def _node_config(data_root: Path, node: Path, **overrides):
    """Each node has its own disk: checkpoints and the MLflow store are node-local, as on two machines."""
    cfg = tiny_more_config(
        data_root, node, epochs=1, batch_size=4, max_steps=4, checkpoint_every=2, register=False, **overrides
    )
    path = node / "train.yaml"
    node.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(dataclasses.asdict(cfg)))
    return cfg, path


def _launch_two_nodes(configs: list[Path], outs: list[Path]) -> None:
    torchrun = Path(sys.executable).with_name("torchrun")
    endpoint, run_id = f"127.0.0.1:{free_port()}", uuid.uuid4().hex[:8]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    launchers = []
    for node, (config, out) in enumerate(zip(configs, outs, strict=True)):
        args = [str(torchrun), "--nnodes=2", "--nproc-per-node=1", "--rdzv-backend=c10d",
                f"--rdzv-endpoint={endpoint}", f"--rdzv-id={run_id}", f"--node-rank={node}",
                f"--rdzv-conf=is_host={'true' if node == 0 else 'false'}",
                "--max-restarts=0", str(WORKER), str(config), str(out)]  # fmt: skip
        launchers.append(
            subprocess.Popen(
                args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        )
    outputs = []
    try:
        outputs = [launcher.communicate(timeout=420)[0] for launcher in launchers]
    finally:
        for launcher in launchers:
            if launcher.poll() is None:
                launcher.kill()
                launcher.wait()
    assert [launcher.returncode for launcher in launchers] == [0, 0], "\n---\n".join(
        o[-3000:] for o in outputs
    )


def _ranks(outs: list[Path]) -> list[dict[str, torch.Tensor]]:
    return [torch.load(path, weights_only=False) for out in outs for path in sorted(out.glob("rank*.pt"))]


def _assert_identical(states: list[dict[str, torch.Tensor]]) -> None:
    assert len(states) == 2 and states[0].keys() == states[1].keys() and states[0]
    for name in states[0]:
        torch.testing.assert_close(states[0][name], states[1][name], rtol=0, atol=0, msg=name)


def test_two_nodes_train_alike_rank_zero_alone_writes_and_a_resume_restarts_every_rank_alike(
    tmp_path: Path,
) -> None:
    data_root = write_processed_dataset(tmp_path / "processed" / "demo", n_studies=48)
    nodes = [tmp_path / "node0", tmp_path / "node1"]
    configs = [_node_config(data_root, node)[1] for node in nodes]
    outs = [node / "first" for node in nodes]
    _launch_two_nodes(configs, outs)
    _assert_identical(_ranks(outs))

    # which node hosted rank 0 is the rendezvous' choice: find it by what it wrote
    writers = [node for node in nodes if (node / "ckpt" / "last.pt").is_file()]
    assert len(writers) == 1, "exactly one node (rank 0's) writes checkpoints"
    (main,) = writers
    (other,) = [node for node in nodes if node != main]
    assert not (other / "ckpt").exists() or not any((other / "ckpt").iterdir())
    assert (main / "mlflow.db").is_file() and not (other / "mlflow.db").exists(), "MLflow on rank 0 only"
    assert torch.load(main / "ckpt" / "last.pt", weights_only=False)["step"] == 4

    resumed = [_node_config(data_root, node, resume=True)[1] for node in nodes]
    for path in resumed:  # the first run ended after epoch 1: a second epoch continues from its checkpoint
        values = yaml.safe_load(path.read_text())
        values.update(epochs=2, max_steps=0)
        path.write_text(yaml.safe_dump(values))
    outs = [node / "resumed" for node in nodes]
    _launch_two_nodes(resumed, outs)
    _assert_identical(_ranks(outs))
    assert torch.load(main / "ckpt" / "last.pt", weights_only=False)["step"] > 4
    assert not (other / "ckpt").exists() or not any((other / "ckpt").iterdir())
