"""Training one task of a continual sequence: the contrastive loss on the task's studies plus the method's
parts (``replay``: rehearsed pairs in every batch and a SupCon term on them; ``distill``: ZSCL on the
reference set; ``l2``: pull to the starting weights), as a :class:`~pipelines.training.loop.Task` of the
one training loop (mixed precision, accumulation, clipping, clamp as in ``make train-morE``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from encoders import MultimodalModel
from pipelines.continual_methods.distill import DistillConfig, ReferenceSet, distillation_term
from pipelines.continual_methods.replay import ReplayBuffer, ReplayConfig, replay_items, supcon_loss
from pipelines.continual_methods.weights import l2_to_initial
from pipelines.data.augment import step_generator
from pipelines.data.dataset import StudyDataset, augment_studies, collate_studies
from pipelines.errors import StageError
from pipelines.evaluation.task_sequence import Evaluation
from pipelines.training import (
    DistInfo,
    TrainingSettings,
    ViewEncoder,
    atomic_torch_save,
    build_objective,
    move_batch,
    rng_state,
    set_rng_state,
    trainable_state,
)
from pipelines.training.contrastive import ContrastiveTask, StudyBatches
from pipelines.training.loop import Callback, Engine, LoopSettings, LoopState, StepOutput, fit
from pipelines.training.references import ReferenceCache

METHOD_PARTS = ("finetune", "replay", "distill", "wise", "l2")


def method_parts(method: str) -> set[str]:
    parts = {p.strip() for p in method.split("+") if p.strip()}
    unknown = parts - set(METHOD_PARTS)
    if not parts or unknown:
        raise StageError(
            f"method {method!r}: unknown part(s) {sorted(unknown)}; combine {list(METHOD_PARTS)} with +"
        )
    return parts


def method_slug(method: str) -> str:
    return "+".join(p for p in METHOD_PARTS if p in method_parts(method))


@dataclasses.dataclass
class MethodSettings:
    """What the method parts need besides the training settings."""

    replay: ReplayConfig
    distill: DistillConfig
    l2_weight: float


@dataclasses.dataclass
class TaskContext:
    """Everything one task's training needs besides the model."""

    train_set: StudyDataset
    index_of: dict[str, int]
    keys: list[str]
    task_index: int
    task_name: str
    parts: set[str]
    teacher: MultimodalModel | None
    reference: ReferenceSet | None
    initial: dict[str, torch.Tensor]
    buffer: ReplayBuffer | None
    sample_rates: dict[str, float]
    cwcl_references: ReferenceCache | None


class ContinualTask(ContrastiveTask):
    """The contrastive loss, SupCon on the replayed rows, and the once-per-step distillation and L2 terms."""

    def __init__(
        self,
        train: TrainingSettings,
        method: MethodSettings,
        ctx: TaskContext,
        references: ReferenceCache | None,
    ) -> None:
        super().__init__(build_objective(train.objective, distributed=False), references)
        self.train, self.method, self.ctx = train, method, ctx

    def targets(self, batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
        return super().targets(batch, device) | {"replay_labels": list(batch["replay_labels"])}

    def loss(self, outputs: dict[str, Any], targets: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        contrastive, _ = super().loss(outputs, targets)
        parts = {"contrastive": contrastive}
        labels = targets["replay_labels"]
        replayed = torch.tensor([label is not None for label in labels])
        if replayed.any() and self.method.replay.supcon_weight > 0:
            anchors, anchor_labels = [], []
            for view, feats in outputs["features"].items():
                mask = targets["present"][view].cpu() & replayed
                anchors.append(feats[mask.to(feats.device)])
                anchor_labels.extend(label for label, m in zip(labels, mask.tolist(), strict=True) if m)
            parts["supcon"] = self.method.replay.supcon_weight * supcon_loss(
                torch.cat(anchors), anchor_labels, self.method.replay.supcon_temperature
            )
        return sum(parts.values()), parts

    def regularisers(self, model: MultimodalModel, batches: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        ctx, out = self.ctx, {}
        if "distill" in ctx.parts and ctx.teacher is not None and ctx.reference is not None:
            device = next(model.parameters()).device
            out["distill"] = self.method.distill.weight * distillation_term(
                model,
                ctx.teacher,
                ctx.reference,
                self.method.distill,
                self.train.views,
                batches[0]["step_rng"],
                device,
            )
        if "l2" in ctx.parts and self.method.l2_weight > 0:
            out["l2"] = self.method.l2_weight * l2_to_initial(model, ctx.initial)
        return out


class TaskBatches(StudyBatches):
    """The task's studies in seeded epochs; with replay, rehearsed pairs appended to every micro-batch.
    One generator per step (``[task seed, epoch, batch]``) draws the replayed pairs, then the
    distillation references."""

    def __init__(
        self,
        train: TrainingSettings,
        method: MethodSettings,
        ctx: TaskContext,
        device: torch.device,
        seed: int,
    ):
        rows = [ctx.index_of[k] for k in ctx.keys]
        super().__init__(ctx.train_set, train, device, DistInfo(), ctx.sample_rates, rows=rows, seed=seed)
        self.method, self.ctx = method, ctx
        self.replaying = "replay" in ctx.parts and ctx.buffer is not None and len(ctx.buffer) > 0

    def micro_batches(self, epoch: int, position: int) -> list[dict[str, Any]]:
        rng = np.random.default_rng([self.seed, epoch, position])
        generator = step_generator(self.seed, epoch, position)
        out = []
        for micro in range(self.accumulation):
            items = self.items(epoch, position, micro)
            labels: list[str | None] = [None] * len(items)
            if self.replaying:
                sampled = self.ctx.buffer.sample(self.method.replay.batch_size, rng)
                extra, extra_labels = replay_items(self.ctx.train_set, self.ctx.index_of, sampled)
                items, labels = items + extra, labels + list(extra_labels)
            batch = move_batch(collate_studies(items, self.cfg.views), self.device)
            batch = augment_studies(batch, self.cfg.views, self.cfg.augment, generator, self.sample_rates)
            out.append(batch | {"replay_labels": labels, "step_rng": rng})
        return out


class _Means(Callback):
    """Per-task means of the loss and each part (0 for parts the method lacks)."""

    def __init__(self) -> None:
        self.totals = {"loss": 0.0, "contrastive": 0.0, "supcon": 0.0, "distill": 0.0, "l2": 0.0}
        self.steps = 0

    def after_step(self, state: LoopState, output: StepOutput) -> None:
        self.steps += 1
        self.totals["loss"] += output.loss
        for name, value in output.parts.items():
            self.totals[name] = self.totals.get(name, 0.0) + value

    def summary(self) -> dict[str, float]:
        means = {f"train.mean_{k}": v / max(self.steps, 1) for k, v in self.totals.items()}
        return means | {"train.steps": float(self.steps)}


def train_task(
    model: MultimodalModel,
    train: TrainingSettings,
    method: MethodSettings,
    ctx: TaskContext,
    device: torch.device,
    tracker: Any | None,
) -> dict[str, float]:
    """Train on one task's studies (+ replay, distillation, L2 pull as the method says); single process."""
    torch.manual_seed(train.seed * 1009 + ctx.task_index)
    task_seed = train.seed + 7919 * (ctx.task_index + 1)
    source = TaskBatches(train, method, ctx, device, task_seed)
    if not source.batches(0):
        raise StageError(
            f"task {ctx.task_name!r} has {len(ctx.keys)} training studies: too few for batch_size={train.batch_size}"
        )
    steps_per_epoch = max(1, len(source.batches(0)) // train.optim.accumulation_steps)
    total = train.max_steps or steps_per_epoch * train.epochs
    engine = Engine(model, ViewEncoder(model, train.views), train.optim, total, device, train.precision)
    means = _Means()
    settings = LoopSettings(
        log_every=train.log_every, description=f"task {ctx.task_index + 1} ({ctx.task_name})"
    )
    fit(
        engine,
        ContinualTask(train, method, ctx, ctx.cwcl_references),
        source,
        None,
        [means],
        tracker,
        settings,
    )
    return means.summary()


# --------------------------------------------------------------------------- checkpoints per task


def task_checkpoint(out_dir: Path, k: int) -> Path:
    return out_dir / f"task-{k}.pt"


def latest_checkpoint(out_dir: Path, n_tasks: int) -> tuple[int, Path | None]:
    for k in range(n_tasks, 0, -1):
        if task_checkpoint(out_dir, k).is_file():
            return k, task_checkpoint(out_dir, k)
    return 0, None


def resume_sequence(
    out_dir: Path, n_tasks: int, model: MultimodalModel, buffer: ReplayBuffer | None, slug: str
) -> tuple[int, list[Evaluation], ReplayBuffer | None]:
    """Restore the state after the last finished task: weights, buffer, evaluations so far, RNG."""
    done, path = latest_checkpoint(out_dir, n_tasks)
    if path is None:
        return 0, [], buffer
    state = torch.load(path, map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"], strict=False)
    if buffer is not None and state["buffer"] is not None:
        buffer = ReplayBuffer.from_state_dict(state["buffer"])
    set_rng_state(state["rng"])
    print(f"[{slug}] resuming after task {done} from {path}")
    return done, [Evaluation(**e) for e in state["evaluations"]], buffer


def save_task(
    out_dir: Path, k: int, model: MultimodalModel, buffer: ReplayBuffer | None, after: list[Any], method: str
) -> Path:
    """``task-<k>.pt``: what resuming after task ``k`` needs (weights, buffer, evaluations, RNG)."""
    path = task_checkpoint(out_dir, k)
    atomic_torch_save(
        {
            "model": trainable_state(model),
            "buffer": buffer.state_dict() if buffer is not None else None,
            "evaluations": [dataclasses.asdict(e) for e in after],
            "rng": rng_state(),
            "tasks_done": k,
            "method": method,
        },
        path,
    )
    return path
