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

import copy
import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch

from encoders import MultimodalModel
from pipelines.continual_methods import metrics as CM
from pipelines.continual_methods.distill import reference_distillation_loss
from pipelines.continual_methods.replay import (
    BUFFER_FILE,
    PairEntry,
    Policy,
    ReplayBuffer,
    supcon_loss,
    write_buffer,
)
from pipelines.continual_methods.weights import l2_to_initial, wise_ft
from pipelines.data import ids
from pipelines.data.augment import step_generator
from pipelines.data.dataset import StudyDataset, collate_studies, read_normalisation
from pipelines.errors import StageError
from pipelines.evaluation.prompts import load_prompt_set
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
    SPEECH_FS_HZ,
    DistInfo,
    ViewEncoder,
    atomic_torch_save,
    augment_batch,
    autocast_context,
    build_objective,
    build_reference_cache,
    check_config,
    cosine_with_warmup,
    epoch_batches,
    move_batch,
    resolve_device,
    rng_state,
    set_rng_state,
    trainable_state,
)
from pipelines.training import Config as TrainMoreConfig

METHOD_PARTS = ("finetune", "replay", "distill", "wise", "l2")


@dataclasses.dataclass
class TaskSpec:
    """One task of the sequence: the studies whose manifest rows (or task map) match every ``where``;
    ``findings`` (zero-shot task of ``zero_shot_tasks`` -> labels) are what R scores on its test studies
    when ``r_measure=zero_shot_auroc``."""

    name: str
    where: dict[str, str] = dataclasses.field(default_factory=dict)
    findings: dict[str, list[str]] = dataclasses.field(default_factory=dict)


def _demo_tasks() -> list[TaskSpec]:
    return [
        TaskSpec(
            "site-A-cardiomegaly-effusion",
            {"task": "1"},
            {"xray_findings": ["cardiomegaly", "pleural_effusion"]},
        ),
        TaskSpec(
            "site-B-pneumothorax-consolidation",
            {"task": "2"},
            {"xray_findings": ["pneumothorax", "consolidation"]},
        ),
        TaskSpec("site-C-new-ecg-diagnoses", {"task": "3"}, {"ecg_diagnoses": ["LBBB", "STE"]}),
    ]


@dataclasses.dataclass
class ReplayConfig:
    capacity: int = dataclasses.field(default=64, metadata={"help": "rehearsal buffer size, in pairs"})
    policy: Policy = dataclasses.field(
        default="class_balanced", metadata={"help": "reservoir | class_balanced | task_balanced"}
    )
    batch_size: int = dataclasses.field(default=8, metadata={"help": "replayed pairs mixed into each batch"})
    supcon_weight: float = 0.5
    supcon_temperature: float = 0.1
    label_columns: list[str] = dataclasses.field(
        default_factory=lambda: [
            "pneumothorax",
            "consolidation",
            "cardiomegaly",
            "pleural_effusion",
            "LBBB",
            "STE",
            "no_finding",
        ],
        metadata={"help": "a study's label = first of these columns that is 1 in any of its rows"},
    )


@dataclasses.dataclass
class DistillConfig:
    weight: float = 1.0
    temperature: float = dataclasses.field(default=0.05, metadata={"help": "softmax temperature of cosines"})
    direction: Literal["both", "a2b", "b2a"] = "both"
    views: dict[str, str] = dataclasses.field(
        default_factory=lambda: {"xray": "cxr_findings", "ecg": "ecg_diagnoses"},
        metadata={"help": "reference view -> prompt set whose sentences are the reference texts"},
    )
    reference_split: str = dataclasses.field(
        default="train", metadata={"help": "unlabeled reference inputs are drawn from this split"}
    )
    reference_size: int = 64
    batch_size: int = 8
    max_sentences: int = dataclasses.field(default=24, metadata={"help": "reference sentences per step"})


@dataclasses.dataclass
class Config(TrainMoreConfig):
    """Continual learning of a task sequence (training settings are per task)."""

    start_from: Literal["registry", "dir", "scratch"] = dataclasses.field(
        default="registry", metadata={"help": "registry (model_name@model_ref) | dir (start_dir) | scratch"}
    )
    model_name: str = "morE-cxr-ecg-report"
    model_ref: str = dataclasses.field(
        default="champion", metadata={"help": "alias or version to start from"}
    )
    start_dir: str | None = dataclasses.field(default=None, metadata={"help": "save_pretrained dir"})
    tasks: list[TaskSpec] = dataclasses.field(default_factory=_demo_tasks)
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
    epochs: int = dataclasses.field(default=3, metadata={"help": "epochs per task"})
    batch_size: int = 16
    checkpoint_dir: str = "checkpoints/continual"
    experiment: str = "continual"


# --------------------------------------------------------------------------- tasks and data


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


def _text(value: Any) -> str:
    """Manifest cells as compared strings (pandas reads ``1`` as 1 or 1.0 depending on blanks)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def read_task_map(path: str | Path, salt: str | None = None) -> dict[str, str]:
    """``study_id -> task`` from a CSV with ``study_id,task`` or raw ``mrn,accession,task`` (hashed here
    with the preprocessing salt, exactly as :func:`pipelines.data.ids.study_id`; raw IDs stay in memory)."""
    path = Path(path)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError) as err:
        raise StageError(f"cannot read task map {path}: {err}") from err
    if "task" not in frame.columns:
        raise StageError(f"task map {path} has no `task` column")
    if "study_id" in frame.columns:
        return dict(zip(frame["study_id"], frame["task"], strict=True))
    if {"mrn", "accession"} <= set(frame.columns):
        key = ids.salt_from_env(salt)
        return {
            ids.study_id(m, a, key): t
            for m, a, t in zip(frame["mrn"], frame["accession"], frame["task"], strict=True)
        }
    raise StageError(f"task map {path} needs `study_id` or `mrn`+`accession` columns")


def study_attributes(dataset: StudyDataset, key: str, task_map: dict[str, str] | None) -> dict[str, str]:
    """Every column of the study's rows across views (first non-empty wins), plus its mapped task."""
    attrs: dict[str, str] = {}
    for view in dataset.views:
        for column, value in (dataset.view_row(view, key) or {}).items():
            if column not in attrs or not attrs[column]:
                attrs[column] = _text(value)
    if task_map is not None and key in task_map and not attrs.get("task"):
        attrs["task"] = task_map[key]
    return attrs


def task_keys(dataset: StudyDataset, spec: TaskSpec, task_map: dict[str, str] | None) -> list[str]:
    """Keys (dataset order) of the studies matching every ``spec.where`` filter."""
    out = []
    for key in dataset.keys:
        attrs = study_attributes(dataset, key, task_map)
        if all(attrs.get(column) == _text(value) for column, value in spec.where.items()):
            out.append(key)
    return out


def study_label(dataset: StudyDataset, key: str, columns: list[str], fallback: str) -> str:
    """First of ``columns`` that is positive (1) in any of the study's rows; else ``fallback``."""
    rows = [dataset.view_row(view, key) or {} for view in dataset.views]
    for column in columns:
        if any(_text(row.get(column)) == "1" for row in rows):
            return column
    return fallback


def pair_entries(
    dataset: StudyDataset, keys: list[str], pairs: list[tuple[str, str]], task: str, label_columns: list[str]
) -> list[PairEntry]:
    """Buffer candidates of a task: one entry per study and objective pair that has both sides."""
    entries = []
    for key in keys:
        label = study_label(dataset, key, label_columns, fallback=f"task:{task}")
        for a, b in pairs:
            row_a, row_b = dataset.view_row(a, key), dataset.view_row(b, key)
            if row_a is None or row_b is None:
                continue
            entries.append(
                PairEntry(
                    study_id=key,
                    subject_id=_text(row_a.get("subject_id")),
                    task=task,
                    label=label,
                    a_view=a,
                    a_sample_id=_text(row_a.get("sample_id")),
                    b_view=b,
                    b_sample_id=_text(row_b.get("sample_id")),
                )
            )
    return entries


def replay_items(
    dataset: StudyDataset, index_of: dict[str, int], entries: list[PairEntry]
) -> tuple[list[dict[str, Any]], list[str]]:
    """Dataset items of the replayed pairs (one item per study, only the replayed views present) and
    their labels. A pair whose sides are no longer both in the data (withdrawn) is skipped whole."""
    by_study: dict[str, list[PairEntry]] = {}
    for entry in entries:
        if entry.study_id not in index_of:
            continue
        row_a, row_b = (
            dataset.view_row(entry.a_view, entry.study_id),
            dataset.view_row(entry.b_view, entry.study_id),
        )
        if (
            row_a is None
            or row_b is None
            or _text(row_a.get("sample_id")) != entry.a_sample_id
            or _text(row_b.get("sample_id")) != entry.b_sample_id
        ):
            continue
        by_study.setdefault(entry.study_id, []).append(entry)
    items, labels = [], []
    for study, group in by_study.items():
        item = dict(dataset[index_of[study]])
        keep = {e.a_view for e in group} | {e.b_view for e in group}
        for view in dataset.views:
            if view not in keep:
                item[view] = None
        items.append(item)
        labels.append(group[0].label)
    return items, labels


# --------------------------------------------------------------------------- models


def load_start_model(cfg: Config) -> tuple[MultimodalModel, str]:
    """The model the sequence starts from and a description of where it came from."""
    if cfg.start_from == "scratch":
        torch.manual_seed(cfg.seed)
        return MultimodalModel(cfg.model), "scratch"
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


def freeze(model: MultimodalModel) -> MultimodalModel:
    teacher = copy.deepcopy(model).eval()
    for param in teacher.parameters():
        param.requires_grad_(False)
    return teacher


# --------------------------------------------------------------------------- evaluation


def build_eval_set(cfg: Config, task_map: dict[str, str] | None) -> EvalSet:
    """The evaluation split with each task's studies (its ``where`` rows or the task map)."""
    dataset = StudyDataset(cfg.data_root, cfg.eval_split, cfg.views, key=cfg.key)
    position = {k: i for i, k in enumerate(dataset.keys)}
    rows = [
        np.array([position[k] for k in task_keys(dataset, spec, task_map)], dtype=int) for spec in cfg.tasks
    ]
    return eval_set(cfg, dataset, cfg.tasks, rows)


def _ratio(num: float, den: float) -> float:
    return num / den if den and math.isfinite(den) else math.nan


def summarise(
    cfg: Config, evalset: EvalSet, start: Evaluation, untrained: Evaluation, after: list[Evaluation]
) -> dict[str, Any]:
    """Matrix, ACC/BWT/FWT and zero-shot retention, with paired bootstrap CIs over the eval studies."""
    t = len(after)
    by_auroc = cfg.r_measure == "zero_shot_auroc"
    # Studies that can score: with a known finding (AUROC) or with a retrieval pair (hits).
    keep = [
        np.isfinite(evalset.task_targets[j]).any(axis=1) if by_auroc else np.isfinite(start.task_scores[j])
        for j in range(t)
    ]
    scores = [[after[i].task_scores[j][keep[j]] for j in range(t)] for i in range(t)]
    baseline = [untrained.task_scores[j][keep[j]] for j in range(t)]
    targets = [evalset.task_targets[j][keep[j]] for j in range(t)] if by_auroc else None
    out: dict[str, Any] = {
        "measure": cfg.r_measure,
        "tasks": [s.name for s in cfg.tasks[:t]],
        "matrix": [task_row(evalset, e)[:t] for e in after],
        "start_row": task_row(evalset, start)[:t],
        "untrained_row": task_row(evalset, untrained)[:t],
        "n_eval_studies": [int(k.sum()) for k in keep],
    }
    usable = all(k.sum() > 0 for k in keep)
    stats = (
        CM.bootstrap_matrix_metrics(scores, baseline, cfg.bootstrap_resamples, cfg.seed, targets=targets)
        if usable
        else {}
    )
    for name, (point, low, high) in stats.items():
        out[name], out[f"{name}_ci"] = point, [low, high]
    n = evalset.zs_rows.size
    if n and np.isfinite(start.zero_shot).any() and np.isfinite(after[-1].zero_shot).any():
        final = after[-1].zero_shot

        def auroc_at(scores: np.ndarray, idx: np.ndarray) -> float:
            return CM.macro_auroc(evalset.zs_targets[idx], scores[idx])

        out["zs_auroc_start"] = auroc_at(start.zero_shot, np.arange(n))
        out["zs_auroc_per_task"] = [auroc_at(e.zero_shot, np.arange(n)) for e in after]
        point, low, high = CM.paired_bootstrap(
            lambda idx: auroc_at(final, idx) - auroc_at(start.zero_shot, idx),
            n,
            cfg.bootstrap_resamples,
            cfg.seed,
        )
        out["zs_auroc_final"] = out["zs_auroc_per_task"][-1]
        out["zs_retention_delta"], out["zs_retention_delta_ci"] = point, [low, high]
        point, low, high = CM.paired_bootstrap(
            lambda idx: _ratio(auroc_at(final, idx), auroc_at(start.zero_shot, idx)),
            n,
            cfg.bootstrap_resamples,
            cfg.seed,
        )
        out["zs_retention_ratio"], out["zs_retention_ratio_ci"] = point, [low, high]
    return out


# --------------------------------------------------------------------------- training one task


@dataclasses.dataclass
class ReferenceSet:
    """ZSCL's unlabeled reference data: items per reference view, teacher features of inputs and sentences."""

    items: dict[str, list[dict[str, Any]]]
    sentences: dict[str, list[str]]
    teacher_sentences: dict[str, torch.Tensor]


def build_reference_set(cfg: Config, teacher: MultimodalModel, device: torch.device) -> ReferenceSet:
    views = {v: cfg.views[v] for v in cfg.distill.views}
    dataset = StudyDataset(cfg.data_root, cfg.distill.reference_split, views, key=cfg.key)
    rng = np.random.default_rng(cfg.seed + 17)
    items: dict[str, list[dict[str, Any]]] = {}
    sentences: dict[str, list[str]] = {}
    teacher_sentences: dict[str, torch.Tensor] = {}
    for view, prompt_name in cfg.distill.views.items():
        have = [i for i, k in enumerate(dataset.keys) if dataset.view_row(view, k) is not None]
        chosen = sorted(
            rng.choice(have, size=min(cfg.distill.reference_size, len(have)), replace=False).tolist()
        )
        items[view] = [{**dataset[i], **{v: None for v in views if v != view}} for i in chosen]
        prompt_set = load_prompt_set(prompt_name)
        texts = sorted(
            {t for label in prompt_set.labels for side in prompt_set.texts_for(label) for t in side}
        )
        sentences[view] = texts
        with torch.no_grad():
            teacher_sentences[view] = teacher.encode("text", texts).float()
    return ReferenceSet(items, sentences, teacher_sentences)


def distillation_term(
    model: MultimodalModel,
    teacher: MultimodalModel,
    reference: ReferenceSet,
    cfg: Config,
    rng: np.random.Generator,
    device: torch.device,
) -> torch.Tensor:
    """ZSCL loss on one reference mini-batch per reference view (inputs and sentences sampled by ``rng``)."""
    terms = []
    for view, pool in reference.items.items():
        if len(pool) < 2:
            continue
        picks = rng.choice(len(pool), size=min(cfg.distill.batch_size, len(pool)), replace=False)
        chosen = [
            reference.sentences[view][i]
            for i in sorted(
                rng.choice(
                    len(reference.sentences[view]),
                    size=min(cfg.distill.max_sentences, len(reference.sentences[view])),
                    replace=False,
                )
            )
        ]
        sentence_rows = torch.tensor([reference.sentences[view].index(s) for s in chosen])
        batch = move_batch(
            collate_studies([pool[int(i)] for i in sorted(picks)], {view: cfg.views[view]}), device
        )
        student_inputs = ViewEncoder(model, {view: cfg.views[view]})(batch)[0][view]
        with torch.no_grad():
            teacher_inputs = ViewEncoder(teacher, {view: cfg.views[view]})(batch)[0][view]
        student_texts = model.encode("text", chosen)
        teacher_texts = reference.teacher_sentences[view][sentence_rows].to(device)
        terms.append(
            reference_distillation_loss(
                student_inputs,
                student_texts,
                teacher_inputs,
                teacher_texts,
                cfg.distill.temperature,
                cfg.distill.direction,
            )
        )
    return torch.stack(terms).mean() if terms else torch.zeros((), device=device)


@dataclasses.dataclass
class TaskContext:
    """Everything one task's training needs besides the model."""

    train_set: StudyDataset
    index_of: dict[str, int]
    keys: list[str]
    task_index: int
    parts: set[str]
    teacher: MultimodalModel | None
    reference: ReferenceSet | None
    initial: dict[str, torch.Tensor]
    buffer: ReplayBuffer | None
    ecg_fs_hz: float
    cwcl_references: Any | None


def train_task(
    model: MultimodalModel, cfg: Config, ctx: TaskContext, device: torch.device, tracker: Any | None
) -> dict[str, float]:
    """Train on one task's studies (+ replay, distillation, L2 pull as the method says); single process."""
    torch.manual_seed(cfg.seed * 1009 + ctx.task_index)
    task_seed = cfg.seed + 7919 * (ctx.task_index + 1)
    model.train()
    encoder = ViewEncoder(model, cfg.views)
    objective = build_objective(cfg.objective, distributed=False)
    optimizer = torch.optim.AdamW(
        model.param_groups(cfg.optim.weight_decay),
        lr=cfg.optim.lr,
        betas=tuple(cfg.optim.betas),
        eps=cfg.optim.eps,
    )
    per_epoch = len(epoch_batches(len(ctx.keys), cfg.batch_size, task_seed, 0, DistInfo()))
    if per_epoch == 0:
        raise StageError(
            f"task {cfg.tasks[ctx.task_index].name!r} has {len(ctx.keys)} training studies: too few for batch_size={cfg.batch_size}"
        )
    total = cfg.max_steps or per_epoch * cfg.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: cosine_with_warmup(s, cfg.optim.warmup_steps, total, cfg.optim.min_lr_ratio)
    )
    replaying = "replay" in ctx.parts and ctx.buffer is not None and len(ctx.buffer) > 0
    step, totals = 0, {"loss": 0.0, "contrastive": 0.0, "supcon": 0.0, "distill": 0.0, "l2": 0.0}
    for epoch in range(cfg.epochs):
        for b, batch_rows in enumerate(
            epoch_batches(len(ctx.keys), cfg.batch_size, task_seed, epoch, DistInfo())
        ):
            if step >= total:
                break
            rng = np.random.default_rng([task_seed, epoch, b])
            items = [ctx.train_set[ctx.index_of[ctx.keys[i]]] for i in batch_rows]
            labels: list[str] = []
            if replaying:
                extra, labels = replay_items(
                    ctx.train_set, ctx.index_of, ctx.buffer.sample(cfg.replay.batch_size, rng)
                )
                items = items + extra
            batch = move_batch(collate_studies(items, cfg.views), device)
            batch = augment_batch(
                batch, cfg.views, cfg.augment, step_generator(task_seed, epoch, b), ctx.ecg_fs_hz
            )
            parts: dict[str, torch.Tensor] = {}
            with autocast_context(device, cfg.precision):
                features, logit_scale = encoder(batch)
                refs = ctx.cwcl_references(batch, device) if ctx.cwcl_references is not None else {}
                present = {view: batch["present"][view] for view in features}
                parts["contrastive"], _ = objective(features, present, logit_scale, refs or None)
                if labels and cfg.replay.supcon_weight > 0:
                    first = len(items) - len(labels)
                    anchors, anchor_labels = [], []
                    for view, feats in features.items():
                        mask = present[view][first:]
                        anchors.append(feats[first:][mask])
                        anchor_labels.extend(lab for lab, m in zip(labels, mask.tolist(), strict=True) if m)
                    parts["supcon"] = cfg.replay.supcon_weight * supcon_loss(
                        torch.cat(anchors), anchor_labels, cfg.replay.supcon_temperature
                    )
                if "distill" in ctx.parts and ctx.teacher is not None and ctx.reference is not None:
                    parts["distill"] = cfg.distill.weight * distillation_term(
                        model, ctx.teacher, ctx.reference, cfg, rng, device
                    )
            if "l2" in ctx.parts and cfg.l2_weight > 0:
                parts["l2"] = cfg.l2_weight * l2_to_initial(model, ctx.initial)
            loss = sum(parts.values())
            if not math.isfinite(float(loss.detach())):
                raise StageError(f"loss became {float(loss)} in task {ctx.task_index + 1}: lower optim.lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.max_grad_norm)
            optimizer.step()
            scheduler.step()
            model.clamp_logit_scale()
            step += 1
            totals["loss"] += float(loss.detach())
            for name, value in parts.items():
                totals[name] += float(value.detach())
            if tracker is not None and (step % cfg.log_every == 0 or step == 1):
                tracker.log_metrics(
                    {f"train.{k}": float(v.detach()) for k, v in parts.items()}
                    | {"train.loss": float(loss.detach())},
                    step,
                )
    return {f"train.mean_{k}": v / max(step, 1) for k, v in totals.items()} | {"train.steps": float(step)}


# --------------------------------------------------------------------------- one method over the sequence


@dataclasses.dataclass
class MethodResult:
    method: str
    model: MultimodalModel
    summary: dict[str, Any]
    buffer: ReplayBuffer | None
    out_dir: Path


def _task_checkpoint(out_dir: Path, k: int) -> Path:
    return out_dir / f"task-{k}.pt"


def _latest_checkpoint(out_dir: Path, n_tasks: int) -> tuple[int, Path | None]:
    for k in range(n_tasks, 0, -1):
        if _task_checkpoint(out_dir, k).is_file():
            return k, _task_checkpoint(out_dir, k)
    return 0, None


def run_method(
    cfg: Config,
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
    teacher = freeze(start_model).to(device) if "distill" in parts else None
    reference = build_reference_set(cfg, teacher, device) if teacher is not None else None
    buffer = (
        ReplayBuffer(cfg.replay.capacity, cfg.replay.policy, seed=cfg.seed) if "replay" in parts else None
    )
    evalset: EvalSet = shared["evalset"]
    train_set: StudyDataset = shared["train_set"]
    after: list[Evaluation] = []
    done = 0
    if cfg.resume:
        done, path = _latest_checkpoint(out_dir, len(cfg.tasks))
        if path is not None:
            state = torch.load(path, map_location="cpu", weights_only=False)
            model.load_state_dict(state["model"], strict=False)
            if buffer is not None and state["buffer"] is not None:
                buffer = ReplayBuffer.from_state_dict(state["buffer"])
            after = [Evaluation(**e) for e in state["evaluations"]]
            set_rng_state(state["rng"])
            print(f"[{slug}] resuming after task {done} from {path}")
    pairs = [(p.a, p.b) for p in cfg.objective.pairs]
    for t in range(done, len(cfg.tasks)):
        spec = cfg.tasks[t]
        ctx = TaskContext(
            train_set=train_set,
            index_of=shared["index_of"],
            keys=shared["train_keys"][t],
            task_index=t,
            parts=parts,
            teacher=teacher,
            reference=reference,
            initial=initial,
            buffer=buffer,
            ecg_fs_hz=shared["ecg_fs_hz"],
            cwcl_references=shared["cwcl_references"],
        )
        child = (
            tracker.child(f"{slug}/task-{t + 1}-{spec.name}", {"method": slug, "task": spec.name})
            if tracker
            else None
        )
        with child if child is not None else _nullcontext() as task_tracker:
            stats = train_task(model, cfg, ctx, device, task_tracker)
            if "wise" in parts:
                mixed = wise_ft(initial, trainable_state(model), cfg.wise_alpha)
                model.load_state_dict({k: v.to(device) for k, v in mixed.items()}, strict=False)
            if buffer is not None:
                stream = pair_entries(train_set, ctx.keys, pairs, spec.name, cfg.replay.label_columns)
                order = np.random.default_rng([cfg.seed, t, 31]).permutation(len(stream))
                buffer.add(stream[i] for i in order)
            evaluation = evaluate_state(model, cfg, evalset, device)
            after.append(evaluation)
            row = task_row(evalset, evaluation)
            metrics = dict(stats) | {f"R.{cfg.tasks[j].name}": v for j, v in enumerate(row)}
            if buffer is not None:
                metrics["buffer.size"] = float(len(buffer))
            if task_tracker is not None:
                task_tracker.log_metrics(metrics, t + 1)
            print(f"[{slug}] after task {t + 1} ({spec.name}): R row " + ", ".join(f"{v:.3f}" for v in row))
        atomic_torch_save(
            {
                "model": trainable_state(model),
                "buffer": buffer.state_dict() if buffer is not None else None,
                "evaluations": [dataclasses.asdict(e) for e in after],
                "rng": rng_state(),
                "tasks_done": t + 1,
                "method": slug,
            },
            _task_checkpoint(out_dir, t + 1),
        )
    summary = summarise(cfg, evalset, shared["start_eval"], shared["untrained_eval"], after)
    summary["method"] = slug
    write_method_outputs(summary, buffer, out_dir)
    return MethodResult(slug, model, summary, buffer, out_dir)


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


# --------------------------------------------------------------------------- outputs


def matrix_table(summary: dict[str, Any]) -> pd.DataFrame:
    """Rows: start, after each task, untrained; columns: tasks. Entries: ``summary["measure"]``."""
    tasks = summary["tasks"]
    rows = [("start", summary["start_row"])]
    rows += [
        (f"after {i + 1}: {name}", r)
        for i, (name, r) in enumerate(zip(tasks, summary["matrix"], strict=True))
    ]
    rows.append(("untrained (chance floor)", summary["untrained_row"]))
    return pd.DataFrame([r for _, r in rows], index=[n for n, _ in rows], columns=tasks)


MEASURE_TITLES = {"zero_shot_auroc": "zero-shot macro AUROC", "retrieval": "R@1"}


def plot_matrix(summary: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = matrix_table(summary)
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * table.shape[1], 0.9 + 0.5 * table.shape[0]))
    image = ax.imshow(table.to_numpy(dtype=float), vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(table.shape[1]), table.columns, rotation=20, ha="right", fontsize=8)
    ax.set_yticks(range(table.shape[0]), table.index, fontsize=8)
    for (i, j), value in np.ndenumerate(table.to_numpy(dtype=float)):
        ax.text(
            j,
            i,
            "-" if math.isnan(value) else f"{value:.2f}",
            ha="center",
            va="center",
            color="w",
            fontsize=8,
        )
    measure = MEASURE_TITLES.get(summary.get("measure", ""), summary.get("measure", ""))
    ax.set_title(f"{summary['method']}: {measure} on each task's test split", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_method_outputs(summary: dict[str, Any], buffer: ReplayBuffer | None, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    matrix_table(summary).to_csv(out_dir / "matrix.csv")
    (out_dir / "forgetting.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    plot_matrix(summary, out_dir / "matrix.png")
    if buffer is not None:
        write_buffer(buffer, out_dir / BUFFER_FILE)


def summary_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """Flat MLflow metrics of one method: ``acc``, ``bwt``, ``bwt_ci_low``, ``zs_retention_delta``..."""
    out = {}
    for key, value in summary.items():
        if isinstance(value, float | int) and not isinstance(value, bool):
            out[key] = float(value)
        elif key.endswith("_ci"):
            out[f"{key}_low"], out[f"{key}_high"] = float(value[0]), float(value[1])
    for i, row in enumerate(summary["matrix"]):
        for j, v in enumerate(row):
            out[f"R.{i + 1}.{j + 1}"] = v
    return out


def comparison_table(results: list[MethodResult]) -> pd.DataFrame:
    def cell(s: dict[str, Any], name: str) -> str:
        if name not in s:
            return "n/a"
        low, high = s.get(f"{name}_ci", (math.nan, math.nan))
        return f"{s[name]:+.3f} [{low:+.3f}, {high:+.3f}]"

    return pd.DataFrame(
        [
            {
                "method": r.method,
                "ACC": cell(r.summary, "acc"),
                "BWT": cell(r.summary, "bwt"),
                "FWT": cell(r.summary, "fwt"),
                "zero-shot AUROC start -> final": f"{r.summary.get('zs_auroc_start', math.nan):.3f} -> {r.summary.get('zs_auroc_final', math.nan):.3f}",
                "zero-shot retention (delta)": cell(r.summary, "zs_retention_delta"),
            }
            for r in results
        ]
    )


# --------------------------------------------------------------------------- the stage


def continual(cfg: Config, tracker: Any | None = None) -> list[MethodResult]:
    """Every requested method over the task sequence from the same starting model."""
    check_config(cfg)
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
    cfg.model = start_model.config
    task_map = None
    if cfg.task_map and Path(cfg.task_map).is_file():
        task_map = read_task_map(cfg.task_map, cfg.salt)
    elif cfg.task_map:
        print(f"task map {cfg.task_map} not found: tasks are matched on manifest columns only")
    train_set = StudyDataset(
        cfg.data_root,
        "train",
        cfg.views,
        key=cfg.key,
        max_speech_samples=int(cfg.max_speech_s * SPEECH_FS_HZ),
    )
    train_keys = [task_keys(train_set, spec, task_map) for spec in cfg.tasks]
    for spec, keys in zip(cfg.tasks, train_keys, strict=True):
        print(f"task {spec.name}: {len(keys)} training studies")
        if not keys:
            raise StageError(f"task {spec.name!r} matches no training studies (where={spec.where})")
    evalset = build_eval_set(cfg, task_map)
    torch.manual_seed(cfg.seed)
    untrained = MultimodalModel(start_model.config).to(device)
    shared = {
        "train_set": train_set,
        "index_of": {k: i for i, k in enumerate(train_set.keys)},
        "train_keys": train_keys,
        "evalset": evalset,
        "ecg_fs_hz": float(read_normalisation(cfg.data_root, "ecg").get("fs_hz", 500)),
        "start_eval": evaluate_state(start_model, cfg, evalset, device),
        "untrained_eval": evaluate_state(untrained, cfg, evalset, device),
        "origin": origin,
        # CWCL targets come from the frozen pretrained text side, identical for every method and task.
        "cwcl_references": build_reference_cache(start_model, cfg, train_set),
    }
    del untrained
    print(f"start ({origin}): R " + ", ".join(f"{v:.3f}" for v in task_row(evalset, shared["start_eval"])))
    return [run_method(cfg, method, start_model, shared, device, tracker) for method in methods]


def run(cfg: Config) -> int:
    """``make continual``: the sequence under one MLflow parent run, buffer written, final model registered."""
    from pipelines.registry import log_zero_shot_model, stage_run

    cards = sorted(Path("data_cards").glob(f"{Path(cfg.data_root).name}-*.md"))
    with stage_run("continual", cfg, experiment=cfg.experiment, data_cards=cards) as tracker:
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
                modalities=sorted({v.modality for v in cfg.views.values() if v.column is None}),
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
