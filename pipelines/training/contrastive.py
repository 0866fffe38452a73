"""The contrastive training run: data, model, optimiser, the loop, validation and checkpoints."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as torch_dist
from torch import nn
from tqdm import tqdm

from encoders import MultimodalModel
from pipelines.data.augment import step_generator
from pipelines.data.dataset import StudyDataset, collate_studies, read_normalisation
from pipelines.errors import StageError
from pipelines.training.checkpoint import atomic_torch_save, rng_state, set_rng_state, trainable_state
from pipelines.training.config import TrainConfig, check_config
from pipelines.training.distributed import init_distributed, resolve_device
from pipelines.training.embedding import SPEECH_FS_HZ, ViewEncoder, augment_batch, move_batch
from pipelines.training.objective import build_objective, compute_loss
from pipelines.training.precision import autocast_context
from pipelines.training.references import build_reference_cache
from pipelines.training.schedule import cosine_with_warmup, epoch_batches
from pipelines.training.validation import validate


@dataclasses.dataclass
class TrainResult:
    model: MultimodalModel
    best_metrics: dict[str, float]
    steps: int
    samples_per_s: float
    checkpoint_dir: Path
    model_dir: Path
    last_state: dict[str, torch.Tensor]


def train(cfg: TrainConfig, tracker: Any | None = None) -> TrainResult:
    """The training loop. ``tracker`` (optional) gets ``log_metrics(dict, step)``; MLflow in ``run``."""
    check_config(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device, int(os.environ.get("LOCAL_RANK", "0")))
    dist = init_distributed(device)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    views = cfg.views
    max_speech = int(cfg.max_speech_s * SPEECH_FS_HZ)
    train_set = StudyDataset(cfg.data_root, "train", views, key=cfg.key, max_speech_samples=max_speech)
    val_set = StudyDataset(cfg.data_root, "val", views, key=cfg.key, max_speech_samples=max_speech)
    ecg_fs = (
        float(read_normalisation(cfg.data_root, "ecg").get("fs_hz", 500))
        if "ecg" in cfg.model.towers
        else 500.0
    )

    model = MultimodalModel(cfg.model).to(device)
    encoder: nn.Module = ViewEncoder(model, cfg.views)
    if dist.world_size > 1:
        encoder = nn.parallel.DistributedDataParallel(
            encoder, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
        )
    if cfg.compile:
        encoder = torch.compile(encoder)
    objective = build_objective(cfg.objective, distributed=dist.world_size > 1)
    references = build_reference_cache(model, cfg, train_set)
    optimizer = torch.optim.AdamW(
        model.param_groups(cfg.optim.weight_decay),
        lr=cfg.optim.lr,
        betas=tuple(cfg.optim.betas),
        eps=cfg.optim.eps,
    )
    batches_per_epoch = len(epoch_batches(len(train_set), cfg.batch_size, cfg.seed, 0, dist))
    if batches_per_epoch == 0:
        raise StageError(
            f"training split has {len(train_set)} studies: too few for batch_size={cfg.batch_size}"
        )
    steps_per_epoch = max(1, batches_per_epoch // cfg.optim.accumulation_steps)
    total_steps = cfg.max_steps or steps_per_epoch * cfg.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: cosine_with_warmup(s, cfg.optim.warmup_steps, total_steps, cfg.optim.min_lr_ratio),
    )
    use_scaler = device.type == "cuda" and cfg.precision == "fp16"
    scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)

    ckpt_dir = Path(cfg.checkpoint_dir)
    last_path, best_path = ckpt_dir / "last.pt", ckpt_dir / "best.pt"
    step, start_epoch, start_batch = 0, 0, 0
    best: dict[str, float] = {"val.mean_r@1": -1.0}
    if cfg.resume and last_path.is_file():
        state = torch.load(last_path, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        step, start_epoch, start_batch = state["step"], state["epoch"], state["batch"]
        best = state["best"]
        if dist.is_main:
            print(f"resuming from {last_path}: step {step}, epoch {start_epoch}, batch {start_batch}")
    elif cfg.resume and dist.is_main:
        print(f"resume=true but no checkpoint at {last_path}: starting from scratch")

    def save_checkpoint(path: Path, epoch: int, batch: int) -> None:
        if not dist.is_main:
            return
        atomic_torch_save(
            {
                "model": trainable_state(model),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "rng": rng_state(),
                "step": step,
                "epoch": epoch,
                "batch": batch,
                "best": best,
                "config": dataclasses.asdict(cfg),
            },
            path,
        )

    if dist.is_main:
        for tower, counts in model.trainable_report().items():
            print(f"tower {tower}: {counts['trainable']:,} trainable / {counts['total']:,} parameters")
        if tracker is not None:
            tracker.log_metrics(
                {
                    f"params.{t}.{k}": float(v)
                    for t, c in model.trainable_report().items()
                    for k, v in c.items()
                },
                0,
            )

    model.train()
    samples_seen, train_time = 0, 0.0
    done = step >= total_steps
    accum = cfg.optim.accumulation_steps
    for epoch in range(start_epoch, cfg.epochs):
        if done:
            break
        batches = epoch_batches(len(train_set), cfg.batch_size, cfg.seed, epoch, dist)
        usable = (len(batches) // accum) * accum
        first = start_batch if epoch == start_epoch else 0
        progress = tqdm(
            range(first, usable, accum),
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            disable=not dist.is_main,
            unit="step",
            dynamic_ncols=True,
        )
        for b in progress:
            tick = time.perf_counter()
            generator = step_generator(cfg.seed, epoch, b)
            optimizer.zero_grad(set_to_none=True)
            loss_value, parts_total = 0.0, {}
            for micro in range(accum):
                items = [train_set[i] for i in batches[b + micro]]
                batch = move_batch(collate_studies(items, views), device)
                batch = augment_batch(batch, cfg.views, cfg.augment, generator, ecg_fs)
                sync = contextlib.nullcontext()
                if dist.world_size > 1 and micro < accum - 1:
                    sync = encoder.no_sync()
                with sync, autocast_context(device, cfg.precision):
                    loss, parts = compute_loss(encoder, objective, batch, references)
                scaler.scale(loss / accum).backward()
                loss_value += float(loss.detach()) / accum
                for k, v in parts.items():
                    parts_total[k] = parts_total.get(k, 0.0) + float(v) / accum
                samples_seen += len(items) * dist.world_size
            if not math.isfinite(loss_value):
                raise StageError(f"loss became {loss_value} at step {step}: lower optim.lr or check the data")
            scaler.unscale_(optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.max_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            model.clamp_logit_scale()
            step += 1
            train_time += time.perf_counter() - tick
            throughput = samples_seen / max(train_time, 1e-9)
            progress.set_postfix(loss=f"{loss_value:.3f}", sps=f"{throughput:.1f}")
            if dist.is_main and tracker is not None and (step % cfg.log_every == 0 or step == 1):
                metrics = {
                    "train.loss": loss_value,
                    "train.lr": scheduler.get_last_lr()[0],
                    "train.grad_norm": float(grad_norm),
                    "train.logit_scale": float(model.logit_scale.detach().exp()),
                    "train.samples_per_s": throughput,
                }
                metrics.update({f"train.loss.{k}": v for k, v in parts_total.items()})
                tracker.log_metrics(metrics, step)
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                next_epoch, next_batch = (epoch, b + accum) if b + accum < usable else (epoch + 1, 0)
                save_checkpoint(last_path, next_epoch, next_batch)
            if step >= total_steps:
                done = True
                break
        if dist.is_main:
            metrics = validate(model, val_set, cfg, device)
            metrics["epoch"] = float(epoch + 1)
            if tracker is not None:
                tracker.log_metrics(metrics, step)
            shown = {
                k: round(v, 3) for k, v in metrics.items() if k.startswith("val.r@1") or k == "val.mean_r@1"
            }
            print(f"epoch {epoch + 1}: {shown}")
            if metrics["val.mean_r@1"] > best["val.mean_r@1"]:
                best = metrics
                atomic_torch_save(
                    {"model": trainable_state(model), "step": step, "metrics": metrics}, best_path
                )
        save_checkpoint(last_path, epoch + 1, 0)
        if dist.world_size > 1:
            torch_dist.barrier()

    last_state = trainable_state(model)
    if best_path.is_file():
        model.load_state_dict(
            torch.load(best_path, map_location="cpu", weights_only=False)["model"], strict=False
        )
    model_dir = ckpt_dir / "model"
    if dist.is_main:
        model.save_pretrained(model_dir)
    return TrainResult(
        model=model,
        best_metrics=best,
        steps=step,
        samples_per_s=samples_seen / max(train_time, 1e-9),
        checkpoint_dir=ckpt_dir,
        model_dir=model_dir,
        last_state=last_state,
    )
