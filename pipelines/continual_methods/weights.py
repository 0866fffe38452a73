"""Weight-space methods against forgetting: WiSE-FT ensembling and the L2 pull to the starting weights.

- WiSE-FT (Wortsman et al. 2022, "Robust fine-tuning of zero-shot models", Eq. 1):
  ``theta = (1 - alpha) * theta_0 + alpha * theta_ft``; alpha = 0 is the starting model, 1 the
  fine-tuned one. Only floating-point tensors are mixed (integer buffers are taken from theta_ft).
- L2-init / L2-SP (Li, Grandvalet & Davoine 2018, "Explicit inductive bias for transfer learning",
  Eq. 2): ``lambda/2 * ||theta - theta_0||^2`` over the trainable parameters.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn


def wise_ft(
    initial: Mapping[str, torch.Tensor], finetuned: Mapping[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """Interpolated state dict; keys of ``finetuned`` missing from ``initial`` are kept as fine-tuned."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"WiSE-FT alpha must be in [0, 1], got {alpha}")
    out = {}
    for name, value in finetuned.items():
        start = initial.get(name)
        if start is None or not value.is_floating_point():
            out[name] = value.clone()
        elif alpha == 0.0:
            out[name] = start.clone().to(value.dtype)
        elif alpha == 1.0:
            out[name] = value.clone()
        else:
            out[name] = torch.lerp(start.to(value.dtype), value, alpha)
    return out


def l2_to_initial(model: nn.Module, initial: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``1/2 sum ||theta - theta_0||^2`` over trainable parameters named in ``initial``."""
    total = None
    for name, param in model.named_parameters():
        if not param.requires_grad or name not in initial:
            continue
        term = (param - initial[name].to(param.device, param.dtype)).pow(2).sum()
        total = term if total is None else total + term
    if total is None:
        return torch.zeros((), device=next(model.parameters()).device)
    return 0.5 * total
