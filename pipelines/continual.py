"""Continual learning: ``make continual`` learns a sequence of new tasks (sites, findings, diagnoses) from the
champion while keeping what it knew, and measures how much it forgot.

Methods (``methods``, combined with ``+``): ``finetune`` (plain fine-tuning, the baseline), ``replay``
(rehearsal buffer of past pairs mixed into every batch + supervised contrastive term on them, COCONUT /
SupCon), ``distill`` (ZSCL: distil the frozen starting model's similarity distributions between
unlabeled reference X-rays/ECGs and the prompt sentences, both directions), ``wise`` (WiSE-FT weight
ensembling with the starting weights after each task), ``l2`` (L2 pull to the starting weights).
``compare_methods=[finetune,replay+distill]`` runs several side by side from the same start.

After each task every task's test split is evaluated into the accuracy matrix R[i][j]: by default
(``r_measure=zero_shot_auroc``) the zero-shot macro AUROC of the task's own findings
(``tasks[i].findings``) on its ``eval_split`` studies, scored exactly as ``make evaluate`` does
(:class:`pipelines.evaluation.zero_shot.ZeroShotClassifier`, same prompt sets); or (``r_measure=retrieval``) top-1
cross-modal retrieval of its studies. Zero-shot retention: the macro AUROC over every finding of the
``held_out`` zero-shot tasks (X-ray findings and ECG diagnoses) on the whole eval split, final model vs
starting model on the same resampled studies. Logged: average
accuracy, backward transfer (forgetting) and forward transfer (Lopez-Paz & Ranzato 2017), zero-shot
retention, all with paired bootstrap 95% CIs; one nested MLflow run per task; the matrix as CSV + PNG;
the replay buffer (pseudonymous IDs only) as an artifact and at ``<data_root>/replay_buffer.csv``, where
``make unlearn`` purges withdrawn subjects. The final model of ``register_method`` is registered.

Checkpoints: ``<checkpoint_dir>/<method>/task-<k>.pt`` after task k; ``resume=true`` restarts after the
last finished task and ends exactly as an uninterrupted run.

Tasks are row filters (``tasks[i].where``) on a study's manifest rows; when the manifests carry no
``task`` column, ``task_map`` (a CSV with ``study_id,task``, or raw ``mrn,accession,task`` hashed with
PIPELINE_SALT like preprocessing does; the demo uses its ``truth.csv``) supplies it.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from encoders import MultimodalModel
from pipelines.continual_methods.distill import DistillConfig, build_reference_set, frozen_copy
from pipelines.continual_methods.replay import (
    BUFFER_FILE,
    ReplayBuffer,
    ReplayConfig,
    pair_entries,
    write_buffer,
)
from pipelines.continual_methods.report import (
    comparison_table,
    summarise,
    summary_metrics,
    write_method_outputs,
)
from pipelines.continual_methods.tasks import TaskSpec, demo_tasks, read_task_map, task_keys
from pipelines.continual_methods.training import (
    MethodSettings,
    TaskContext,
    method_parts,
    method_slug,
    resume_sequence,
    save_task,
    train_task,
)
from pipelines.continual_methods.weights import wise_ft
from pipelines.data import registry
from pipelines.data.dataset import StudyDataset, ViewSpec, more_views, read_normalisation
from pipelines.errors import StageError
from pipelines.evaluation.task_sequence import (
    EvalSet,
    Evaluation,
    eval_set,
    evaluate_state,
    task_findings,
    task_row,
)
from pipelines.evaluation.tasks import ZeroShotTaskConfig, default_zero_shot_tasks
from pipelines.training import (
    TrainingSettings,
    build_reference_cache,
    check_config,
    max_speech_samples,
    more_objective,
    resolve_device,
    resolve_precision,
    trainable_state,
)


def task_training() -> TrainingSettings:
    """Each task's training: train-morE's views and objective, 3 epochs of batch 16."""
    return TrainingSettings(views=more_views(), objective=more_objective(), epochs=3, batch_size=16)


@dataclasses.dataclass
class ContinualConfig:
    """Continual learning of a task sequence: each task is one training run with ``train``'s settings."""

    data_root: str = "data/processed/demo"
    train: TrainingSettings = dataclasses.field(
        default_factory=task_training,
        metadata={"help": "training settings of every task (epochs are per task)"},
    )
    start_from: Literal["registry", "dir", "scratch"] = dataclasses.field(
        default="registry", metadata={"help": "registry (model_name@model_ref) | dir (start_dir) | scratch"}
    )
    model_name: str = "morE-cxr-ecg-report"
    model_ref: str = dataclasses.field(
        default="champion", metadata={"help": "alias or version to start from"}
    )
    start_dir: str | None = dataclasses.field(default=None, metadata={"help": "save_pretrained dir"})
    tasks: list[TaskSpec] = dataclasses.field(default_factory=demo_tasks)
    task_map: str | None = dataclasses.field(
        default="data/raw/demo/truth.csv",
        metadata={"help": "CSV giving each study's task when manifests lack a `task` column"},
    )
    salt: str | None = dataclasses.field(
        default=None, metadata={"help": "ID salt for a raw task map (prefer PIPELINE_SALT)", "secret": True}
    )
    methods: str = dataclasses.field(
        default="replay+distill", metadata={"help": "e.g. finetune, replay+distill"}
    )
    compare_methods: list[str] = dataclasses.field(
        default_factory=list, metadata={"help": "run these side by side (overrides `methods`)"}
    )
    register_method: str | None = dataclasses.field(
        default=None, metadata={"help": "whose final model is registered (default: last method)"}
    )
    replay: ReplayConfig = dataclasses.field(default_factory=ReplayConfig)
    distill: DistillConfig = dataclasses.field(default_factory=DistillConfig)
    wise_alpha: float = dataclasses.field(
        default=0.7, metadata={"help": "WiSE-FT: theta = (1-a) theta_0 + a theta after each task"}
    )
    l2_weight: float = dataclasses.field(default=1e-3, metadata={"help": "L2 pull to the starting weights"})
    eval_split: list[str] = dataclasses.field(
        default_factory=lambda: ["test"],
        metadata={"help": "split(s) evaluated into R (the stage selects nothing on them)"},
    )
    r_measure: Literal["zero_shot_auroc", "retrieval"] = dataclasses.field(
        default="zero_shot_auroc",
        metadata={
            "help": "entry of R: macro zero-shot AUROC of the task's findings | top-1 cross-modal retrieval"
        },
    )
    zero_shot_tasks: dict[str, ZeroShotTaskConfig] = dataclasses.field(
        default_factory=default_zero_shot_tasks,
        metadata={"help": "zero-shot tasks (as in make evaluate) that tasks[i].findings name"},
    )
    missing_labels: Literal["exclude", "negative"] = dataclasses.field(
        default="exclude", metadata={"help": "findings not mentioned in a report: exclude or negative"}
    )
    held_out: list[str] = dataclasses.field(
        default_factory=lambda: ["xray_findings", "ecg_diagnoses"],
        metadata={
            "help": "zero-shot tasks whose every finding, on the whole eval split, is the retention reference"
        },
    )
    bootstrap_resamples: int = 1000
    buffer_path: str | None = dataclasses.field(
        default=None, metadata={"help": f"default <data_root>/{BUFFER_FILE}"}
    )
    device: str = dataclasses.field(default="auto", metadata={"help": "auto | cpu | cuda"})
    threads: int | None = dataclasses.field(
        default=None, metadata={"help": "torch CPU threads (default: all)"}
    )
    checkpoint_dir: str = "checkpoints/continual"
    resume: bool = dataclasses.field(default=False, metadata={"help": "restart after the last finished task"})
    tracking_uri: str | None = None
    experiment: str = "continual"
    registered_model: str = "morE-cxr-ecg-report"
    register: bool = True

    def __post_init__(self) -> None:
        for method in self.compare_methods or [self.methods]:
            method_parts(method)
        if self.register_method is not None:
            method_parts(self.register_method)
        if not 0.0 <= self.wise_alpha <= 1.0:
            raise StageError(f"wise_alpha must be in [0, 1], got {self.wise_alpha}")

    # The evaluation library scores with the training section's views, objective pairs and precision.
    @property
    def views(self) -> dict[str, ViewSpec]:
        return self.train.views

    @property
    def objective(self) -> Any:
        return self.train.objective

    @property
    def eval_batch_size(self) -> int:
        return self.train.eval_batch_size

    @property
    def precision(self) -> str:
        return self.train.precision


# --------------------------------------------------------------------------- models


def load_start_model(cfg: ContinualConfig) -> tuple[MultimodalModel, str]:
    """The model the sequence starts from and a description of where it came from."""
    if cfg.start_from == "scratch":
        torch.manual_seed(cfg.train.seed)
        return MultimodalModel(cfg.train.model), "scratch"
    if cfg.start_from == "dir":
        if not cfg.start_dir or not Path(cfg.start_dir).is_dir():
            raise StageError(
                f"start_from=dir needs start_dir pointing at a saved model, got {cfg.start_dir!r}"
            )
        return MultimodalModel.from_pretrained(cfg.start_dir), f"dir:{cfg.start_dir}"
    from pipelines.registry import load_model_version

    try:
        model, version = load_model_version(cfg.model_name, cfg.model_ref, cfg.tracking_uri)
    except Exception as err:  # registry/lookup errors of several kinds: all mean "nothing to start from"
        raise StageError(
            f"cannot load {cfg.model_name}@{cfg.model_ref} ({err}); run `make train-morE` first"
        ) from err
    return model, f"{cfg.model_name}:v{version.version}"


# --------------------------------------------------------------------------- evaluation


def build_eval_set(cfg: ContinualConfig, task_map: dict[str, str] | None) -> EvalSet:
    """The evaluation split with each task's studies (its ``where`` rows or the task map)."""
    dataset = StudyDataset(cfg.data_root, cfg.eval_split, cfg.train.views, key=cfg.train.key)
    position = {k: i for i, k in enumerate(dataset.keys)}
    rows = [
        np.array([position[k] for k in task_keys(dataset, spec, task_map)], dtype=int) for spec in cfg.tasks
    ]
    return eval_set(cfg, dataset, cfg.tasks, rows)


# --------------------------------------------------------------------------- training one task


# --------------------------------------------------------------------------- one method over the sequence


@dataclasses.dataclass
class MethodResult:
    method: str
    model: MultimodalModel
    summary: dict[str, Any]
    buffer: ReplayBuffer | None
    out_dir: Path


def _after_task(
    cfg: ContinualConfig,
    model: MultimodalModel,
    ctx: TaskContext,
    stats: dict[str, float],
    shared: dict[str, Any],
    device: torch.device,
    tracker: Any | None,
    slug: str,
) -> Evaluation:
    """A task's bookkeeping: WiSE-FT mixing, the buffer's new pairs, and R's new row (evaluated, logged)."""
    t = ctx.task_index
    if "wise" in ctx.parts:
        mixed = wise_ft(ctx.initial, trainable_state(model), cfg.wise_alpha)
        model.load_state_dict({k: v.to(device) for k, v in mixed.items()}, strict=False)
    if ctx.buffer is not None:
        pairs = [(p.a, p.b) for p in cfg.train.objective.pairs]
        stream = pair_entries(ctx.train_set, ctx.keys, pairs, ctx.task_name, cfg.replay.label_columns)
        order = np.random.default_rng([cfg.train.seed, t, 31]).permutation(len(stream))
        ctx.buffer.add(stream[i] for i in order)
    evaluation = evaluate_state(model, cfg, shared["evalset"], device)
    row = task_row(shared["evalset"], evaluation)
    metrics = dict(stats) | {f"R.{cfg.tasks[j].name}": v for j, v in enumerate(row)}
    if ctx.buffer is not None:
        metrics["buffer.size"] = float(len(ctx.buffer))
    if tracker is not None:
        tracker.log_metrics(metrics, t + 1)
    print(f"[{slug}] after task {t + 1} ({ctx.task_name}): R row " + ", ".join(f"{v:.3f}" for v in row))
    return evaluation


def run_method(
    cfg: ContinualConfig,
    method: str,
    start_model: MultimodalModel,
    shared: dict[str, Any],
    device: torch.device,
    tracker: Any | None = None,
) -> MethodResult:
    """Learn the task sequence with ``method`` from a copy of ``start_model``; checkpoint after each task."""
    parts = method_parts(method)
    slug = method_slug(method)
    out_dir = Path(cfg.checkpoint_dir) / slug
    model = copy.deepcopy(start_model).to(device)
    initial = {k: v.clone() for k, v in trainable_state(model).items()}
    teacher = frozen_copy(start_model).to(device) if "distill" in parts else None
    reference = None
    if teacher is not None:
        reference = build_reference_set(
            cfg.distill, cfg.train.views, cfg.data_root, cfg.train.key, cfg.train.seed, teacher
        )
    buffer = (
        ReplayBuffer(cfg.replay.capacity, cfg.replay.policy, seed=cfg.train.seed)
        if "replay" in parts
        else None
    )
    evalset: EvalSet = shared["evalset"]
    train_set: StudyDataset = shared["train_set"]
    after: list[Evaluation] = []
    done = 0
    if cfg.resume:
        done, after, buffer = resume_sequence(out_dir, len(cfg.tasks), model, buffer, slug)
    for t in range(done, len(cfg.tasks)):
        spec = cfg.tasks[t]
        ctx = TaskContext(
            train_set=train_set,
            index_of=shared["index_of"],
            keys=shared["train_keys"][t],
            task_index=t,
            task_name=spec.name,
            parts=parts,
            teacher=teacher,
            reference=reference,
            initial=initial,
            buffer=buffer,
            sample_rates=shared["sample_rates"],
            cwcl_references=shared["cwcl_references"],
        )
        child = (
            tracker.child(f"{slug}/task-{t + 1}-{spec.name}", {"method": slug, "task": spec.name})
            if tracker
            else None
        )
        with child if child is not None else contextlib.nullcontext() as task_tracker:
            settings = MethodSettings(cfg.replay, cfg.distill, cfg.l2_weight)
            stats = train_task(model, cfg.train, settings, ctx, device, task_tracker)
            after.append(_after_task(cfg, model, ctx, stats, shared, device, task_tracker, slug))
        save_task(out_dir, t + 1, model, buffer, after, slug)
    summary = summarise(
        cfg.r_measure,
        [spec.name for spec in cfg.tasks],
        evalset,
        shared["start_eval"],
        shared["untrained_eval"],
        after,
        cfg.bootstrap_resamples,
        cfg.train.seed,
    )
    summary["method"] = slug
    write_method_outputs(summary, buffer, out_dir)
    return MethodResult(slug, model, summary, buffer, out_dir)


# --------------------------------------------------------------------------- the stage


def continual(cfg: ContinualConfig, tracker: Any | None = None) -> list[MethodResult]:
    """Every requested method over the task sequence from the same starting model."""
    check_config(cfg.train)
    if not cfg.tasks:
        raise StageError("no tasks configured: give `tasks` (name + where filters)")
    methods = cfg.compare_methods or [cfg.methods]
    for method in methods:
        method_parts(method)
    for spec in cfg.tasks:
        task_findings(cfg, spec)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    start_model, origin = load_start_model(cfg)
    start_model = start_model.to(device).eval()
    cfg.train.model = start_model.config
    task_map = None
    if cfg.task_map and Path(cfg.task_map).is_file():
        task_map = read_task_map(cfg.task_map, cfg.salt)
    elif cfg.task_map:
        print(f"task map {cfg.task_map} not found: tasks are matched on manifest columns only")
    train_set = StudyDataset(
        cfg.data_root,
        "train",
        cfg.train.views,
        key=cfg.train.key,
        max_speech_samples=max_speech_samples(cfg.data_root, cfg.train.max_speech_s),
    )
    train_keys = [task_keys(train_set, spec, task_map) for spec in cfg.tasks]
    for spec, keys in zip(cfg.tasks, train_keys, strict=True):
        print(f"task {spec.name}: {len(keys)} training studies")
        if not keys:
            raise StageError(f"task {spec.name!r} matches no training studies (where={spec.where})")
    evalset = build_eval_set(cfg, task_map)
    torch.manual_seed(cfg.train.seed)
    untrained = MultimodalModel(start_model.config).to(device)
    shared = {
        "train_set": train_set,
        "index_of": {k: i for i, k in enumerate(train_set.keys)},
        "train_keys": train_keys,
        "evalset": evalset,
        "sample_rates": registry.sample_rates(cfg.data_root),
        "start_eval": evaluate_state(start_model, cfg, evalset, device),
        "untrained_eval": evaluate_state(untrained, cfg, evalset, device),
        "origin": origin,
        # CWCL targets come from the frozen pretrained text side, identical for every method and task.
        "cwcl_references": build_reference_cache(start_model, cfg.train, train_set),
    }
    del untrained
    print(f"start ({origin}): R " + ", ".join(f"{v:.3f}" for v in task_row(evalset, shared["start_eval"])))
    return [run_method(cfg, method, start_model, shared, device, tracker) for method in methods]


def run(cfg: ContinualConfig) -> int:
    """``make continual``: the sequence under one MLflow parent run, buffer written, final model registered."""
    from pipelines.registry import log_zero_shot_model, stage_run

    cards = sorted(Path("data_cards").glob(f"{Path(cfg.data_root).name}-*.md"))
    with stage_run("continual", cfg, experiment=cfg.experiment, data_cards=cards) as tracker:
        tracker.set_tags({"precision": resolve_precision(cfg.train.precision, resolve_device(cfg.device))})
        results = continual(cfg, tracker)
        for result in results:
            tracker.log_metrics(
                {f"{result.method}.{k}": v for k, v in summary_metrics(result.summary).items()}, 0
            )
            tracker.log_artifacts(str(result.out_dir), f"continual/{result.method}")
        table = comparison_table(results)
        print(table.to_string(index=False))
        tracker.log_dict({"comparison": table.to_dict("records")}, "continual/comparison.json")
        chosen = cfg.register_method and method_slug(cfg.register_method)
        final = next((r for r in results if r.method == chosen), results[-1])
        if final.buffer is not None:
            path = write_buffer(final.buffer, cfg.buffer_path or Path(cfg.data_root) / BUFFER_FILE)
            print(f"replay buffer ({len(final.buffer)} pairs, pseudonymous IDs): {path}")
        final.model.save_pretrained(final.out_dir / "model")
        if cfg.register:
            version = log_zero_shot_model(
                final.model.cpu(),
                registered_name=cfg.registered_model,
                modalities=sorted({v.modality for v in cfg.train.views.values() if v.column is None}),
                preprocessing={m: read_normalisation(cfg.data_root, m) for m in ("xray", "ecg", "speech")},
                tags={
                    "continual_method": final.method,
                    "continual_tasks": ",".join(s.name for s in cfg.tasks),
                    "bwt": f"{final.summary.get('bwt', math.nan):.4f}",
                    "zs_retention_delta": f"{final.summary.get('zs_retention_delta', math.nan):.4f}",
                },
            )
            print(f"registered model: {cfg.registered_model} version {version.version} ({final.method})")
    return 0
