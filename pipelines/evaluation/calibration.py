"""Calibration of zero-shot probabilities: reliability diagram bins, expected calibration error, and
temperature scaling fitted on the validation split (Guo et al. 2017, "On Calibration of Modern
Neural Networks"). Pure functions: arrays in, numbers out.

A binary pos/neg prompt-pair logit ``s x.(t+ - t-)`` also carries an offset that has nothing to do with
the finding (the mean image embedding's projection on ``t+ - t-``: on the demo every film scored
``P(effusion) > 0.5``). Temperature alone can only remove an offset by flattening every score, which is
why a weakly informative finding drives ``T`` to its bound. :func:`fit_temperature_bias` fits
``sigmoid(z / T + b)`` instead (Platt 1999, with the slope kept positive, ``1 / T``): the ranking is the
prompts' and never flips, and a finding the prompts do not separate on validation ends at its
validation prevalence, not at 0.5.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch


@dataclasses.dataclass
class ReliabilityBins:
    """Equal-width bins over [0, 1] of the predicted probability of the positive class.

    ``confidence[b]`` is the mean predicted probability in bin ``b`` and ``frequency[b]`` the observed
    fraction of positives there (NaN for empty bins); a calibrated model has them equal.
    """

    edges: np.ndarray
    count: np.ndarray
    confidence: np.ndarray
    frequency: np.ndarray

    @property
    def ece(self) -> float:
        """ECE = sum_b (n_b / N) |frequency_b - confidence_b| (Naeini et al. 2015; Guo et al. 2017, eq. 3)."""
        n = self.count.sum()
        if n == 0:
            return math.nan
        filled = self.count > 0
        gaps = np.abs(self.frequency[filled] - self.confidence[filled])
        return float(np.sum(self.count[filled] / n * gaps))

    def as_dict(self) -> dict[str, list[float]]:
        return {k: np.asarray(v).tolist() for k, v in dataclasses.asdict(self).items()}


def reliability_bins(y_true: np.ndarray, prob: np.ndarray, n_bins: int = 10) -> ReliabilityBins:
    """Bin binary outcomes by predicted probability; bin ``b`` is ``[b/n, (b+1)/n)``, the last one closed."""
    y = np.asarray(y_true, dtype=float).ravel()
    p = np.asarray(prob, dtype=float).ravel()
    if y.shape != p.shape:
        raise ValueError(f"{y.size} labels for {p.size} probabilities")
    if p.size and (p.min() < 0 or p.max() > 1):
        raise ValueError("probabilities must lie in [0, 1]")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1], right=False), 0, n_bins - 1)
    count = np.bincount(which, minlength=n_bins).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.bincount(which, weights=p, minlength=n_bins) / count
        frequency = np.bincount(which, weights=y, minlength=n_bins) / count
    return ReliabilityBins(edges, count.astype(int), confidence, frequency)


def expected_calibration_error(y_true: np.ndarray, prob: np.ndarray, n_bins: int = 10) -> float:
    return reliability_bins(y_true, prob, n_bins).ece


T_MIN, T_MAX = 1e-2, 1e2


def fit_temperature(logits: np.ndarray, targets: np.ndarray, max_iter: int = 100) -> float:
    """Temperature ``T > 0`` minimising the validation negative log-likelihood of ``logits / T``.

    ``logits`` ``[N]`` with binary ``targets`` (sigmoid; for a pos/neg prompt pair the logit is the
    scaled similarity difference) or ``[N, C]`` with class indices (softmax). Optimised over ``log T``
    with L-BFGS (as in Guo et al. 2017's reference code), so ``T`` stays positive. Returns 1.0 when
    there is nothing to fit (no samples, or a single class in the binary case).
    """
    z = torch.as_tensor(np.asarray(logits, dtype=np.float64))
    t = torch.as_tensor(np.asarray(targets))
    if z.numel() == 0:
        return 1.0
    binary = z.ndim == 1
    if binary:
        t = t.to(torch.float64)
        if bool((t == t[0]).all()):
            return 1.0
        loss_fn = torch.nn.functional.binary_cross_entropy_with_logits
    else:
        t = t.to(torch.long)
        loss_fn = torch.nn.functional.cross_entropy
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = loss_fn(z / log_t.exp(), t)
        loss.backward()
        return loss

    optimizer.step(closure)
    # Bound T: with separable validation data the NLL keeps falling as T -> 0.
    return float(log_t.detach().exp().clamp(T_MIN, T_MAX))


def fit_temperature_bias(logits: np.ndarray, targets: np.ndarray, max_iter: int = 100) -> tuple[float, float]:
    """``(T, b)`` minimising the validation NLL of ``sigmoid(logits / T + b)`` for binary ``targets``.

    Platt scaling (Platt 1999) with the slope written as ``1 / T``, ``T`` in ``[T_MIN, T_MAX]``: the
    slope stays positive, so calibration never reverses the ranking the prompts give. Where ``T`` ends
    at a bound, ``b`` is refitted at that ``T``; at ``T_MAX`` (the logits carry no positive information
    on validation) the probabilities are close to the validation prevalence. ``(1.0, 0.0)`` when there
    is nothing to fit (no samples, or a single class).

    The targets are Platt's (1999, section 2.2) ``(N+ + 1) / (N+ + 2)`` and ``1 / (N- + 2)`` instead of 1
    and 0: on a small validation split that the logits separate (one positive, say) the 0/1 targets
    have no finite optimum and would send ``T`` to its lower bound and ``b`` far out.
    """
    z = torch.as_tensor(np.asarray(logits, dtype=np.float64)).ravel()
    y = torch.as_tensor(np.asarray(targets, dtype=np.float64)).ravel()
    if z.numel() == 0 or bool((y == y[0]).all()):
        return 1.0, 0.0
    n_pos = float(y.sum())
    n_neg = float(y.numel()) - n_pos
    y = torch.where(y > 0.5, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    loss_fn = torch.nn.functional.binary_cross_entropy_with_logits

    def fit(log_t: torch.Tensor, bias: torch.Tensor, params: list[torch.Tensor]) -> None:
        optimizer = torch.optim.LBFGS(params, lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = loss_fn(z / log_t.exp() + bias, y)
            loss.backward()
            return loss

        optimizer.step(closure)

    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    fit(log_t, bias, [log_t, bias])
    t = float(log_t.detach().exp().clamp(T_MIN, T_MAX))
    if t != float(log_t.detach().exp()):
        fixed = torch.tensor([np.log(t)], dtype=torch.float64)
        fit(fixed, bias, [bias])
    return t, float(bias.detach())


def apply_temperature(logits: np.ndarray, temperature: float, bias: float = 0.0) -> np.ndarray:
    """Probabilities from temperature-scaled logits: ``sigmoid(z / T + b)`` for ``[N]``, softmax for
    ``[N, C]`` (where a bias shared by every class would change nothing, so it must be 0)."""
    z = torch.as_tensor(np.asarray(logits, dtype=np.float64)) / temperature
    if z.ndim != 1 and bias:
        raise ValueError("a bias applies to binary logits [N] only")
    prob = torch.sigmoid(z + bias) if z.ndim == 1 else torch.softmax(z, dim=-1)
    return prob.numpy()
