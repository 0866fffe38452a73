"""Scoring a model state on a task sequence (continual learning): per task, the zero-shot probabilities of
its own findings on its studies (or their top-1 retrieval hits), and the held-out zero-shot tasks on the
whole evaluation split. Probabilities come from the same :class:`ZeroShotClassifier` as ``make
evaluate`` (equal prompt weights, no temperature: a temperature does not change an AUROC), so the
macro AUROC of a task's column block is ``make evaluate``'s figure on those studies.

The continual stage passes its config; what is read from it is spelled out by
:class:`SequenceScoringSettings` and :class:`SequenceTask`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from pipelines.continual_methods import metrics as CM
from pipelines.errors import StageError
from pipelines.evaluation import metrics as M
from pipelines.evaluation.embeddings import SplitEmbeddings, embed_split
from pipelines.evaluation.prompts import load_prompt_set
from pipelines.evaluation.retrieval import study_top1_hits
from pipelines.evaluation.tasks import ZeroShotTaskConfig
from pipelines.evaluation.zero_shot import TaskPrompts, ZeroShotClassifier, logit_scale_of, task_prompts

Finding = tuple[str, str]  # (zero-shot task, label)


class SequenceTask(Protocol):
    """One task of the sequence as scoring sees it."""

    name: str
    findings: dict[str, list[str]]


class SequenceScoringSettings(Protocol):
    """The settings scoring reads from the continual stage's config."""

    zero_shot_tasks: dict[str, ZeroShotTaskConfig]
    r_measure: str
    held_out: list[str]
    missing_labels: str
    views: dict[str, Any]
    eval_batch_size: int
    precision: str
    objective: Any  # .pairs: the objective's view pairs (.a, .b), scored when r_measure=retrieval


@dataclasses.dataclass
class EvalSet:
    """The evaluation split, embedded per call. Fixed once: the rows of each task's studies, the raw
    labels per ``labels_from`` view, and, for zero-shot AUROC, each task's findings (``(zero-shot task,
    label)`` per column) with their binary targets ``[n_j, L_j]`` (NaN = uncertain, missing, or the
    study lacks the scored view); the same for the held-out zero-shot task over ``zs_rows``."""

    dataset: Any
    task_rows: list[np.ndarray]
    labels: dict[str, dict[str, np.ndarray]]
    task_findings: list[list[Finding]]
    task_targets: list[np.ndarray | None]
    zs_rows: np.ndarray
    zs_findings: list[Finding]
    zs_targets: np.ndarray


@dataclasses.dataclass
class Evaluation:
    """One model state on the eval split: per task, per-study scores (``[n_j]`` retrieval hits or
    ``[n_j, L_j]`` zero-shot probabilities of its findings), and the held-out task's ``[n_zs, L]``."""

    task_scores: list[np.ndarray]
    zero_shot: np.ndarray


def findings_of(
    cfg: SequenceScoringSettings, owner: str, findings: Mapping[str, list[str] | None]
) -> list[Finding]:
    """``(zero-shot task, label)`` columns; ``None`` labels = every label of the task's prompt set."""
    out = []
    for name, labels in findings.items():
        if name not in cfg.zero_shot_tasks:
            raise StageError(f"{owner}: zero-shot task {name!r} not in {sorted(cfg.zero_shot_tasks)}")
        prompt_set = cfg.zero_shot_tasks[name].prompt_set
        known = list(load_prompt_set(prompt_set).labels)
        unknown = [label for label in labels or [] if label not in known]
        if unknown:
            raise StageError(f"{owner}: {unknown} not in prompt set {prompt_set!r}")
        out += [(name, label) for label in (known if labels is None else labels)]
    return out


def task_findings(cfg: SequenceScoringSettings, spec: SequenceTask) -> list[Finding]:
    out = findings_of(cfg, f"task {spec.name!r}", dict(spec.findings))
    if cfg.r_measure == "zero_shot_auroc" and not out:
        raise StageError(f"task {spec.name!r} has no `findings` to score (r_measure=zero_shot_auroc)")
    return out


def finding_targets(
    dataset: Any,
    labels: dict[str, dict[str, np.ndarray]],
    rows: np.ndarray,
    findings: list[Finding],
    tasks: Mapping[str, ZeroShotTaskConfig],
    missing: str,
) -> np.ndarray:
    """``[len(rows), len(findings)]`` binary targets as ``make evaluate`` binarises them (1/0; NaN where
    excluded or where the study has no input of the scored view)."""
    out = np.full((len(rows), len(findings)), np.nan)
    has_view: dict[str, np.ndarray] = {}  # per scored view, not per finding: the lookup is per study
    for c, (name, label) in enumerate(findings):
        task = tasks[name]
        raw = labels.get(task.labels_from, {}).get(label, np.full(len(dataset.keys), np.nan))[rows]
        y, keep, _ = M.binarise_labels(raw, missing)
        if task.view not in has_view:
            has_view[task.view] = np.array(
                [dataset.view_row(task.view, dataset.keys[r]) is not None for r in rows], dtype=bool
            )
        keep &= has_view[task.view]
        out[keep, c] = y[keep]
    return out


def eval_set(
    cfg: SequenceScoringSettings, dataset: Any, specs: Sequence[SequenceTask], task_rows: list[np.ndarray]
) -> EvalSet:
    """The :class:`EvalSet` of ``dataset`` whose task ``j`` is the studies ``task_rows[j]``."""
    tasks = cfg.zero_shot_tasks
    findings = [task_findings(cfg, spec) for spec in specs]
    zs_findings = findings_of(cfg, "held_out", dict.fromkeys(cfg.held_out))
    columns: dict[str, list[str]] = {}
    for name, label in [f for task in findings for f in task] + zs_findings:
        view = tasks[name].labels_from
        if view in cfg.views and label not in columns.setdefault(view, []):
            columns[view].append(label)
    labels = {}
    for view, names in columns.items():
        table = dataset.labels(view, names)
        labels[view] = {c: table[c].to_numpy(dtype=float) for c in names}
    zs_views = {tasks[name].view for name in cfg.held_out}
    zs_rows = np.flatnonzero(
        [any(dataset.view_row(v, k) is not None for v in zs_views) for k in dataset.keys]
    ).astype(int)
    missing = cfg.missing_labels
    targets: list[np.ndarray | None] = [
        finding_targets(dataset, labels, rows, findings[j], tasks, missing)
        if cfg.r_measure == "zero_shot_auroc"
        else None
        for j, rows in enumerate(task_rows)
    ]
    zs_targets = finding_targets(dataset, labels, zs_rows, zs_findings, tasks, missing)
    return EvalSet(dataset, task_rows, labels, findings, targets, zs_rows, zs_findings, zs_targets)


def zero_shot_probabilities(
    split: SplitEmbeddings,
    rows: np.ndarray,
    findings: list[Finding],
    tasks: Mapping[str, ZeroShotTaskConfig],
    prompts: Mapping[str, TaskPrompts],
    logit_scale: float,
    missing: str = "exclude",
) -> np.ndarray:
    """``[len(rows), len(findings)]`` zero-shot probabilities of the studies ``rows`` (equal prompt
    weights, uncalibrated); NaN where a study lacks the view or the label is excluded."""
    split = split.rows(rows)
    out = np.full((len(rows), len(findings)), np.nan)
    for name in dict.fromkeys(n for n, _ in findings):
        task = tasks[name]
        labels = [label for n, label in findings if n == name]
        if task.view not in split.embeddings or not split.present[task.view].any():
            continue
        classifier = ZeroShotClassifier.build(prompts[name].only(labels), task.mode, logit_scale)
        scored = np.flatnonzero(split.present[task.view])
        probs = classifier.probabilities(split.embeddings[task.view][scored])
        for k, label in enumerate(labels):
            raw = split.labels.get(task.labels_from, {}).get(label, np.full(len(rows), np.nan))[scored]
            _, keep, _ = M.binarise_labels(raw, missing)
            out[scored[keep], findings.index((name, label))] = probs[keep, k]
    return out


def task_row(evalset: EvalSet, evaluation: Evaluation) -> list[float]:
    """R entries of one model state (NaN studies left out)."""
    row = []
    for j, scores in enumerate(evaluation.task_scores):
        targets = evalset.task_targets[j]
        if targets is None:
            row.append(CM.task_entry(scores[np.isfinite(scores)]))
        else:
            row.append(CM.task_entry(scores, targets))
    return row


def evaluate_state(model: Any, cfg: SequenceScoringSettings, evalset: EvalSet, device: Any) -> Evaluation:
    """Scores of one model state: per task its findings' probabilities (``r_measure=zero_shot_auroc``)
    or its studies' top-1 retrieval hits over the objective's pairs (``retrieval``); the held-out
    tasks' probabilities."""
    split = embed_split(model, evalset.dataset, cfg.views, (), cfg.eval_batch_size, device, cfg.precision)
    split.labels = evalset.labels
    tasks = cfg.zero_shot_tasks
    names = {n for n, _ in evalset.zs_findings} | {n for f in evalset.task_findings for n, _ in f}
    prompts = {name: task_prompts(model, tasks[name]) for name in sorted(names)}
    scale = logit_scale_of(model)

    def probabilities(rows: np.ndarray, findings: list[Finding]) -> np.ndarray:
        return zero_shot_probabilities(split, rows, findings, tasks, prompts, scale, cfg.missing_labels)

    if cfg.r_measure == "retrieval":
        pairs = [(p.a, p.b) for p in cfg.objective.pairs]
        scores = [study_top1_hits(split, rows, pairs) for rows in evalset.task_rows]
    else:
        scores = [probabilities(r, f) for r, f in zip(evalset.task_rows, evalset.task_findings, strict=True)]
    return Evaluation(scores, probabilities(evalset.zs_rows, evalset.zs_findings))
