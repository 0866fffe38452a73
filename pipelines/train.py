"""Train contrastive encoders: ``train-more`` (X-ray + ECG + report, MoRE-style) or ``train-speech``.

Reads the processed shards (``make preprocess``), aligns the configured views pairwise with CWCL
(or CLIP / DCL, plus optional alignment-uniformity), LoRA on the towers as configured, and tracks
everything in MLflow: the resolved config as params, data-card hashes as tags, per-step and
per-epoch metrics, the checkpoint, and the trained model registered as a new version.

Runs single-process or under ``torchrun`` (DDP, features gathered across ranks for the loss).
Checkpoints are written atomically every ``checkpoint_every`` steps; ``resume=true`` continues a
killed run and ends with the same weights as an uninterrupted one (same seed, CPU).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as torch_dist
from torch import nn
from tqdm import tqdm

from encoders import (
    ContrastiveObjective,
    MultimodalConfig,
    MultimodalModel,
    PairSpec,
    default_more_config,
    default_speech_config,
)
from pipelines.data.augment import AugmentConfig, augment_ecg, augment_speech, augment_xray, step_generator
from pipelines.data.dataset import StudyDataset, ViewSpec, collate_studies, more_views, read_normalisation
from pipelines.errors import StageError
from pipelines.evaluation.metrics import retrieval_both_directions

SPEECH_FS_HZ = 16000


@dataclasses.dataclass
class PairConfig:
    a: str
    b: str
    weights_from: str | None = None
    weight: float = 1.0


@dataclasses.dataclass
class OptimConfig:
    lr: float = 5e-4
    weight_decay: float = 0.05
    betas: list[float] = dataclasses.field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-6
    warmup_steps: int = 10
    min_lr_ratio: float = 0.05
    max_grad_norm: float = 1.0
    accumulation_steps: int = 1


@dataclasses.dataclass
class ObjectiveConfig:
    kind: Literal["cwcl", "clip", "dcl"] = "cwcl"
    direction: Literal["both", "a2b", "b2a"] = "both"
    align_uniform_weight: float = 0.0
    chunk_size: int | None = None
    local_loss: bool = False
    weight_power: float = dataclasses.field(
        default=1.0, metadata={"help": "CWCL weights w_ij ** power (1 = the paper's formula; >1 sharpens)"}
    )
    center_reference: bool = dataclasses.field(
        default=True, metadata={"help": "centre CWCL reference features on the training-text mean"}
    )
    pairs: list[PairConfig] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class TrainConfig:
    task: str = "more"
    data_root: str = "data/processed/demo"
    key: str = dataclasses.field(default="study_id", metadata={"help": "column joining views into one study"})
    views: dict[str, ViewSpec] = dataclasses.field(default_factory=dict)
    model: MultimodalConfig = dataclasses.field(default_factory=default_more_config)
    objective: ObjectiveConfig = dataclasses.field(default_factory=ObjectiveConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
    epochs: int = 8
    batch_size: int = 32
    eval_batch_size: int = 64
    max_steps: int | None = dataclasses.field(default=None, metadata={"help": "stop after this many steps"})
    num_workers: int = 0
    seed: int = 0
    device: str = dataclasses.field(default="auto", metadata={"help": "auto | cpu | cuda"})
    precision: Literal["auto", "fp32", "bf16", "fp16"] = dataclasses.field(
        default="auto", metadata={"help": "auto = bf16 autocast on GPU, fp32 on CPU"}
    )
    compile: bool = False
    checkpoint_dir: str = "checkpoints/more"
    checkpoint_every: int = 20
    resume: bool = False
    log_every: int = 5
    max_speech_s: float = 2.0
    val_distinct_texts: bool = dataclasses.field(
        default=False,
        metadata={
            "help": "validation R@1 (which picks the best checkpoint) counts identical texts as one candidate: "
            "needed when many pairs share a text (keyword and digit datasets)"
        },
    )
    tracking_uri: str | None = None
    experiment: str = "morE"
    registered_model: str = "morE-cxr-ecg-report"
    register: bool = True
    threads: int | None = dataclasses.field(
        default=None, metadata={"help": "torch CPU threads (default: all)"}
    )


def _more_objective() -> ObjectiveConfig:
    # Reports are the pretrained side (MiniLM): their intra-modal similarity gives the CWCL weights.
    # X-ray <-> ECG has no pretrained side, so that pair is plain CLIP (weights_from None).
    return ObjectiveConfig(
        pairs=[
            PairConfig("xray", "radiology_report", weights_from="radiology_report"),
            PairConfig("ecg", "cardiology_report", weights_from="cardiology_report"),
            PairConfig("xray", "ecg", weights_from=None, weight=0.5),
        ]
    )


@dataclasses.dataclass
class Config(TrainConfig):
    """X-ray + ECG + report alignment (MoRE-style)."""

    views: dict[str, ViewSpec] = dataclasses.field(default_factory=more_views)
    objective: ObjectiveConfig = dataclasses.field(default_factory=_more_objective)


@dataclasses.dataclass
class SpeechConfig(TrainConfig):
    """Speech <-> transcript alignment."""

    task: str = "speech"
    key: str = "sample_id"
    views: dict[str, ViewSpec] = dataclasses.field(
        default_factory=lambda: {
            "speech": ViewSpec(modality="speech", tower="audio"),
            "transcript": ViewSpec(modality="speech", tower="text", column="transcript"),
        }
    )
    model: MultimodalConfig = dataclasses.field(default_factory=default_speech_config)
    objective: ObjectiveConfig = dataclasses.field(
        default_factory=lambda: ObjectiveConfig(pairs=[PairConfig("speech", "transcript", "transcript")])
    )
    epochs: int = 10
    val_distinct_texts: bool = True  # commands and keywords repeat: R@1 over distinct transcripts
    checkpoint_dir: str = "checkpoints/speech"
    experiment: str = "speech"
    registered_model: str = "speech-text"


# --------------------------------------------------------------------------- distributed


@dataclasses.dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group when launched by ``torchrun`` (env RANK/WORLD_SIZE), else single-process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not torch_dist.is_initialized():
        torch_dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(
        torch_dist.get_rank(), torch_dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0"))
    )


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


# --------------------------------------------------------------------------- model step


class ViewEncoder(nn.Module):
    """Encodes every view of a batch with its tower: the unit DDP wraps (DDP hooks ``forward``)."""

    def __init__(self, model: MultimodalModel, views: dict[str, ViewSpec]) -> None:
        super().__init__()
        self.model = model
        self.views = views

    def forward(self, batch: dict[str, Any]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Features per view, and the logit scale: returned from ``forward`` so that DDP all-reduces its
        gradient like any other parameter's (used only inside the loss, it would otherwise diverge)."""
        features = {}
        for view, spec in self.views.items():
            inputs = batch.get(view)
            if inputs is None:
                continue
            tower_cfg = self.model.config.towers[spec.tower]
            if tower_cfg.kind == "ecg":
                features[view] = self.model.encode(spec.tower, inputs, lead_mask=batch[f"{view}_lead_mask"])
            elif tower_cfg.kind == "audio":
                features[view] = self.model.encode(spec.tower, inputs, lengths=batch.get(f"{view}_length"))
            elif tower_cfg.kind == "image":
                size = tower_cfg.image_size_px
                if inputs.shape[-1] != size or inputs.shape[-2] != size:
                    # Shards are stored at the preprocessing size; the tower may train at a smaller one.
                    inputs = nn.functional.interpolate(
                        inputs, size=(size, size), mode="bilinear", antialias=True
                    )
                features[view] = self.model.encode(spec.tower, inputs)
            else:
                features[view] = self.model.encode(spec.tower, inputs)
        return features, self.model.logit_scale * 1.0


def move_batch(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    def move(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return value.to(device, non_blocking=True)
        if isinstance(value, dict):
            return {k: move(v) for k, v in value.items()}
        return value

    return {k: move(v) for k, v in batch.items()}


def augment_batch(
    batch: dict[str, Any],
    views: dict[str, ViewSpec],
    cfg: AugmentConfig,
    generator: torch.Generator,
    ecg_fs_hz: float,
) -> dict[str, Any]:
    if not cfg.enabled:
        return batch
    out = dict(batch)
    for view, spec in views.items():
        if out.get(view) is None or spec.column is not None:
            continue
        if spec.modality == "xray":
            out[view] = augment_xray(out[view], cfg, generator)
        elif spec.modality == "ecg":
            out[view], out[f"{view}_lead_mask"] = augment_ecg(
                out[view], out[f"{view}_lead_mask"], ecg_fs_hz, cfg, generator
            )
        elif spec.modality == "speech":
            out[view], out[f"{view}_length"] = augment_speech(
                out[view], out[f"{view}_length"], SPEECH_FS_HZ, cfg, generator
            )
    return out


def build_objective(cfg: ObjectiveConfig, distributed: bool) -> ContrastiveObjective:
    pairs = [PairSpec(p.a, p.b, weights_from=p.weights_from, weight=p.weight) for p in cfg.pairs]
    return ContrastiveObjective(
        pairs,
        kind=cfg.kind,
        direction=cfg.direction,
        align_uniform_weight=cfg.align_uniform_weight,
        chunk_size=cfg.chunk_size,
        gather=distributed,
        local_loss=cfg.local_loss,
        cwcl_weight_power=cfg.weight_power,
    )


class ReferenceCache:
    """Frozen pretrained-side text features for the CWCL weights, computed once per distinct text.

    The reference side never changes during training (LoRA adapters disabled, or a frozen copy), so
    its features are a function of the text alone: caching them removes a text-tower forward per
    view and step. With ``center=True`` the features are centred on the mean over the texts seen
    at construction before the weights are formed: sentence embeddings are anisotropic (reports
    written from one template sit at cosine ~0.6-0.8 to each other), which makes
    ``w_ij = (1 + cos) / 2`` nearly uniform; centring keeps the formula and restores its contrast.
    """

    def __init__(
        self,
        model: MultimodalModel,
        view_towers: dict[str, str],
        texts: dict[str, list[str]],
        center: bool,
        batch_size: int = 64,
    ) -> None:
        self.model = model
        self.view_towers = view_towers
        self.features: dict[str, dict[str, torch.Tensor]] = {view: {} for view in view_towers}
        self.means: dict[str, torch.Tensor | None] = dict.fromkeys(view_towers)
        for view, view_texts in texts.items():
            self._encode(view, sorted(set(view_texts)), batch_size)
            if center and self.features[view]:
                self.means[view] = torch.stack(list(self.features[view].values())).mean(dim=0)

    @torch.no_grad()
    def _encode(self, view: str, texts: list[str], batch_size: int) -> None:
        missing = [t for t in texts if t not in self.features[view]]
        for start in range(0, len(missing), batch_size):
            chunk = missing[start : start + batch_size]
            encoded = self.model.reference_text_features(chunk, tower=self.view_towers[view]).float().cpu()
            self.features[view].update(zip(chunk, encoded, strict=True))

    def __call__(self, batch: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
        refs = {}
        for view in self.view_towers:
            texts = batch.get(view)
            if texts is None:
                continue
            self._encode(view, list(texts), batch_size=len(texts))
            ref = torch.stack([self.features[view][t] for t in texts])
            if self.means[view] is not None:
                ref = ref - self.means[view]
            refs[view] = ref.to(device)
        return refs


def build_reference_cache(
    model: MultimodalModel, cfg: TrainConfig, dataset: StudyDataset
) -> ReferenceCache | None:
    """The CWCL reference cache over the training texts of every ``weights_from`` view (None for CLIP/DCL)."""
    views = sorted({p.weights_from for p in cfg.objective.pairs if p.weights_from})
    if cfg.objective.kind != "cwcl" or not views:
        return None
    view_towers = {view: cfg.views[view].tower for view in views}
    texts = {view: dataset.texts(view) for view in views}
    return ReferenceCache(model, view_towers, texts, center=cfg.objective.center_reference)


def compute_loss(
    encoder: nn.Module,
    objective: ContrastiveObjective,
    batch: dict[str, Any],
    references: ReferenceCache | None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    features, logit_scale = encoder(batch)
    refs = references(batch, logit_scale.device) if references is not None else {}
    present = {view: batch["present"][view] for view in features}
    return objective(features, present, logit_scale, refs or None)


# --------------------------------------------------------------------------- schedule, order, checkpoints


def cosine_with_warmup(step: int, warmup_steps: int, total_steps: int, min_ratio: float = 0.0) -> float:
    """LR multiplier: linear warm-up then cosine decay to ``min_ratio`` (Loshchilov & Hutter 2017, SGDR)."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, dist: DistInfo) -> list[list[int]]:
    """Seeded permutation of the epoch, split into global batches, each sliced for this rank.

    Batches are dropped at the end rather than padded so that every rank runs the same number of
    steps; a contrastive batch of one has no negatives anyway.
    """
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + epoch)).tolist()
    global_batch = batch_size * dist.world_size
    n_batches = max(1, n // global_batch) if n >= 2 * dist.world_size else 0
    batches = []
    for b in range(n_batches):
        chunk = order[b * global_batch : (b + 1) * global_batch]
        batches.append(chunk[dist.rank :: dist.world_size])
    return batches


def atomic_torch_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only what training changes (adapters, heads, logit scale, fully tuned towers): frozen bases are
    rebuilt from their pretrained weights, which keeps checkpoints small."""
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if k in names}


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------- validation


@torch.no_grad()
def embed_dataset(
    model: MultimodalModel,
    dataset: StudyDataset,
    views: dict[str, ViewSpec],
    batch_size: int,
    device: torch.device,
    precision: str = "fp32",
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Embeddings ``[N, D]`` per view in dataset order, and presence masks ``[N]``."""
    model.eval()
    encoder = ViewEncoder(model, views)
    feats: dict[str, list[torch.Tensor]] = {v: [] for v in views}
    present: dict[str, list[torch.Tensor]] = {v: [] for v in views}
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(len(dataset), start + batch_size))]
        batch = move_batch(collate_studies(items, dataset.views), device)
        with autocast_context(device, precision):
            out, _ = encoder(batch)
        for view in views:
            n = len(items)
            feats[view].append(
                out[view].float().cpu() if view in out else torch.zeros(n, model.config.embed_dim)
            )
            present[view].append(batch["present"][view].cpu())
    return (
        {v: torch.cat(x) for v, x in feats.items()},
        {v: torch.cat(x) for v, x in present.items()},
    )


def _pair_texts(dataset: StudyDataset, cfg: TrainConfig, pair: Any, rows: np.ndarray) -> np.ndarray | None:
    """The texts of a pair's text side on ``rows`` (None when neither side is text)."""
    for view in (pair.b, pair.a):
        spec = cfg.views[view]
        if spec.is_text:
            return dataset.labels(view, [spec.column])[spec.column].fillna("").astype(str).to_numpy()[rows]
    return None


def validate(
    model: MultimodalModel,
    dataset: StudyDataset,
    cfg: TrainConfig,
    device: torch.device,
) -> dict[str, float]:
    feats, present = embed_dataset(model, dataset, cfg.views, cfg.eval_batch_size, device, cfg.precision)
    metrics: dict[str, float] = {}
    r1 = []
    for pair in cfg.objective.pairs:
        both = present[pair.a] & present[pair.b]
        n = int(both.sum())
        if n < 2:
            continue
        scores = retrieval_both_directions(
            feats[pair.a][both].numpy(),
            feats[pair.b][both].numpy(),
            pair.a,
            pair.b,
            ks=(1, 5),
            groups=_pair_texts(dataset, cfg, pair, both.numpy()) if cfg.val_distinct_texts else None,
        )
        metrics.update({f"val.{name}": value for name, value in scores.items()})
        metrics[f"val.n.{pair.a}-{pair.b}"] = float(n)
        r1.extend([scores[f"r@1.{pair.a}->{pair.b}"], scores[f"r@1.{pair.b}->{pair.a}"]])
    metrics["val.mean_r@1"] = float(np.mean(r1)) if r1 else 0.0
    model.train()
    return metrics


# --------------------------------------------------------------------------- the run


def check_config(cfg: TrainConfig) -> None:
    towers = set(cfg.model.towers)
    for name, view in cfg.views.items():
        if view.tower not in towers:
            raise StageError(
                f"view {name!r} uses tower {view.tower!r}, but the model has towers {sorted(towers)}"
            )
    for pair in cfg.objective.pairs:
        for view in (pair.a, pair.b, pair.weights_from):
            if view is not None and view not in cfg.views:
                raise StageError(f"objective pair ({pair.a}, {pair.b}) names unknown view {view!r}")
        if pair.weights_from and cfg.views[pair.weights_from].tower != "text":
            raise StageError(f"CWCL weights_from={pair.weights_from!r} must be a text view (pretrained side)")
    if cfg.batch_size < 2:
        raise StageError("batch_size must be at least 2: a contrastive batch needs negatives")


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


class _NullTracker:
    def log_metrics(self, metrics: dict[str, float], step: int) -> None:  # noqa: D401 - protocol
        pass


def run(cfg: TrainConfig) -> int:
    """Train, log to MLflow, register the model version. Rank 0 alone talks to MLflow."""
    from pipelines.registry import log_zero_shot_model, stage_run

    is_main = int(os.environ.get("RANK", "0")) == 0
    stage = "train-more" if cfg.task == "more" else "train-speech"
    if not is_main:
        train(cfg, _NullTracker())
        return 0
    cards = sorted(Path("data_cards").glob(f"{Path(cfg.data_root).name}-*.md"))
    with stage_run(stage, cfg, experiment=cfg.experiment, data_cards=cards) as tracker:
        result = train(cfg, tracker)
        tracker.log_metrics({f"best.{k}": v for k, v in result.best_metrics.items()}, result.steps)
        tracker.log_metrics({"train.samples_per_s_overall": result.samples_per_s}, result.steps)
        tracker.log_artifacts(str(result.checkpoint_dir / "model"), "checkpoint/model")
        version = None
        if cfg.register:
            version = log_zero_shot_model(
                result.model,
                registered_name=cfg.registered_model,
                modalities=sorted({v.modality for v in cfg.views.values() if v.column is None}),
                preprocessing={m: read_normalisation(cfg.data_root, m) for m in ("xray", "ecg", "speech")},
                tags={"task": cfg.task, "best_val_mean_r_at_1": f"{result.best_metrics['val.mean_r@1']:.4f}"},
            )
        print(f"run: {tracker.run_id} (experiment {cfg.experiment!r})")
        print(f"checkpoint: {result.checkpoint_dir.resolve()}")
        if version is not None:
            print(f"registered model: {cfg.registered_model} version {version.version}")
        print(f"training throughput: {result.samples_per_s:.1f} samples/s over {result.steps} steps")
    return 0


def run_more(cfg: Config) -> int:
    return run(cfg)


def run_speech(cfg: SpeechConfig) -> int:
    return run(cfg)
