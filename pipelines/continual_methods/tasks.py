"""The tasks of a continual sequence: which studies each one holds, by manifest columns or a task map."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd

from pipelines.continual_methods.replay import manifest_text
from pipelines.data import ids
from pipelines.data.dataset import StudyDataset
from pipelines.errors import StageError


@dataclasses.dataclass
class TaskSpec:
    """One task of the sequence: the studies whose manifest rows (or task map) match every ``where``;
    ``findings`` (zero-shot task of ``zero_shot_tasks`` -> labels) are what R scores on its test studies
    when ``r_measure=zero_shot_auroc``."""

    name: str
    where: dict[str, str] = dataclasses.field(default_factory=dict)
    findings: dict[str, list[str]] = dataclasses.field(default_factory=dict)


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
                attrs[column] = manifest_text(value)
    if task_map is not None and key in task_map and not attrs.get("task"):
        attrs["task"] = task_map[key]
    return attrs


def task_keys(dataset: StudyDataset, spec: TaskSpec, task_map: dict[str, str] | None) -> list[str]:
    """Keys (dataset order) of the studies matching every ``spec.where`` filter."""
    out = []
    for key in dataset.keys:
        attrs = study_attributes(dataset, key, task_map)
        if all(attrs.get(column) == manifest_text(value) for column, value in spec.where.items()):
            out.append(key)
    return out


def demo_tasks() -> list[TaskSpec]:
    """The demo cohort's sequence: two X-ray sites with their findings, then new ECG diagnoses."""
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
