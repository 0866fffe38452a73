"""Zero-shot tasks: which view is scored against which prompt set, labelled by which manifest columns.

A binary task (findings, diagnoses) scores each label of its prompt set as a positive/negative prompt
pair; a multi-class task (spoken intents) scores one class per sample as a softmax over the classes'
prompts. :func:`resolve_classes` fills a multi-class task's classes from its prompt set or the data.

Where a dataset has no reports (PTB-XL, CinC 2021, MIMIC-IV-ECG without its machine statements),
:func:`resolve_label_sources` points a task at its own view, whose labels are the header diagnosis codes
of each record (:func:`view_label_table`): the adapters' label cells, else the ``dx`` codes the ECG
reader keeps (SNOMED CT ids, our label names, PTB-XL SCP codes) or the PTB-XL ``scp_codes`` column.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np

from pipelines.errors import StageError

Mode = Literal["pair", "multiclass"]


@dataclasses.dataclass
class ZeroShotTaskConfig:
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

    def __post_init__(self) -> None:
        if self.kind not in ("binary", "multiclass"):
            raise ValueError(f"task kind must be binary or multiclass, got {self.kind!r}")
        if self.kind == "binary" and (self.label_column or self.classes):
            raise ValueError("label_column and classes belong to multiclass tasks")

    @property
    def mode(self) -> Mode:
        return "multiclass" if self.kind == "multiclass" else "pair"


def default_zero_shot_tasks() -> dict[str, ZeroShotTaskConfig]:
    """The MoRE model's zero-shot tasks: X-ray findings and ECG diagnoses, labelled by their reports."""
    return {
        "xray_findings": ZeroShotTaskConfig(
            view="xray", prompt_set="cxr_findings", labels_from="radiology_report"
        ),
        "ecg_diagnoses": ZeroShotTaskConfig(
            view="ecg", prompt_set="ecg_diagnoses", labels_from="cardiology_report"
        ),
    }


def task_prompt_set(task: ZeroShotTaskConfig) -> Any:
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


def task_prompt_texts(task: ZeroShotTaskConfig) -> dict[str, dict[str, list[str]]]:
    """``{label: {"positive": [...], "negative": [...]}}`` of the task's prompt set."""
    prompt_set = task_prompt_set(task)
    return {
        label: dict(zip(("positive", "negative"), map(list, prompt_set.texts_for(label)), strict=True))
        for label in prompt_set.labels
    }


def label_columns(task: ZeroShotTaskConfig) -> list[str]:
    """The manifest columns a binary task reads (its prompt set's labels)."""
    return list(task_prompt_set(task).labels)


def class_column(dataset: Any, task: ZeroShotTaskConfig) -> Any:
    """A multi-class task's label column (pandas Series, NaN where the view or value is missing)."""
    values = dataset.labels(task.labels_from, [task.label_column])[task.label_column]
    return values.where(values.notna() & (values.astype(str).str.strip() != ""))


def task_labels(
    dataset: Any, tasks: Iterable[ZeroShotTaskConfig], views: Mapping[str, Any]
) -> dict[str, dict[str, np.ndarray]]:
    """Raw labels of ``dataset``'s rows per ``labels_from`` view: a binary task's columns as they are
    (1/0/-1/NaN), a multi-class task's class column as one-hot columns named by class."""
    labels: dict[str, dict[str, np.ndarray]] = {}
    for task in tasks:
        if task.labels_from not in views:
            continue
        columns = labels.setdefault(task.labels_from, {})
        if task.kind == "multiclass":
            values = class_column(dataset, task)
            known = values.notna().to_numpy()
            for c in task.classes:
                columns[c] = np.where(known, (values.astype(str) == c).to_numpy(dtype=float), np.nan)
        else:
            names = label_columns(task)
            table = view_label_table(dataset, task.labels_from, names)
            columns.update({c: table[c].to_numpy(dtype=float) for c in names})
    return labels


# --------------------------------------------------------------------------- header diagnosis codes

# Manifest columns holding a record's header diagnoses: the ECG reader's ``dx`` (the ``# Dx:`` comment:
# SNOMED CT ids, our label names or SCP codes) and the PTB-XL adapter's ``scp_codes``.
HEADER_CODE_COLUMNS = ("dx", "scp_codes")


def _code_text(value: Any) -> str:
    """A code list cell as text: NaN/None -> "", a number read from CSV (one SNOMED id) -> its digits."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def header_code_cells(dx: Any = "", scp_codes: Any = "") -> dict[str, float]:
    """Label values (1.0 / 0.0) of one record from its header diagnosis codes, ``{}`` without codes.

    ``dx`` and ``scp_codes`` are code lists (any of ``,;`` or spaces between codes). A SNOMED CT id
    maps through ecg_snomed.yaml (with the CinC 2021 equivalent classes), an SCP code through
    ptbxl_scp.yaml, a label name to itself. A code list is a complete statement about the record, as
    the adapters take it (``ecg_label_cells``): every label not coded is 0. SCP likelihoods are not in
    the manifest's ``scp_codes``, so a statement there counts as stated; the PTB-XL adapter's own cells,
    which keep likelihood < 50 uncertain, take precedence (:func:`view_label_table`).
    """
    from pipelines.data.adapters._common import ecg_label_cells

    tokens = [t for value in (dx, scp_codes) for t in re.split(r"[,;\s]+", _code_text(value)) if t]
    if not tokens:
        return {}
    return {label: float(cell) for label, cell in ecg_label_cells(tokens).items()}


def view_label_table(dataset: Any, view: str, names: list[str]) -> Any:
    """``names`` columns of ``view``'s rows (pandas, NaN = unknown): the manifest's own cells (report
    labeller, adapter), and where a cell is empty, the row's header diagnosis codes
    (:func:`manifest_label_table`). Rows without codes (reports) keep their cells as they are."""
    return manifest_label_table(dataset.labels(view, [*names, *HEADER_CODE_COLUMNS]), names)


def manifest_label_table(frame: Any, names: list[str]) -> Any:
    """``names`` columns of a frame with one row per sample (a manifest, or a view's rows) as floats: its
    own cells, and where a cell is empty, the row's header diagnosis codes (:func:`header_code_cells`)."""
    out = frame.reindex(columns=list(names)).astype(float)
    codes = frame.reindex(columns=list(HEADER_CODE_COLUMNS))
    for i, (dx, scp) in enumerate(codes.itertuples(index=False)):
        cells = header_code_cells(dx, scp)
        for k, name in enumerate(names):
            if name in cells and out.iat[i, k] != out.iat[i, k]:
                out.iat[i, k] = cells[name]
    return out


def _view_has_rows(data_root: Path, spec: Any) -> bool:
    """Whether ``spec``'s modality is processed under ``data_root`` with rows matching its filter."""
    from pipelines.data.manifest import load_manifest

    modality_dir = data_root / spec.modality
    if not (modality_dir / "manifest.csv").is_file():
        return False
    frame = load_manifest(modality_dir)
    for column, value in (getattr(spec, "where", None) or {}).items():
        if column not in frame.columns:
            return False
        frame = frame[frame[column].astype(str) == str(value)]
    return len(frame) > 0


def resolve_label_sources(
    tasks: Mapping[str, ZeroShotTaskConfig], views: Mapping[str, Any], data_root: str | Path
) -> tuple[dict[str, ZeroShotTaskConfig], dict[str, Any]]:
    """Tasks and views for what ``data_root`` holds.

    Views without processed rows under ``data_root`` are dropped, and with them the tasks scored on
    them. A binary task whose ``labels_from`` view is dropped (a dataset without reports: PTB-XL, CinC
    2021, MIMIC-IV-ECG) is labelled by its own view instead, i.e. by each record's header diagnosis
    codes (:func:`view_label_table`). Nothing changes when every view has rows (the demo).
    """
    root = Path(data_root)
    kept = {view: spec for view, spec in views.items() if _view_has_rows(root, spec)}
    if len(kept) == len(views):
        return dict(tasks), dict(views)
    if not kept:
        raise StageError(f"no processed data under {root} for any of the views {sorted(views)}")
    out: dict[str, ZeroShotTaskConfig] = {}
    for name, task in tasks.items():
        if task.view not in kept:
            print(f"task {name}: no {task.view} data under {root}; skipped")
            continue
        if task.labels_from not in kept:
            if task.kind != "binary":
                print(f"task {name}: no {task.labels_from} data under {root}; skipped")
                continue
            print(
                f"task {name}: no {task.labels_from} under {root}; labels from the {task.view} "
                "records' header diagnosis codes"
            )
            task = dataclasses.replace(task, labels_from=task.view)
        out[name] = task
    if not out:
        raise StageError(f"no zero-shot task can be evaluated on {root} (views present: {sorted(kept)})")
    return out, kept


def resolve_classes(
    tasks: Mapping[str, ZeroShotTaskConfig], datasets: Callable[[], Iterable[Any]], where: str
) -> dict[str, ZeroShotTaskConfig]:
    """``tasks`` with every multi-class task's ``classes`` filled: as configured, else the prompt set's
    labels, else the sorted values of ``label_column`` over ``datasets()`` (train, validation, test)."""
    from pipelines.evaluation.prompts import load_prompt_set

    out = dict(tasks)
    for name, task in tasks.items():
        if task.kind != "multiclass" or task.classes:
            continue
        if not task.label_column:
            raise StageError(
                f"task {name}: a multiclass task needs label_column (the manifest column of classes)"
            )
        classes = load_prompt_set(task.prompt_set).labels
        if not classes:
            seen: set[str] = set()
            for dataset in datasets():
                seen.update(class_column(dataset, task).dropna().astype(str))
            classes = sorted(seen)
        if len(classes) < 2:
            raise StageError(
                f"task {name}: column {task.label_column!r} of {task.labels_from} has {len(classes)} "
                f"class(es) in {where}; a multiclass task needs at least 2"
            )
        out[name] = dataclasses.replace(task, classes=list(classes))
    return out


def prompt_texts_for(
    prompt_set: str, labels: Iterable[str], display: Mapping[str, str] | None = None
) -> dict[str, dict[str, list[str]]]:
    """Prompt texts of ``labels`` from a prompt set: the set's own prompts where it has the label, else
    its generic templates filled with the label's display words (``display``, else the label name), so
    a label outside the set is still scored against the set's normal-study negatives."""
    from pipelines.evaluation.prompts import load_prompt_set

    prompt_set_ = load_prompt_set(prompt_set)
    display = display or {}
    out = {}
    for label in labels:
        if label in prompt_set_.positives:
            positive, negative = prompt_set_.texts_for(label)
        else:
            words = display.get(label, label.replace("_", " "))
            positive, negative = prompt_set_.with_labels([words]).texts_for(words)
        out[label] = {"positive": list(positive), "negative": list(negative)}
    return out
