"""Gathering features across ranks for contrastive losses (after open_clip's ``gather_features``).

Every rank all-gathers its features, presence masks and reference features, concatenated in rank
order, so row i of every gathered tensor is the same sample. Two ways to keep gradients:

* ``gather_with_grad=True`` (default): an all-gather whose backward sums every rank's gradient for
  a slice back to the rank that owns it. When every rank computes the
  same global loss, a rank's feature gradients are ``world_size`` times the single-process ones, and
  DDP's gradient *mean* then equals the single-process gradient exactly.
* ``gather_with_grad=False``: plain ``all_gather`` with the local slice re-inserted (open_clip's
  default). Each rank gets the single-process gradient of its own rows only; under DDP the parameter
  gradient is the single-process one divided by ``world_size`` (a learning-rate scale).
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _all_gather_plain(tensor: torch.Tensor) -> list[torch.Tensor]:
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return parts


class _AllGatherWithGrad(torch.autograd.Function):
    """All-gather whose backward hands each rank the *sum over ranks* of the gradient of its slice.

    Written out (rather than the deprecated ``torch.distributed.nn.functional.all_gather``) so it runs
    on every backend: backward is one all-reduce of the gathered gradient, then this rank's slice.
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.rows = dist.get_rank(), tensor.shape[0]
        return torch.cat(_all_gather_plain(tensor), dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def gather_tensor(tensor: torch.Tensor, *, with_grad: bool) -> torch.Tensor:
    """Concatenate ``tensor`` [B, ...] from all ranks in rank order: [world_size * B, ...]."""
    if with_grad:
        return _AllGatherWithGrad.apply(tensor)
    parts = _all_gather_plain(tensor.detach())
    parts[dist.get_rank()] = tensor
    return torch.cat(parts, dim=0)


def gather_features(
    features: dict[str, torch.Tensor],
    present: dict[str, torch.Tensor],
    reference: dict[str, torch.Tensor] | None = None,
    *,
    gather_with_grad: bool = True,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """All-gather features (with gradients), presence masks and reference features in one shared row order.

    Every rank must pass the same view names and the same local batch size (e.g. a
    ``DistributedSampler`` with ``drop_last=True``); a mismatch raises instead of hanging a collective.
    Without an initialised process group of size > 1 the inputs are returned unchanged.
    """
    reference = reference or {}
    if not is_distributed():
        return dict(features), dict(present), dict(reference)
    layout = (
        sorted((k, int(v.shape[0])) for k, v in features.items()),
        sorted((k, int(v.shape[0])) for k, v in present.items()),
        sorted((k, int(v.shape[0])) for k, v in reference.items()),
    )
    layouts: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(layouts, layout)
    if any(other != layout for other in layouts):
        raise RuntimeError(f"ranks disagree on views or local batch sizes (view, rows) to gather: {layouts}")
    # Gloo has no bf16/bool collectives everywhere: features go as float32 (the loss runs in fp32), masks as uint8.
    all_features = {k: gather_tensor(features[k].float(), with_grad=gather_with_grad) for k, _ in layout[0]}
    all_present = {k: gather_tensor(present[k].to(torch.uint8), with_grad=False).bool() for k, _ in layout[1]}
    all_reference = {k: gather_tensor(reference[k].detach().float(), with_grad=False) for k, _ in layout[2]}
    return all_features, all_present, all_reference
