"""Zero-shot evaluation of a registered model version: ``evaluate`` (metrics to MLflow) and ``report``
(the same, plus the self-contained HTML report under ``reports/`` logged as an artifact).

Loads ``model_name@model_ref`` (default the ``champion`` alias, falling back to the latest version),
embeds the processed test split (validation split for thresholds and temperature, train split for the
linear probe), and computes per-finding zero-shot AUROC / AUPRC / F1 / sensitivity / specificity with
bootstrap 95% CIs, calibration (ECE before/after temperature scaling), cross-modal retrieval R@1/5/10
both directions, the modality gap, a linear probe, equal-weight vs ZPE prompt ensembles, and the same
zero-shot metrics for an untrained model of the same architecture (chance floor) and the champion.
Metric names: ``zs_auroc_macro``, ``zs_auroc_macro_ci_low``, ``zs_auroc.<label>``, ... (one prefix per
task after the first: ``<task>.zs_...``), ``r@1.xray->radiology_report``, ``ece.<label>``.
The evaluated model version gets the tag ``eval_run_id``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from pipelines.data.dataset import ViewSpec, more_views
from pipelines.errors import StageError
from pipelines.evaluation import metrics as M
from pipelines.evaluation.calibration import apply_temperature, fit_temperature, reliability_bins
from pipelines.evaluation.zpe import weighted_class_embeddings, zpe_weights


@dataclasses.dataclass
class TaskConfig:
    """One zero-shot task: embeddings of ``view`` scored against the prompt set.

    ``binary`` (findings, diagnoses): each label is a pos/neg prompt pair; labels are the columns
    (named like the prompt set's labels, 1/0/-1/empty) of the manifest rows of ``labels_from``.
    ``multiclass`` (spoken intents, keywords): one class per sample, the value of column
    ``label_column`` of ``labels_from``'s rows; scored as a softmax over the classes' prompts (the
    prompt set's generic templates filled with each class name). ``classes`` empty = every value of
    the column in the train, validation and test splits."""

    view: str
    prompt_set: str
    labels_from: str
    kind: Literal["binary", "multiclass"] = "binary"
    label_column: str = dataclasses.field(default="", metadata={"help": "multiclass: the class column"})
    classes: list[str] = dataclasses.field(
        default_factory=list, metadata={"help": "multiclass: class names; empty = from the data"}
    )


def _tasks() -> dict[str, TaskConfig]:
    return {
        "xray_findings": TaskConfig(view="xray", prompt_set="cxr_findings", labels_from="radiology_report"),
        "ecg_diagnoses": TaskConfig(view="ecg", prompt_set="ecg_diagnoses", labels_from="cardiology_report"),
    }


@dataclasses.dataclass
class Config:
    model_name: str = dataclasses.field(default="morE-cxr-ecg-report", metadata={"help": "registered model"})
    model_ref: str = dataclasses.field(
        default="champion", metadata={"help": "alias or version number; champion falls back to latest"}
    )
    data_root: str = "data/processed/demo"
    split: str = dataclasses.field(default="test", metadata={"help": "split evaluated"})
    val_split: str = dataclasses.field(
        default="val", metadata={"help": "split for thresholds and temperature"}
    )
    train_split: str = dataclasses.field(default="train", metadata={"help": "split for the linear probe"})
    key: str = "study_id"
    views: dict[str, ViewSpec] = dataclasses.field(default_factory=more_views)
    tasks: dict[str, TaskConfig] = dataclasses.field(default_factory=_tasks)
    retrieval_pairs: list[str] = dataclasses.field(
        default_factory=lambda: ["xray:radiology_report", "ecg:cardiology_report", "xray:ecg"],
        metadata={"help": "view pairs a:b for retrieval and modality gap"},
    )
    prompt_weighting: Literal["equal", "zpe"] = dataclasses.field(
        default="equal", metadata={"help": "weights of the headline metrics; the report shows both"}
    )
    zpe_temperature: float = 0.01
    threshold_method: Literal["f1", "youden"] = "f1"
    missing_labels: Literal["exclude", "negative"] = dataclasses.field(
        default="exclude", metadata={"help": "labels not mentioned in the report: exclude or negative"}
    )
    bootstrap_resamples: int = 500
    bootstrap_stratified: bool = True
    calibration_bins: int = 10
    linear_probe: bool = True
    baselines: bool = dataclasses.field(default=True, metadata={"help": "also evaluate untrained + champion"})
    explain_examples: int = 2
    batch_size: int = 64
    max_speech_s: float = dataclasses.field(
        default=2.0,
        metadata={"help": "speech is cropped/padded from its start to this length (as in training)"},
    )
    device: str = "auto"
    seed: int = 0
    tracking_uri: str | None = None
    experiment: str = "evaluate"
    report_dir: str = "reports"


# --------------------------------------------------------------------------- pure core


@dataclasses.dataclass
class SplitEmbeddings:
    """One split, rows = studies: embeddings ``[N, D]`` and presence ``[N]`` per view, raw labels
    (1/0/-1/NaN) per ``labels_from`` view as ``{view: {label: [N]}}``."""

    keys: list[str]
    embeddings: dict[str, np.ndarray]
    present: dict[str, np.ndarray]
    labels: dict[str, dict[str, np.ndarray]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class TaskPrompts:
    """Normalised text embeddings per label: positive ``[P+, D]`` and negative ``[P-, D]`` templates."""

    positive: dict[str, np.ndarray]
    negative: dict[str, np.ndarray]
    texts: dict[str, dict[str, list[str]]] = dataclasses.field(default_factory=dict)


def pair_logits(x: np.ndarray, positive: np.ndarray, negative: np.ndarray, logit_scale: float) -> np.ndarray:
    """Logit of the pos/neg prompt-pair softmax: ``softmax(s [x.t+, x.t-])[0] = sigmoid(s (x.t+ - x.t-))``
    (CheXzero's positive/negative prompt scoring, Tiu et al. 2022)."""
    return logit_scale * (np.asarray(x) @ (np.asarray(positive) - np.asarray(negative)))


def prompt_weights(
    x: np.ndarray, prompts: TaskPrompts, label: str, method: str, temperature: float
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(positive, negative) template weights; ZPE needs paired templates (template j = pos j, neg j),
    otherwise it falls back to equal weights (None)."""
    pos, neg = prompts.positive[label], prompts.negative[label]
    if method != "zpe" or len(pos) != len(neg) or len(pos) < 2 or len(x) == 0:
        return None, None
    w = zpe_weights(x, np.stack([pos, neg], axis=1), temperature=temperature)
    return w, w


def class_embeddings(
    prompts: TaskPrompts, label: str, weights: tuple[np.ndarray | None, np.ndarray | None]
) -> tuple[np.ndarray, np.ndarray]:
    pos = weighted_class_embeddings(prompts.positive[label][:, None, :], weights[0])[0]
    neg = weighted_class_embeddings(prompts.negative[label][:, None, :], weights[1])[0]
    return pos, neg


@dataclasses.dataclass
class MulticlassResult:
    """Top-1 figures of a multi-class task over the test samples whose class is known."""

    classes: list[str]
    n: int
    accuracy: float
    accuracy_ci: tuple[float, float]
    confusion: np.ndarray  # [K, K], rows = true class, columns = predicted
    ece_top_label: float
    ece_top_label_calibrated: float
    temperature: float


@dataclasses.dataclass
class TaskResult:
    result: M.ClassificationResult
    temperature: dict[str, float]
    ece: dict[str, float]
    ece_calibrated: dict[str, float]
    bins: dict[str, dict[str, list[float]]]
    curves: dict[str, dict[str, list[float]]]
    weights: dict[str, list[float] | None]
    directions: dict[str, np.ndarray]
    multiclass: MulticlassResult | None = None


def evaluate_task(
    test: SplitEmbeddings,
    val: SplitEmbeddings | None,
    task: TaskConfig,
    prompts: TaskPrompts,
    logit_scale: float,
    cfg: Config,
    weighting: str | None = None,
) -> TaskResult:
    """Zero-shot metrics of one task from embeddings (no model needed: testable on its own)."""
    weighting = weighting or cfg.prompt_weighting
    if task.kind == "multiclass":
        return evaluate_multiclass_task(test, val, task, prompts, logit_scale, cfg, weighting)
    view = task.view
    rows = test.present[view]
    x = test.embeddings[view][rows]
    val_rows = val.present[view] if val is not None else None
    labels, val_labels, probs, val_probs = {}, {}, {}, {}
    out = TaskResult(M.ClassificationResult({}, {}, {}, {}, "", 0, 0), {}, {}, {}, {}, {}, {}, {})
    for label in prompts.positive:
        weights = prompt_weights(x, prompts, label, weighting, cfg.zpe_temperature)
        pos, neg = class_embeddings(prompts, label, weights)
        out.weights[label] = None if weights[0] is None else weights[0].tolist()
        out.directions[label] = pos - neg
        y_raw = np.asarray(test.labels.get(task.labels_from, {}).get(label, np.full(len(test.keys), np.nan)))[
            rows
        ]
        logits = pair_logits(x, pos, neg, logit_scale)
        temperature = 1.0
        if val is not None and val_rows is not None and val_rows.any():
            vx = val.embeddings[view][val_rows]
            vy_raw = np.asarray(
                val.labels.get(task.labels_from, {}).get(label, np.full(len(val.keys), np.nan))
            )[val_rows]
            v_logits = pair_logits(vx, pos, neg, logit_scale)
            vy, vkeep, _ = M.binarise_labels(vy_raw, cfg.missing_labels)
            temperature = fit_temperature(v_logits[vkeep], vy[vkeep])
            val_labels[label] = vy_raw
            val_probs[label] = apply_temperature(v_logits, temperature)
        labels[label] = y_raw
        probs[label] = apply_temperature(logits, temperature)
        out.temperature[label] = temperature
        _calibration(out, label, y_raw, apply_temperature(logits, 1.0), probs[label], cfg)
    out.result = _classification(labels, probs, val_labels, val_probs, cfg)
    return out


def _calibration(
    out: TaskResult, label: str, y_raw: np.ndarray, raw_prob: np.ndarray, prob: np.ndarray, cfg: Config
) -> None:
    """ECE before/after temperature scaling, reliability bins and ROC inputs of one label into ``out``."""
    y, keep, _ = M.binarise_labels(y_raw, cfg.missing_labels)
    if keep.any():
        out.ece[label] = reliability_bins(y[keep], raw_prob[keep], cfg.calibration_bins).ece
        bins = reliability_bins(y[keep], prob[keep], cfg.calibration_bins)
        out.ece_calibrated[label] = bins.ece
        out.bins[label] = bins.as_dict()
        out.curves[label] = {"y_true": y[keep].tolist(), "y_score": prob[keep].tolist()}


def _classification(
    labels: Mapping[str, np.ndarray],
    scores: Mapping[str, np.ndarray],
    val_labels: Mapping[str, np.ndarray],
    val_scores: Mapping[str, np.ndarray],
    cfg: Config,
) -> M.ClassificationResult:
    return M.evaluate_classification(
        labels,
        scores,
        val_labels or None,
        val_scores or None,
        threshold_method=cfg.threshold_method,
        missing=cfg.missing_labels,
        n_resamples=cfg.bootstrap_resamples,
        seed=cfg.seed,
        stratified=cfg.bootstrap_stratified,
    )


def class_matrix(
    x: np.ndarray, prompts: TaskPrompts, classes: Sequence[str], method: str, temperature: float
) -> tuple[np.ndarray, np.ndarray | None]:
    """``[K, D]`` class embeddings of a multi-class task and the ZPE template weights (None = equal).
    ZPE needs the same templates for every class (template j of class a pairs with template j of b)."""
    counts = {len(prompts.positive[c]) for c in classes}
    if method == "zpe" and len(counts) == 1 and counts.pop() >= 2 and len(x):
        templates = np.stack([prompts.positive[c] for c in classes], axis=1)  # [T, K, D]
        weights = zpe_weights(x, templates, temperature=temperature)
        return weighted_class_embeddings(templates, weights), weights
    return np.stack([weighted_class_embeddings(prompts.positive[c][:, None, :])[0] for c in classes]), None


def _class_indices(
    labels: Mapping[str, np.ndarray], classes: Sequence[str], rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One-hot label columns -> (class index per row, known mask); rows without exactly one class are
    unknown."""
    onehot = np.stack([np.asarray(labels[c], dtype=float)[rows] for c in classes], axis=1)
    known = ~np.isnan(onehot).any(axis=1) & (np.nan_to_num(onehot).sum(axis=1) == 1)
    return np.argmax(np.nan_to_num(onehot), axis=1), known


def evaluate_multiclass_task(
    test: SplitEmbeddings,
    val: SplitEmbeddings | None,
    task: TaskConfig,
    prompts: TaskPrompts,
    logit_scale: float,
    cfg: Config,
    weighting: str,
) -> TaskResult:
    """Multi-class zero-shot: softmax over the classes' prompt embeddings (CLIP's zero-shot classifier,
    Radford et al. 2021), temperature fitted on validation by NLL. Per class, the one-vs-rest
    probability goes through the same per-finding metrics as a binary task (AUROC, AUPRC, F1 at a
    validation threshold, CIs); the task adds top-1 accuracy with a bootstrap CI, the confusion
    matrix and the top-label calibration error."""
    classes = list(prompts.positive)
    view = task.view
    rows = test.present[view]
    x = test.embeddings[view][rows]
    matrix, weights = class_matrix(x, prompts, classes, weighting, cfg.zpe_temperature)
    test_labels = test.labels.get(task.labels_from, {})
    missing = np.full(len(test.keys), np.nan)
    y, known = _class_indices({c: test_labels.get(c, missing) for c in classes}, classes, rows)
    logits = logit_scale * (x @ matrix.T)
    temperature, val_labels, val_probs = 1.0, {}, {}
    if val is not None and val.present.get(view) is not None and val.present[view].any():
        val_rows = val.present[view]
        v_logits = logit_scale * (val.embeddings[view][val_rows] @ matrix.T)
        v_raw = val.labels.get(task.labels_from, {})
        v_missing = np.full(len(val.keys), np.nan)
        vy, vknown = _class_indices({c: v_raw.get(c, v_missing) for c in classes}, classes, val_rows)
        if vknown.any():
            temperature = fit_temperature(v_logits[vknown], vy[vknown])
        v_probs = apply_temperature(v_logits, temperature)
        for k, c in enumerate(classes):
            val_labels[c] = np.asarray(v_raw.get(c, v_missing), dtype=float)[val_rows]
            val_probs[c] = v_probs[:, k]
    probs = apply_temperature(logits, temperature)
    raw_probs = apply_temperature(logits, 1.0)
    out = TaskResult(M.ClassificationResult({}, {}, {}, {}, "", 0, 0), {}, {}, {}, {}, {}, {}, {})
    labels, scores = {}, {}
    for k, c in enumerate(classes):
        labels[c] = np.asarray(test_labels.get(c, missing), dtype=float)[rows]
        scores[c] = probs[:, k]
        out.temperature[c] = temperature
        out.weights[c] = None if weights is None else weights.tolist()
        out.directions[c] = matrix[k]
        _calibration(out, c, labels[c], raw_probs[:, k], probs[:, k], cfg)
    out.result = _classification(labels, scores, val_labels, val_probs, cfg)
    predicted = np.argmax(logits, axis=1)
    correct = predicted[known] == y[known]
    accuracy, low, high = M.accuracy_ci(correct, cfg.bootstrap_resamples, cfg.seed)

    def top_label_ece(p: np.ndarray) -> float:
        if not known.any():
            return math.nan
        return reliability_bins(correct, p[known].max(axis=1), cfg.calibration_bins).ece

    out.multiclass = MulticlassResult(
        classes=classes,
        n=int(known.sum()),
        accuracy=accuracy,
        accuracy_ci=(low, high),
        confusion=M.confusion_matrix(y[known], predicted[known], len(classes)),
        ece_top_label=top_label_ece(raw_probs),
        ece_top_label_calibrated=top_label_ece(probs),
        temperature=temperature,
    )
    return out


def retrieval_and_gap(
    split: SplitEmbeddings, pairs: Sequence[str]
) -> tuple[dict[str, float], list[dict], list[dict]]:
    """Retrieval metrics (MLflow names) and report rows, over studies that have both views."""
    metrics: dict[str, float] = {}
    retrieval_rows, gap_rows = [], []
    for pair in pairs:
        a, b = (p.strip() for p in pair.split(":"))
        if a not in split.embeddings or b not in split.embeddings:
            continue
        both = split.present[a] & split.present[b]
        if both.sum() < 2:
            continue
        ea, eb = split.embeddings[a][both], split.embeddings[b][both]
        scores = M.retrieval_both_directions(ea, eb, a, b)
        metrics.update(scores)
        for src, dst in ((a, b), (b, a)):
            retrieval_rows.append(
                {
                    "query": src,
                    "target": dst,
                    "n": int(both.sum()),
                    **{f"R@{k}": scores[f"r@{k}.{src}->{dst}"] for k in (1, 5, 10)},
                    "chance R@1": scores[f"chance_r@1.{a}-{b}"],
                }
            )
        gap = M.modality_gap(ea, eb)
        metrics.update({f"gap.{k}.{a}-{b}": v for k, v in gap.items()})
        gap_rows.append({"pair": f"{a} / {b}", **gap})
    return metrics, retrieval_rows, gap_rows


def task_metric_names(task_name: str, first: bool, tr: TaskResult) -> dict[str, float]:
    """The first task's metrics carry the bare shared names (``zs_auroc_macro``...), every task's
    also appear under ``<task>.`` so that nothing is ambiguous."""
    named = M.classification_metric_names(tr.result)
    named.update({f"ece.{M.metric_label(k)}": v for k, v in tr.ece.items() if not math.isnan(v)})
    named.update(
        {f"ece_calibrated.{M.metric_label(k)}": v for k, v in tr.ece_calibrated.items() if not math.isnan(v)}
    )
    finite_ece = [v for v in tr.ece.values() if not math.isnan(v)]
    if finite_ece:
        named["zs_ece_macro"] = float(np.mean(finite_ece))
    if tr.multiclass is not None:
        mc = tr.multiclass
        extra = {
            "zs_accuracy": mc.accuracy,
            "zs_accuracy_ci_low": mc.accuracy_ci[0],
            "zs_accuracy_ci_high": mc.accuracy_ci[1],
            "zs_ece_top_label": mc.ece_top_label,
            "zs_ece_top_label_calibrated": mc.ece_top_label_calibrated,
        }
        named.update({k: float(v) for k, v in extra.items() if not math.isnan(v)})
    out = {f"{task_name}.{k}": v for k, v in named.items()}
    if first:
        out.update(named)
    return out


# --------------------------------------------------------------------------- glue (registry, data, model)


def _load_model(cfg: Config, ref: str) -> tuple[Any, Any]:
    from pipelines.registry import load_model_version

    try:
        return load_model_version(cfg.model_name, ref)
    except Exception as err:  # the registry raises its own types; champion may simply not be set yet
        if ref != "champion":
            raise StageError(f"cannot load model {cfg.model_name}@{ref}: {err}") from err
        print(f"no {cfg.model_name}@champion ({err}); evaluating the latest version")
        try:
            return load_model_version(cfg.model_name, "latest")
        except Exception as err2:
            raise StageError(f"cannot load model {cfg.model_name} (champion or latest): {err2}") from err2


def _dataset(cfg: Config, split: str) -> Any:
    from pipelines.data.dataset import StudyDataset
    from pipelines.training import SPEECH_FS_HZ

    return StudyDataset(
        cfg.data_root, split, cfg.views, key=cfg.key, max_speech_samples=int(cfg.max_speech_s * SPEECH_FS_HZ)
    )


def _class_column(dataset: Any, task: TaskConfig) -> Any:
    """A multi-class task's label column (pandas Series, NaN where the view or value is missing)."""
    values = dataset.labels(task.labels_from, [task.label_column])[task.label_column]
    return values.where(values.notna() & (values.astype(str).str.strip() != ""))


def resolve_classes(cfg: Config) -> Config:
    """``cfg`` with every multi-class task's ``classes`` filled: as configured, else the prompt set's
    labels, else the sorted values of ``label_column`` over the train, validation and test splits."""
    from pipelines.evaluation.prompts import load_prompt_set

    tasks = dict(cfg.tasks)
    for name, task in cfg.tasks.items():
        if task.kind != "multiclass" or task.classes:
            continue
        if not task.label_column:
            raise StageError(
                f"task {name}: a multiclass task needs label_column (the manifest column of classes)"
            )
        classes = load_prompt_set(task.prompt_set).labels
        if not classes:
            seen: set[str] = set()
            for split in dict.fromkeys((cfg.train_split, cfg.val_split, cfg.split)):
                seen.update(_class_column(_dataset(cfg, split), task).dropna().astype(str))
            classes = sorted(seen)
        if len(classes) < 2:
            raise StageError(
                f"task {name}: column {task.label_column!r} of {task.labels_from} has {len(classes)} "
                f"class(es) in {cfg.data_root}; a multiclass task needs at least 2"
            )
        tasks[name] = dataclasses.replace(task, classes=list(classes))
    return dataclasses.replace(cfg, tasks=tasks)


def _embed(model: Any, cfg: Config, split: str) -> SplitEmbeddings:
    """Embeddings per view + labels for one split (``pipelines.data.dataset.StudyDataset`` and
    ``embed_split``). A multi-class task's labels become one-hot columns named by class."""
    from pipelines.training import embed_dataset, resolve_device

    dataset = _dataset(cfg, split)
    feats, masks = embed_dataset(model, dataset, cfg.views, cfg.batch_size, resolve_device(cfg.device))
    embeddings = {v: f.numpy().astype(np.float64) for v, f in feats.items()}
    present = {v: m.numpy().astype(bool) for v, m in masks.items()}
    labels: dict[str, dict[str, np.ndarray]] = {}
    for task in cfg.tasks.values():
        if task.labels_from not in cfg.views:
            continue
        columns = labels.setdefault(task.labels_from, {})
        if task.kind == "multiclass":
            values = _class_column(dataset, task)
            known = values.notna().to_numpy()
            for c in task.classes:
                columns[c] = np.where(known, (values.astype(str) == c).to_numpy(dtype=float), np.nan)
        else:
            names = _label_columns(task)
            table = dataset.labels(task.labels_from, names)
            columns.update({c: table[c].to_numpy(dtype=float) for c in names})
    return SplitEmbeddings(list(dataset.keys), embeddings, present, labels)


def _prompt_set(task: TaskConfig) -> Any:
    """The task's prompt set; for a multi-class task, one entry per class (the class's own prompts when
    the file has them, else the set's generic templates filled with the class name)."""
    from pipelines.evaluation.prompts import load_prompt_set

    prompt_set = load_prompt_set(task.prompt_set)
    if task.kind != "multiclass":
        return prompt_set
    filled = prompt_set.with_labels(task.classes)
    own = set(prompt_set.positives)
    return dataclasses.replace(
        prompt_set,
        positives={c: (prompt_set if c in own else filled).positives[c] for c in task.classes},
        negatives={c: (prompt_set if c in own else filled).negatives[c] for c in task.classes},
    )


def _label_columns(task: TaskConfig) -> list[str]:
    return list(_prompt_set(task).labels)


def _encode_texts(model: Any, texts: Sequence[str]) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model.encode("text", list(texts)).float().cpu().numpy().astype(np.float64)


def task_prompts(model: Any, task: TaskConfig) -> TaskPrompts:
    """The task's prompt texts encoded by ``model``'s text tower (``[P, D]`` per label and side)."""
    prompt_set = _prompt_set(task)
    prompts = TaskPrompts({}, {}, {})
    for label in prompt_set.labels:
        positives, negatives = prompt_set.texts_for(label)
        prompts.positive[label] = _encode_texts(model, positives)
        # multi-class sets have no negatives: an empty [0, D] block, not a call with no texts
        prompts.negative[label] = (
            _encode_texts(model, negatives) if negatives else prompts.positive[label][:0]
        )
        prompts.texts[label] = {"positive": list(positives), "negative": list(negatives)}
    return prompts


def _logit_scale(model: Any) -> float:
    scale = getattr(model, "logit_scale", None)
    return float(scale.detach().exp()) if scale is not None else 100.0


def _zero_shot(
    model: Any, cfg: Config, test: SplitEmbeddings, val: SplitEmbeddings | None, weighting: str | None = None
) -> dict[str, TaskResult]:
    out = {}
    for name, task in cfg.tasks.items():
        if task.view not in test.embeddings or not test.present[task.view].any():
            print(f"task {name}: no {task.view} embeddings in split {cfg.split}; skipped")
            continue
        out[name] = evaluate_task(
            test, val, task, task_prompts(model, task), _logit_scale(model), cfg, weighting
        )
    return out


def evaluate_model(model: Any, cfg: Config, full: bool) -> dict[str, Any]:
    """Everything about one model: metrics (MLflow names) and, when ``full``, the report pieces."""
    cfg = resolve_classes(cfg)
    test = _embed(model, cfg, cfg.split)
    val = _embed(model, cfg, cfg.val_split)
    tasks = _zero_shot(model, cfg, test, val)
    metrics: dict[str, float] = {}
    for i, (name, tr) in enumerate(tasks.items()):
        metrics.update(task_metric_names(name, i == 0, tr))
    retrieval, retrieval_rows, gap_rows = retrieval_and_gap(test, cfg.retrieval_pairs)
    metrics.update(retrieval)
    out: dict[str, Any] = {"metrics": metrics, "tasks": tasks, "test": test}
    if not full:
        return out
    other = "zpe" if cfg.prompt_weighting == "equal" else "equal"
    alternative = _zero_shot(model, cfg, test, val, other)
    out["prompt_weighting"] = [
        {
            "task": name,
            f"{cfg.prompt_weighting} weights: macro AUROC": tasks[name].result.macro["auroc"],
            f"{other} weights: macro AUROC": alternative[name].result.macro["auroc"],
        }
        for name in tasks
    ]
    out["retrieval_rows"], out["gap_rows"] = retrieval_rows, gap_rows
    if cfg.linear_probe:
        train = _embed(model, cfg, cfg.train_split)
        rows = []
        for name, task in cfg.tasks.items():
            if name not in tasks:
                continue
            tr_rows, te_rows = train.present[task.view], test.present[task.view]
            probe = M.linear_probe(
                train.embeddings[task.view][tr_rows],
                {k: v[tr_rows] for k, v in train.labels.get(task.labels_from, {}).items()},
                test.embeddings[task.view][te_rows],
                {k: v[te_rows] for k, v in test.labels.get(task.labels_from, {}).items()},
                missing=cfg.missing_labels,
                seed=cfg.seed,
            )
            for label, p in probe.items():
                zs = (
                    tasks[name].result.per_class[label].metrics["auroc"]
                    if label in tasks[name].result.per_class
                    else math.nan
                )
                rows.append(
                    {
                        "task": name,
                        "finding": label,
                        "zero-shot AUROC": zs,
                        "linear probe AUROC": p["auroc"],
                        "n train": int(p["n_train"]),
                    }
                )
                if not math.isnan(p["auroc"]):
                    metrics[f"probe_auroc.{M.metric_label(label)}"] = p["auroc"]
        out["linear_probe"] = rows
    return out


def _explanations(model: Any, cfg: Config, evaluation: Mapping[str, Any]) -> dict[str, list[dict]]:
    """Saliency for the first few test studies with each image view, for the finding scored highest."""
    import torch

    from pipelines.evaluation.explain import ecg_saliency, xray_heatmap

    dataset = _dataset(cfg, cfg.split)
    out: dict[str, list[dict]] = {"xray": [], "ecg": []}
    for name, tr in evaluation["tasks"].items():
        task = cfg.tasks[name]
        modality = cfg.views[task.view].modality
        if modality not in out:
            continue
        done = 0
        for item in (dataset[i] for i in range(len(dataset))):
            if done >= cfg.explain_examples:
                break
            inputs = item.get(task.view)
            if inputs is None:
                continue
            with torch.no_grad():
                mask = item.get(f"{task.view}_lead_mask")
                kwargs = {"lead_mask": mask.unsqueeze(0)} if mask is not None else {}
                emb = (
                    model.encode(cfg.views[task.view].tower, inputs.unsqueeze(0), **kwargs)[0].float().numpy()
                )
            label = max(tr.directions, key=lambda k: float(emb @ tr.directions[k]))
            caption = f"{name}: top finding '{label}' (study {done + 1} of the test split)"
            if modality == "xray":
                heat = xray_heatmap(
                    model, inputs, tr.directions[label], tower=cfg.views[task.view].tower, seed=cfg.seed
                )
                out["xray"].append({"image": inputs[0].numpy(), "heatmap": heat, "caption": caption})
            else:
                sal, importance = ecg_saliency(
                    model,
                    inputs,
                    tr.directions[label],
                    lead_mask=item.get(f"{task.view}_lead_mask"),
                    tower=cfg.views[task.view].tower,
                    seed=cfg.seed,
                )
                out["ecg"].append(
                    {"signal": inputs.numpy(), "saliency": sal, "importance": importance, "caption": caption}
                )
            done += 1
    return out


def _untrained_like(model: Any, seed: int) -> Any:
    import torch

    torch.manual_seed(seed)
    fresh = type(model)(model.config)
    fresh.eval()
    return fresh


def _baseline_rows(
    cfg: Config, model: Any, version: Any, evaluation: Mapping[str, Any]
) -> tuple[list[dict], dict[str, float]]:
    def row(name: str, metrics: Mapping[str, float]) -> dict[str, Any]:
        return {
            "model": name,
            "zero-shot macro AUROC": metrics.get("zs_auroc_macro", math.nan),
            "95% CI": (
                metrics.get("zs_auroc_macro_ci_low", math.nan),
                metrics.get("zs_auroc_macro_ci_high", math.nan),
            ),
            "macro AUPRC": metrics.get("zs_auprc_macro", math.nan),
            "macro F1": metrics.get("zs_f1_macro", math.nan),
            **(
                {
                    "top-1 accuracy": metrics["zs_accuracy"],
                    "accuracy 95% CI": (
                        metrics.get("zs_accuracy_ci_low", math.nan),
                        metrics.get("zs_accuracy_ci_high", math.nan),
                    ),
                }
                if "zs_accuracy" in metrics
                else {}
            ),
        }

    rows = [row(f"{cfg.model_name} v{getattr(version, 'version', '?')} (evaluated)", evaluation["metrics"])]
    extra: dict[str, float] = {}
    untrained = evaluate_model(_untrained_like(model, cfg.seed), cfg, full=False)["metrics"]
    rows.append(row("untrained, same architecture (chance floor)", untrained))
    extra.update({f"baseline_untrained.{k}": v for k, v in untrained.items() if k.startswith("zs_")})
    if "zs_accuracy" in evaluation["metrics"]:
        n_classes = len(next(t for t in evaluation["tasks"].values() if t.multiclass).multiclass.classes)
        rows.append({"model": f"chance (1 of {n_classes} classes)", "top-1 accuracy": 1.0 / n_classes})
    if cfg.model_ref != "champion":
        try:
            champion, champion_version = _load_model(
                dataclasses.replace(cfg, model_ref="champion"), "champion"
            )
        except StageError:
            champion = None
        if champion is not None and getattr(champion_version, "version", None) != getattr(
            version, "version", None
        ):
            champ = evaluate_model(champion, cfg, full=False)["metrics"]
            rows.append(row(f"champion v{champion_version.version}", champ))
            extra.update({f"baseline_champion.{k}": v for k, v in champ.items() if k.startswith("zs_")})
    return rows, extra


def _report_context(
    cfg: Config,
    version: Any,
    run_id: str,
    evaluation: Mapping[str, Any],
    baselines: list[dict],
    explanations: Mapping[str, Any],
) -> dict[str, Any]:
    from pipelines.evaluation.report import task_context

    test: SplitEmbeddings = evaluation["test"]
    modalities = {spec.modality for spec in cfg.views.values()}
    cards = [
        card
        for card in sorted(Path("data_cards").glob(f"{Path(cfg.data_root).name}-*.md"))
        if card.stem.rsplit("-", 1)[-1] in modalities | {"raw"}
    ]
    data_summary = [
        {
            "split": cfg.split,
            "view": view,
            "studies with this view": int(mask.sum()),
            "studies": len(test.keys),
        }
        for view, mask in test.present.items()
    ]
    embeddings, modality, label = [], [], []
    for view, mask in test.present.items():
        embeddings.append(test.embeddings[view][mask])
        modality.extend([view] * int(mask.sum()))
        label.extend(["study"] * int(mask.sum()))
    tasks = []
    prompts = {}
    for name, tr in evaluation["tasks"].items():
        tasks.append(
            task_context(
                name,
                tr.result,
                tr.curves,
                tr.bins,
                tr.ece,
                _temperature_text(cfg, tr),
                multiclass=_multiclass_context(tr.multiclass),
            )
        )
        prompts[name] = _task_prompts_texts(cfg.tasks[name])
    return {
        "model": {
            "name": cfg.model_name,
            "version": str(getattr(version, "version", "?")),
            "requested": cfg.model_ref,
            "evaluation run": run_id,
            "data": cfg.data_root,
            "split": cfg.split,
        },
        "model_card": {"data_cards": [{"name": c.stem, "summary": _card_summary(c)} for c in cards]},
        "data_summary": data_summary,
        "tasks": tasks,
        "baselines": baselines,
        "prompt_weighting": evaluation.get("prompt_weighting"),
        "linear_probe": evaluation.get("linear_probe"),
        "retrieval": evaluation.get("retrieval_rows"),
        "modality_gap": evaluation.get("gap_rows"),
        "embedding_map": {
            "embeddings": np.concatenate(embeddings) if embeddings else np.zeros((0, 2)),
            "modality": modality,
            "label": label,
        },
        "explanations": explanations,
        "prompts": prompts,
    }


def _temperature_text(cfg: Config, tr: TaskResult) -> str:
    if tr.multiclass is not None:
        return (
            f"Multi-class: a softmax over {len(tr.multiclass.classes)} classes; one temperature fitted on "
            f"{cfg.val_split}: {tr.multiclass.temperature:.2f}. Per class, the one-vs-rest probability."
        )
    return f"Temperature fitted on {cfg.val_split}: " + ", ".join(
        f"{k} {v:.2f}" for k, v in tr.temperature.items()
    )


def _multiclass_context(mc: MulticlassResult | None) -> dict[str, Any] | None:
    if mc is None:
        return None
    return {
        "classes": mc.classes,
        "n": mc.n,
        "accuracy": mc.accuracy,
        "accuracy_ci": mc.accuracy_ci,
        "chance": 1.0 / len(mc.classes),
        "confusion": mc.confusion.tolist(),
        "ece_top_label": mc.ece_top_label,
        "ece_top_label_calibrated": mc.ece_top_label_calibrated,
    }


def _task_prompts_texts(task: TaskConfig) -> dict[str, dict[str, list[str]]]:
    prompt_set = _prompt_set(task)
    return {
        label: dict(zip(("positive", "negative"), map(list, prompt_set.texts_for(label)), strict=True))
        for label in prompt_set.labels
    }


def _card_summary(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    body = text.split("---", 2)[-1].strip() if text.startswith("---") else text
    return " ".join(body.split())[:400]


def _run(cfg: Config, with_report: bool) -> int:
    from pipelines.registry import stage_run
    from pipelines.registry.gates import SPLIT_DIGEST_PARAM, split_digest

    if cfg.tracking_uri:
        import mlflow

        mlflow.set_tracking_uri(cfg.tracking_uri)
    model, version = _load_model(cfg, cfg.model_ref)
    model.eval()
    cfg = resolve_classes(cfg)
    stage = "report" if with_report else "evaluate"
    with stage_run(stage, cfg, experiment=cfg.experiment) as tracker:
        evaluation = evaluate_model(model, cfg, full=with_report)
        # Which rows were tested, as a digest of pseudonymous keys: promotion compares it.
        tracker.log_params({SPLIT_DIGEST_PARAM: split_digest(evaluation["test"].keys)})
        metrics = dict(evaluation["metrics"])
        baselines: list[dict] = []
        if cfg.baselines:
            baselines, extra = _baseline_rows(cfg, model, version, evaluation)
            metrics.update(extra)
        tracker.log_metrics({k: float(v) for k, v in metrics.items() if not math.isnan(float(v))}, 0)
        _tag_version(cfg, version, tracker.run_id)
        headline = metrics.get("zs_auroc_macro", math.nan)
        accuracy = (
            f"; top-1 accuracy {metrics['zs_accuracy']:.3f} (95% CI {metrics['zs_accuracy_ci_low']:.3f}-"
            f"{metrics['zs_accuracy_ci_high']:.3f})"
            if "zs_accuracy" in metrics
            else ""
        )
        print(
            f"{cfg.model_name} v{getattr(version, 'version', '?')}: zero-shot macro AUROC {headline:.3f} "
            f"(95% CI {metrics.get('zs_auroc_macro_ci_low', math.nan):.3f}-{metrics.get('zs_auroc_macro_ci_high', math.nan):.3f})"
            + accuracy
        )
        if with_report:
            from pipelines.evaluation.report import render_report

            explanations = _explanations(model, cfg, evaluation) if cfg.explain_examples else {}
            context = _report_context(cfg, version, tracker.run_id, evaluation, baselines, explanations)
            path = render_report(
                context,
                Path(cfg.report_dir) / f"{cfg.model_name}-v{getattr(version, 'version', 'unknown')}.html",
            )
            _log_file(tracker, path)
            print(f"report: {path.resolve()}")
    return 0


def _tag_version(cfg: Config, version: Any, run_id: str) -> None:
    import mlflow

    if getattr(version, "version", None) is None:
        return
    mlflow.MlflowClient(tracking_uri=cfg.tracking_uri).set_model_version_tag(
        cfg.model_name, str(version.version), "eval_run_id", run_id
    )


def _log_file(tracker: Any, path: Path) -> None:
    if hasattr(tracker, "log_artifact"):
        tracker.log_artifact(str(path), "report")
    else:
        import mlflow

        mlflow.log_artifact(str(path), "report")


def run(cfg: Config) -> int:
    """``make evaluate``: metrics to MLflow, ``eval_run_id`` tag on the model version."""
    return _run(cfg, with_report=False)


def run_report(cfg: Config) -> int:
    """``make report``: evaluation plus the HTML report under ``report_dir``, logged as an artifact."""
    return _run(cfg, with_report=True)
