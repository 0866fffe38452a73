"""Explanations of zero-shot scores: gradient saliency of a finding's score with respect to the input.

The explained score is the one the zero-shot classifier thresholds: for a finding with ensembled
positive and negative prompt embeddings ``t+`` and ``t-``, the pair softmax is monotone in
``s(x) = <f(x), t+ - t->`` (``f`` = the L2-normalised tower output), so we take ``d s / d x``.

Method: SmoothGrad (Smilkov et al. 2017) over vanilla gradients (Simonyan et al. 2014): the gradient
averaged over ``n_samples`` noisy copies of the input (noise ``std = noise_level * (max - min)``),
which removes most of the high-frequency speckle of raw gradients; ``n_samples=1, noise_level=0``
is the plain gradient. Attribution is gradient x input magnitude for ECGs (so that a flat lead with a
large gradient does not look important) and gradient magnitude for images (grey level is not a
"signal amount"). Attention rollout (Abnar & Zuidema 2020) would need the ViT to return attentions,
which the model's ``encode`` does not expose; gradients work for every tower.

The model is anything with ``encode(tower, inputs, lead_mask=None) -> [B, D]`` (L2-normalised), as
``encoders.MultimodalModel``.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch

ECG_LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")


class Encoder(Protocol):
    def encode(self, tower: str, inputs: Any, lead_mask: torch.Tensor | None = None) -> torch.Tensor: ...


def input_gradient(
    model: Encoder,
    tower: str,
    inputs: torch.Tensor,
    direction: torch.Tensor | np.ndarray,
    lead_mask: torch.Tensor | None = None,
    n_samples: int = 8,
    noise_level: float = 0.1,
    seed: int = 0,
) -> torch.Tensor:
    """SmoothGrad of ``<encode(tower, x), direction>`` w.r.t. one input ``x`` (no batch dim).

    Returns a tensor shaped like ``inputs``. The model's parameters are left untouched (no
    ``.grad`` accumulates on them) and its train/eval mode is restored.
    """
    direction_t = torch.as_tensor(np.asarray(direction), dtype=torch.float32).flatten()
    x = inputs.detach().float().unsqueeze(0)
    span = float(x.max() - x.min()) or 1.0
    std = noise_level * span
    generator = torch.Generator().manual_seed(seed)
    module = model if isinstance(model, torch.nn.Module) else None
    was_training = module.training if module is not None else False
    if module is not None:
        module.eval()
    params = [p for p in module.parameters() if p.requires_grad] if module is not None else []
    for p in params:
        p.requires_grad_(False)
    try:
        total = torch.zeros_like(x)
        n = max(1, n_samples)
        for _ in range(n):
            noisy = x + std * torch.randn(x.shape, generator=generator) if std > 0 else x.clone()
            noisy.requires_grad_(True)
            mask = lead_mask.unsqueeze(0) if lead_mask is not None else None
            emb = (
                model.encode(tower, noisy, lead_mask=mask) if mask is not None else model.encode(tower, noisy)
            )
            score = (emb.float() @ direction_t.to(emb.device)).sum()
            (grad,) = torch.autograd.grad(score, noisy)
            total += grad.detach().cpu()
        return (total / n).squeeze(0)
    finally:
        for p in params:
            p.requires_grad_(True)
        if module is not None:
            module.train(was_training)


def _unit_range(x: np.ndarray) -> np.ndarray:
    lo, hi = float(x.min()), float(x.max())
    return np.zeros_like(x) if hi - lo <= 0 else (x - lo) / (hi - lo)


def xray_heatmap(
    model: Encoder,
    image: torch.Tensor,
    direction: torch.Tensor | np.ndarray,
    tower: str = "image",
    n_samples: int = 8,
    noise_level: float = 0.1,
    seed: int = 0,
) -> np.ndarray:
    """Heat map ``[H, W]`` in [0, 1] for an image ``[C, H, W]`` (or ``[H, W]``): max |gradient| over
    channels, rescaled to the unit range."""
    image = image.unsqueeze(0) if image.ndim == 2 else image
    grad = input_gradient(model, tower, image, direction, None, n_samples, noise_level, seed)
    return _unit_range(grad.abs().amax(dim=0).numpy())


def ecg_saliency(
    model: Encoder,
    signal: torch.Tensor,
    direction: torch.Tensor | np.ndarray,
    lead_mask: torch.Tensor | None = None,
    tower: str = "ecg",
    n_samples: int = 8,
    noise_level: float = 0.05,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Saliency ``[12, T]`` (|gradient x input|, unit range) and per-lead importance ``[12]`` (each
    lead's share of the total attribution, sums to 1; absent leads get 0)."""
    if lead_mask is None:
        lead_mask = torch.ones(signal.shape[0], dtype=torch.bool)
    grad = input_gradient(model, tower, signal, direction, lead_mask, n_samples, noise_level, seed)
    attribution = (grad * signal.detach().float()).abs().numpy()
    attribution[~lead_mask.numpy().astype(bool)] = 0.0
    per_lead = attribution.sum(axis=1)
    total = per_lead.sum()
    importance = per_lead / total if total > 0 else np.zeros_like(per_lead)
    return _unit_range(attribution), importance


def _xray_example(model: Any, item: dict, view: str, tower: str, direction: np.ndarray, seed: int) -> dict:
    inputs = item[view]
    heat = xray_heatmap(model, inputs, direction, tower=tower, seed=seed)
    return {"image": inputs[0].numpy(), "heatmap": heat}


def _ecg_example(model: Any, item: dict, view: str, tower: str, direction: np.ndarray, seed: int) -> dict:
    inputs, mask = item[view], item.get(f"{view}_lead_mask")
    saliency, importance = ecg_saliency(model, inputs, direction, lead_mask=mask, tower=tower, seed=seed)
    return {"signal": inputs.numpy(), "saliency": saliency, "importance": importance}


# The explanation drawn for each modality the report shows (the report's ``explanations`` keys).
EXPLAINERS = {"xray": _xray_example, "ecg": _ecg_example}


def explanation_examples(
    model: Any,
    dataset: Any,
    views: Any,
    tasks: Any,
    directions: Any,
    n_examples: int,
    seed: int = 0,
) -> dict[str, list[dict]]:
    """Saliency for the first ``n_examples`` studies of ``dataset`` with each explained view (X-ray
    heatmaps, ECG lead saliency), for the finding scored highest. ``tasks``: name -> task config
    (``view``); ``directions``: name -> {label: embedding direction of the label's score}."""
    out: dict[str, list[dict]] = {modality: [] for modality in EXPLAINERS}
    for name, task_directions in directions.items():
        task = tasks[name]
        spec = views[task.view]
        explain = EXPLAINERS.get(spec.modality)
        if explain is None:
            continue
        done = 0
        for index in range(len(dataset)):
            if done >= n_examples:
                break
            item = dataset[index]
            inputs = item.get(task.view)
            if inputs is None:
                continue
            mask = item.get(f"{task.view}_lead_mask")
            with torch.no_grad():
                kwargs = {"lead_mask": mask.unsqueeze(0)} if mask is not None else {}
                emb = model.encode(spec.tower, inputs.unsqueeze(0), **kwargs)[0].float().numpy()
            label = max(task_directions, key=lambda k: float(emb @ task_directions[k]))
            example = explain(model, item, task.view, spec.tower, task_directions[label], seed)
            example["caption"] = f"{name}: top finding '{label}' (study {done + 1} of the test split)"
            out[spec.modality].append(example)
            done += 1
    return out
