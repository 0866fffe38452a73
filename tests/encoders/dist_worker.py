"""Worker for test_distributed.py, run as ``torchrun --nproc_per_node=2 dist_worker.py OUT_DIR``.

Every rank encodes its half of a fixed global batch with a DDP-wrapped toy encoder, computes the
gathered contrastive loss and backpropagates; it saves its loss and the DDP-averaged gradients to
``OUT_DIR/rank<r>.pt`` for the test to compare with one process on the whole batch.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from encoders import ContrastiveObjective, PairSpec

GLOBAL_BATCH = 12
CASES = {
    "cwcl-both": dict(kind="cwcl", direction="both", local_loss=False),
    "cwcl-both-local": dict(kind="cwcl", direction="both", local_loss=True),
    "clip-a2b-local": dict(kind="clip", direction="a2b", local_loss=True),
    "dcl-b2a-chunked": dict(kind="dcl", direction="b2a", local_loss=False, chunk_size=5),
}


class ToyEncoders(nn.Module):
    """Two linear 'towers' and a logit scale; identical initial weights on every rank (seeded)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.xray = nn.Linear(5, 4)
        self.report = nn.Linear(6, 4)
        self.logit_scale = nn.Parameter(torch.tensor(2.0))

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {
            "xray": F.normalize(self.xray(batch["xray"]), dim=-1),
            "report": F.normalize(self.report(batch["report"]), dim=-1),
        }


def global_batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return {
        "xray": torch.randn(GLOBAL_BATCH, 5, generator=generator),
        "report": torch.randn(GLOBAL_BATCH, 6, generator=generator),
        "reference": torch.randn(GLOBAL_BATCH, 7, generator=generator),
        "xray_present": torch.tensor([1, 1, 0, 1, 1, 1, 1, 1, 1, 0, 1, 1], dtype=torch.bool),
        "report_present": torch.tensor([1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1], dtype=torch.bool),
    }


def objective_for(case: dict, gather: bool, gather_with_grad: bool = True) -> ContrastiveObjective:
    case = dict(case)
    return ContrastiveObjective(
        [PairSpec("xray", "report", weights_from="report")],
        gather=gather,
        gather_with_grad=gather_with_grad,
        **case,
    )


def step(model: nn.Module, encoders: nn.Module, batch: dict, objective: ContrastiveObjective) -> tuple:
    features = encoders(batch)
    present = {"xray": batch["xray_present"], "report": batch["report_present"]}
    loss, _ = objective(features, present, model.logit_scale, {"report": batch["reference"]})
    loss.backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters()}
    return loss.detach(), grads


def main(out_dir: Path) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    batch = global_batch()
    size = GLOBAL_BATCH // world
    local = {k: v[rank * size : (rank + 1) * size] for k, v in batch.items()}
    results = {}
    for name, case in CASES.items():
        model = ToyEncoders()
        ddp = nn.parallel.DistributedDataParallel(model)
        results[name] = step(model, ddp, local, objective_for(case, gather=True))

    # open_clip-style re-inserted local slice, no DDP: this rank's feature gradients only.
    model = ToyEncoders()
    features = model(local)
    for tensor in features.values():
        tensor.retain_grad()
    present = {"xray": local["xray_present"], "report": local["report_present"]}
    objective = objective_for(CASES["cwcl-both"], gather=True, gather_with_grad=False)
    loss, _ = objective(features, present, model.logit_scale, {"report": local["reference"]})
    loss.backward()
    results["reinsert"] = (loss.detach(), {k: v.grad.detach().clone() for k, v in features.items()})
    torch.save(results, out_dir / f"rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
