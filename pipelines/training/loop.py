"""The one optimisation loop: every training variant (contrastive training, each continual-learning
method, each unlearning method) runs through :func:`fit` and differs only in its :class:`Task`.

One step (after open_clip's ``train_one_epoch``, read, not copied):

1. with ``accumulation_steps = k > 1``, every micro-batch is first encoded without gradients and its
   outputs cached (open_clip's ``accum_freq``);
2. each micro-batch is encoded again with gradients, its outputs replace its slice of the cached ones,
   and the task's loss is computed over the whole accumulated batch, so a contrastive loss sees all
   ``k * B`` negatives; backward runs under DDP ``no_sync`` for all but the last micro-batch. The
   logit scale enters the loss of every pass; its gradient is kept from the last pass only, so the
   accumulated gradients equal those of one batch of ``k * B``. The torch RNG is replayed so that
   dropout draws the same masks in the cached and the gradient pass;
3. the loss must be finite (else the run stops with a readable error), gradients are unscaled (fp16
   runs use a ``GradScaler``), clipped, the optimiser and the LR schedule step, and the logit scale is
   clamped at ln 100.

Mixed precision is bf16 autocast (fp16 with a scaler on CUDA) around the forward and the loss;
master weights stay fp32. Callbacks add what a variant needs around the steps: checkpoints and
validation (training), task bookkeeping (continual), forgetting checks with early stop (unlearning).
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from encoders import MultimodalModel
from pipelines.errors import StageError
from pipelines.training.config import OptimConfig
from pipelines.training.distributed import DistInfo
from pipelines.training.precision import autocast_context
from pipelines.training.schedule import cosine_with_warmup


class Task(abc.ABC):
    """A training variant: what one step computes from a batch (open_clip's ``training_forward``).

    ``forward`` is the part that runs per micro-batch and is cached across them (per-sample outputs,
    concatenated along the batch; 0-d tensors such as the logit scale are shared); ``targets`` are the
    batch's non-learned loss inputs (presence masks, CWCL reference features), also concatenated;
    ``loss`` sees the whole accumulated batch; ``regularisers`` are terms computed once per step
    (distillation on reference data, L2 pull to the starting weights).
    """

    metric_prefix = "train"

    def forward(self, encoder: nn.Module, batch: dict[str, Any]) -> dict[str, Any]:
        features, logit_scale = encoder(batch)
        return {"features": features, "logit_scale": logit_scale}

    def targets(self, batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
        return {"present": {view: mask for view, mask in batch["present"].items()}}

    @abc.abstractmethod
    def loss(
        self, outputs: dict[str, Any], targets: dict[str, Any]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        """The step's loss and its named parts (tensors or plain diagnostics) for the tracker."""

    def regularisers(
        self, model: MultimodalModel, batches: Sequence[dict[str, Any]]
    ) -> dict[str, torch.Tensor]:
        return {}


def concat_batches(parts: Sequence[Any], shared: int = 0) -> Any:
    """Outputs or targets of several micro-batches as one batch: tensors concatenated along dim 0, 0-d
    tensors (the logit scale) taken from ``parts[shared]``, mappings key by key, lists joined."""
    first = parts[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(list(parts)) if first.dim() else parts[shared]
    if isinstance(first, dict):
        return {key: concat_batches([p[key] for p in parts], shared) for key in first}
    if isinstance(first, list):
        return [x for p in parts for x in p]
    return parts[shared]


def _detach_scalars(outputs: Any) -> Any:
    """0-d outputs (the logit scale) without gradient: their gradient is taken in one pass only."""
    if isinstance(outputs, torch.Tensor):
        return outputs.detach() if outputs.dim() == 0 else outputs
    if isinstance(outputs, dict):
        return {key: _detach_scalars(value) for key, value in outputs.items()}
    return outputs


class _RngReplay:
    """Torch RNG states before each cached forward, restored before its gradient forward (dropout)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.device = device
        self.states: list[tuple[torch.Tensor, torch.Tensor | None]] = []

    def _state(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        return torch.get_rng_state(), torch.cuda.get_rng_state(self.device) if self.cuda else None

    def _set(self, state: tuple[torch.Tensor, torch.Tensor | None]) -> None:
        torch.set_rng_state(state[0])
        if state[1] is not None:
            torch.cuda.set_rng_state(state[1], self.device)

    def record(self) -> None:
        self.states.append(self._state())

    @contextlib.contextmanager
    def replay(self, index: int) -> Iterator[None]:
        after = self._state()
        self._set(self.states[index])
        try:
            yield
        finally:
            self._set(after)


@dataclasses.dataclass
class StepOutput:
    loss: float
    parts: dict[str, float]
    grad_norm: float


_FUSED_DEVICES = ("cpu", "cuda")


def optimizer_name(optimizer: torch.optim.Optimizer) -> str:
    """``AdamW (fused)`` / ``AdamW (foreach)``: the optimiser and its kernel, as runs log it."""
    kernel = "fused" if optimizer.defaults.get("fused") else "foreach"
    return f"{type(optimizer).__name__} ({kernel})"


def fused_adamw_available(params: list[torch.Tensor]) -> bool:
    """Whether torch's fused AdamW runs on these parameters: floating point, all on a CPU or CUDA device."""
    devices = {p.device.type for p in params}
    return (
        bool(params)
        and devices <= set(_FUSED_DEVICES)
        and len(devices) == 1
        and all(p.is_floating_point() for p in params)
    )


def build_optimizer(model: MultimodalModel, optim: OptimConfig) -> torch.optim.AdamW:
    """The AdamW of every training task: decoupled weight decay on matrices only (``param_groups``).

    ``optim.fused`` picks torch's fused kernel, which updates every parameter in one pass (the
    default ``foreach`` path launches a dozen tensor ops per step over all parameters): on a CPU it
    made the training step at open_clip's sizes ~1.45x faster (``make bench-train-step``). Same
    update rule; results differ from the unfused path in the last bits only.
    """
    groups = model.param_groups(optim.weight_decay)
    params = [p for group in groups for p in group["params"]]
    available = fused_adamw_available(params)
    if optim.fused == "on" and not available:
        raise ValueError(
            f"optim.fused=on, but torch has no fused AdamW for parameters on "
            f"{sorted({p.device.type for p in params})}; use optim.fused=auto"
        )
    fused = optim.fused == "on" or (optim.fused == "auto" and available)
    return torch.optim.AdamW(
        groups, lr=optim.lr, betas=tuple(optim.betas), eps=optim.eps, fused=fused or None
    )


class Engine:
    """Optimiser, LR schedule, grad scaler and precision of one run, and the step they make."""

    def __init__(
        self,
        model: MultimodalModel,
        encoder: nn.Module,
        optim: OptimConfig,
        total_steps: int,
        device: torch.device,
        precision: str,
        dist: DistInfo | None = None,
    ) -> None:
        self.model, self.encoder, self.optim = model, encoder, optim
        self.device, self.precision = device, precision
        self.dist = dist or DistInfo()
        self.total_steps = total_steps
        self.optimizer = build_optimizer(model, optim)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda s: cosine_with_warmup(s, optim.warmup_steps, total_steps, optim.min_lr_ratio),
        )
        self.scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda" and precision == "fp16")

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])

    def _no_sync(self, last: bool) -> contextlib.AbstractContextManager:
        if self.dist.world_size > 1 and not last and hasattr(self.encoder, "no_sync"):
            return self.encoder.no_sync()
        return contextlib.nullcontext()

    def backward(self, task: Task, batches: Sequence[dict[str, Any]]) -> tuple[torch.Tensor, dict[str, Any]]:
        """Gradients of the task's loss over the accumulated ``batches`` (see the module docstring)."""
        k = len(batches)
        with torch.no_grad(), autocast_context(self.device, self.precision):
            targets = concat_batches([task.targets(b, self.device) for b in batches])
        cached: list[dict[str, Any]] = []
        rng = _RngReplay(self.device)
        if k > 1:
            with torch.no_grad(), autocast_context(self.device, self.precision):
                for batch in batches:
                    rng.record()
                    cached.append(task.forward(self.encoder, batch))
        for j, batch in enumerate(batches):
            last = j == k - 1
            replay = rng.replay(j) if k > 1 else contextlib.nullcontext()
            with self._no_sync(last), replay, autocast_context(self.device, self.precision):
                outputs = task.forward(self.encoder, batch)
                if k > 1:
                    if not last:
                        outputs = _detach_scalars(outputs)
                    outputs = concat_batches(cached[:j] + [outputs] + cached[j + 1 :], shared=j)
                loss, parts = task.loss(outputs, targets)
                if last:
                    extra = task.regularisers(self.model, batches)
                    parts = parts | extra
                    loss = loss + sum(extra.values()) if extra else loss
            if not math.isfinite(float(loss.detach())):
                raise StageError(
                    f"{task.metric_prefix} loss became {float(loss.detach())}: lower the learning rate or check "
                    "the data"
                )
            self.scaler.scale(loss).backward()
        return loss, parts

    def step(self, task: Task, batches: Sequence[dict[str, Any]]) -> StepOutput:
        """One optimiser step over the micro-batches ``batches``."""
        self.optimizer.zero_grad(set_to_none=True)
        loss, parts = self.backward(task, batches)
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.optim.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.model.clamp_logit_scale()
        values = {
            name: float(v.detach()) if isinstance(v, torch.Tensor) else float(v) for name, v in parts.items()
        }
        return StepOutput(float(loss.detach()), values, float(grad_norm))


@dataclasses.dataclass
class LoopState:
    """Where a run is: optimiser steps taken, and the epoch and batch position of the next step."""

    step: int = 0
    epoch: int = 0
    position: int = 0
    samples_seen: int = 0
    train_seconds: float = 0.0
    stop: bool = False

    @property
    def samples_per_s(self) -> float:
        return self.samples_seen / max(self.train_seconds, 1e-9)


class StepSource(abc.ABC):
    """The batches of a run: per epoch, the positions of its steps, and each step's micro-batches."""

    epochs: int = 1

    @abc.abstractmethod
    def positions(self, epoch: int) -> Sequence[int]:
        """Positions (batch indices) at which the epoch's steps start."""

    @abc.abstractmethod
    def micro_batches(self, epoch: int, position: int) -> list[dict[str, Any]]:
        """The collated (augmented, on-device) micro-batches of the step at ``position``."""

    def next_position(self, epoch: int, position: int) -> tuple[int, int]:
        """(epoch, position) of the step after ``position``, for checkpoints."""
        later = [p for p in self.positions(epoch) if p > position]
        return (epoch, later[0]) if later else (epoch + 1, 0)


class Callback:
    """Hooks around the steps; ``after_step`` may set ``state.stop``."""

    def after_step(self, state: LoopState, output: StepOutput) -> None:
        return None

    def after_epoch(self, state: LoopState, epoch: int) -> None:
        return None


@dataclasses.dataclass
class LoopSettings:
    log_every: int = 5
    progress: bool = True
    description: str = "epoch"


def fit(
    engine: Engine,
    task: Task,
    source: StepSource,
    state: LoopState | None = None,
    callbacks: Iterable[Callback] = (),
    tracker: Any | None = None,
    settings: LoopSettings | None = None,
) -> LoopState:
    """Optimise until ``engine.total_steps`` steps, the source's epochs, or a callback's stop."""
    state = state or LoopState()
    settings = settings or LoopSettings()
    callbacks = list(callbacks)
    model, dist = engine.model, engine.dist
    model.train()
    first_epoch, first_position = state.epoch, state.position
    for epoch in range(first_epoch, source.epochs):
        if state.step >= engine.total_steps or state.stop:
            break
        positions = [p for p in source.positions(epoch) if epoch != first_epoch or p >= first_position]
        desc = (
            f"{settings.description} {epoch + 1}/{source.epochs}"
            if source.epochs > 1
            else settings.description
        )
        bar = tqdm(
            positions,
            desc=desc,
            disable=not (dist.is_main and settings.progress),
            unit="step",
            dynamic_ncols=True,
        )
        for position in bar:
            tick = time.perf_counter()
            batches = source.micro_batches(epoch, position)
            output = engine.step(task, batches)
            state.step += 1
            state.epoch, state.position = source.next_position(epoch, position)
            state.samples_seen += sum(len(b["key"]) for b in batches) * dist.world_size
            state.train_seconds += time.perf_counter() - tick
            bar.set_postfix(loss=f"{output.loss:.3f}", sps=f"{state.samples_per_s:.1f}")
            if (
                dist.is_main
                and tracker is not None
                and (state.step % settings.log_every == 0 or state.step == 1)
            ):
                tracker.log_metrics(step_metrics(task, engine, state, output), state.step)
            for callback in callbacks:
                callback.after_step(state, output)
            if state.stop or state.step >= engine.total_steps:
                break
        bar.close()
        if state.stop:
            break
        for callback in callbacks:
            callback.after_epoch(state, epoch)
    return state


def step_metrics(task: Task, engine: Engine, state: LoopState, output: StepOutput) -> dict[str, float]:
    prefix = task.metric_prefix
    return {
        f"{prefix}.loss": output.loss,
        f"{prefix}.lr": engine.scheduler.get_last_lr()[0],
        f"{prefix}.grad_norm": output.grad_norm,
        f"{prefix}.logit_scale": float(engine.model.logit_scale.detach().exp()),
        f"{prefix}.samples_per_s": state.samples_per_s,
    } | {f"{prefix}.{name}": value for name, value in output.parts.items()}
