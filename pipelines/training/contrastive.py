"""The contrastive training run (``train-more``, ``train-speech``, and retraining after unlearning):
data, model, the :class:`ContrastiveTask` through the one loop, validation, checkpoints and resume."""

from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as torch_dist
from torch import nn

from encoders import ContrastiveObjective, MultimodalModel
from pipelines.data import registry
from pipelines.data.augment import step_generator
from pipelines.data.dataset import StudyDataset, augment_studies, collate_studies
from pipelines.errors import StageError
from pipelines.training.checkpoint import atomic_torch_save, rng_state, set_rng_state, trainable_state
from pipelines.training.config import TrainConfig, TrainingSettings, check_config
from pipelines.training.distributed import DistInfo, init_distributed, resolve_device
from pipelines.training.embedding import ViewEncoder, max_speech_samples, move_batch
from pipelines.training.loop import (
    Callback,
    Engine,
    LoopSettings,
    LoopState,
    StepOutput,
    StepSource,
    Task,
    fit,
    optimizer_name,
)
from pipelines.training.objective import build_objective
from pipelines.training.precision import resolve_precision
from pipelines.training.references import ReferenceCache, build_reference_cache
from pipelines.training.schedule import epoch_batches
from pipelines.training.validation import validate


class ContrastiveTask(Task):
    """CLIP / CWCL / DCL over the configured view pairs: the loss of the whole accumulated batch."""

    def __init__(self, objective: ContrastiveObjective, references: ReferenceCache | None) -> None:
        self.objective = objective
        self.references = references

    def targets(self, batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
        refs = self.references(batch, device) if self.references is not None else {}
        return super().targets(batch, device) | {"reference": refs}

    def loss(self, outputs: dict[str, Any], targets: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        features = outputs["features"]
        present = {view: targets["present"][view] for view in features}
        loss, parts = self.objective(features, present, outputs["logit_scale"], targets["reference"] or None)
        return loss, {f"loss.{name}": value for name, value in parts.items()}


class StudyBatches(StepSource):
    """Seeded epochs of a study dataset, ``accumulation_steps`` micro-batches per step, each collated,
    moved to the device and augmented from the step's own generator (so a resumed run draws the same)."""

    def __init__(
        self,
        dataset: StudyDataset,
        cfg: TrainingSettings,
        device: torch.device,
        dist: DistInfo,
        sample_rates: Mapping[str, float],
        rows: list[int] | None = None,
        seed: int | None = None,
    ) -> None:
        self.dataset, self.cfg, self.device, self.dist = dataset, cfg, device, dist
        self.sample_rates = sample_rates
        self.rows = rows if rows is not None else list(range(len(dataset)))
        self.seed = cfg.seed if seed is None else seed
        self.epochs = cfg.epochs
        self.accumulation = cfg.optim.accumulation_steps
        self._batches: dict[int, list[list[int]]] = {}

    def batches(self, epoch: int) -> list[list[int]]:
        if epoch not in self._batches:
            order = epoch_batches(len(self.rows), self.cfg.batch_size, self.seed, epoch, self.dist)
            self._batches = {epoch: [[self.rows[i] for i in batch] for batch in order]}
        return self._batches[epoch]

    def positions(self, epoch: int) -> list[int]:
        usable = (len(self.batches(epoch)) // self.accumulation) * self.accumulation
        return list(range(0, usable, self.accumulation))

    def items(self, epoch: int, position: int, micro: int) -> list[dict[str, Any]]:
        return [self.dataset[i] for i in self.batches(epoch)[position + micro]]

    def micro_batches(self, epoch: int, position: int) -> list[dict[str, Any]]:
        generator = step_generator(self.seed, epoch, position)
        out = []
        for micro in range(self.accumulation):
            batch = move_batch(
                collate_studies(self.items(epoch, position, micro), self.cfg.views), self.device
            )
            out.append(augment_studies(batch, self.cfg.views, self.cfg.augment, generator, self.sample_rates))
        return out


@dataclasses.dataclass
class TrainResult:
    model: MultimodalModel
    best_metrics: dict[str, float]
    steps: int
    samples_per_s: float
    checkpoint_dir: Path
    model_dir: Path
    last_state: dict[str, torch.Tensor]
    precision: str  # what precision=auto resolved to on this device
    optimizer: str  # "AdamW (fused)" or "AdamW (foreach)": what optim.fused resolved to


class CheckpointAndValidate(Callback):
    """``last.pt`` every ``checkpoint_every`` steps and after each epoch (what ``resume`` continues
    from); validation R@1 after each epoch, ``best.pt`` when it improves."""

    def __init__(
        self,
        cfg: TrainConfig,
        model: MultimodalModel,
        engine: Engine,
        val_set: StudyDataset,
        tracker: Any | None,
    ) -> None:
        self.cfg, self.model, self.engine, self.val_set, self.tracker = cfg, model, engine, val_set, tracker
        self.dir = Path(cfg.checkpoint_dir)
        self.last_path, self.best_path = self.dir / "last.pt", self.dir / "best.pt"
        self.best: dict[str, float] = {"val.mean_r@1": -1.0}

    def resume(self) -> LoopState:
        # Rank 0 alone writes checkpoints, maybe on its own node's disk: every rank resumes from the
        # checkpoint rank 0 reads, sent over the process group, so all continue from one step and state.
        state = None
        if self.cfg.resume and self.engine.dist.is_main and self.last_path.is_file():
            state = torch.load(self.last_path, map_location="cpu", weights_only=False)
        if self.engine.dist.world_size > 1:
            shared = [state]
            torch_dist.broadcast_object_list(shared, src=0)
            state = shared[0]
        if state is None:
            if self.cfg.resume and self.engine.dist.is_main:
                print(f"resume=true but no checkpoint at {self.last_path}: starting from scratch")
            return LoopState()
        self.model.load_state_dict(state["model"], strict=False)
        self.engine.load_state_dict(state)
        set_rng_state(state["rng"])
        self.best = state["best"]
        if self.engine.dist.is_main:
            print(
                f"resuming from {self.last_path}: step {state['step']}, epoch {state['epoch']}, batch {state['batch']}"
            )
        return LoopState(step=state["step"], epoch=state["epoch"], position=state["batch"])

    def save(self, state: LoopState, epoch: int, position: int) -> None:
        if not self.engine.dist.is_main:
            return
        atomic_torch_save(
            {
                "model": trainable_state(self.model),
                **self.engine.state_dict(),
                "rng": rng_state(),
                "step": state.step,
                "epoch": epoch,
                "batch": position,
                "best": self.best,
                "config": dataclasses.asdict(self.cfg),
            },
            self.last_path,
        )

    def after_step(self, state: LoopState, output: StepOutput) -> None:
        if self.cfg.checkpoint_every and state.step % self.cfg.checkpoint_every == 0:
            self.save(state, state.epoch, state.position)

    def after_epoch(self, state: LoopState, epoch: int) -> None:
        if self.engine.dist.is_main:
            metrics = validate(self.model, self.val_set, self.cfg, self.engine.device)
            metrics["epoch"] = float(epoch + 1)
            if self.tracker is not None:
                self.tracker.log_metrics(metrics, state.step)
            shown = {
                k: round(v, 3) for k, v in metrics.items() if k.startswith("val.r@1") or k == "val.mean_r@1"
            }
            print(f"epoch {epoch + 1}: {shown}")
            if metrics["val.mean_r@1"] > self.best["val.mean_r@1"]:
                self.best = metrics
                atomic_torch_save(
                    {"model": trainable_state(self.model), "step": state.step, "metrics": metrics},
                    self.best_path,
                )
        self.save(state, epoch + 1, 0)
        if self.engine.dist.world_size > 1:
            torch_dist.barrier()


def _log_trainable(model: MultimodalModel, tracker: Any | None) -> None:
    report = model.trainable_report()
    for tower, counts in report.items():
        print(f"tower {tower}: {counts['trainable']:,} trainable / {counts['total']:,} parameters")
    if tracker is not None:
        tracker.log_metrics({f"params.{t}.{k}": float(v) for t, c in report.items() for k, v in c.items()}, 0)


def train(cfg: TrainConfig, tracker: Any | None = None) -> TrainResult:
    """Train contrastively; ``tracker`` (optional) gets ``log_metrics(dict, step)`` (MLflow in the stage)."""
    check_config(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device, int(os.environ.get("LOCAL_RANK", "0")))
    dist = init_distributed(device)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    max_speech = max_speech_samples(cfg.data_root, cfg.max_speech_s)
    train_set = StudyDataset(cfg.data_root, "train", cfg.views, key=cfg.key, max_speech_samples=max_speech)
    val_set = StudyDataset(cfg.data_root, "val", cfg.views, key=cfg.key, max_speech_samples=max_speech)

    model = MultimodalModel(cfg.model).to(device)
    encoder: nn.Module = ViewEncoder(model, cfg.views)
    if dist.world_size > 1:
        if device.type == "cuda":  # batch norm (ResNet X-ray tower) sees the global batch, as the loss does
            encoder = nn.SyncBatchNorm.convert_sync_batchnorm(encoder)
        encoder = nn.parallel.DistributedDataParallel(
            encoder, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
        )
    if cfg.compile:
        encoder = torch.compile(encoder)
    task = ContrastiveTask(
        build_objective(cfg.objective, distributed=dist.world_size > 1),
        build_reference_cache(model, cfg, train_set),
    )
    source = StudyBatches(train_set, cfg, device, dist, registry.sample_rates(cfg.data_root))
    if not source.batches(0):
        raise StageError(
            f"training split has {len(train_set)} studies: too few for batch_size={cfg.batch_size}"
        )
    steps_per_epoch = max(1, len(source.batches(0)) // cfg.optim.accumulation_steps)
    engine = Engine(
        model, encoder, cfg.optim, cfg.max_steps or steps_per_epoch * cfg.epochs, device, cfg.precision, dist
    )
    checkpoints = CheckpointAndValidate(cfg, model, engine, val_set, tracker)
    state = checkpoints.resume()
    if dist.is_main:
        _log_trainable(model, tracker)
        print(
            f"precision: {resolve_precision(cfg.precision, device)} ({cfg.precision}) on {device}; "
            f"{optimizer_name(engine.optimizer)}"
        )
    settings = LoopSettings(log_every=cfg.log_every, description="epoch")
    state = fit(engine, task, source, state, [checkpoints], tracker if dist.is_main else None, settings)

    last_state = trainable_state(model)
    if checkpoints.best_path.is_file():
        best = torch.load(checkpoints.best_path, map_location="cpu", weights_only=False)
        model.load_state_dict(best["model"], strict=False)
    model_dir = checkpoints.dir / "model"
    if dist.is_main:
        model.save_pretrained(model_dir)
    return TrainResult(
        model=model,
        best_metrics=checkpoints.best,
        steps=state.step,
        samples_per_s=state.samples_per_s,
        checkpoint_dir=checkpoints.dir,
        model_dir=model_dir,
        last_state=last_state,
        precision=resolve_precision(cfg.precision, device),
        optimizer=optimizer_name(engine.optimizer),
    )
