"""Helpers shared by the dataset adapters: label maps, label cells, split rules, file lookup.

Label cells follow the manifest contract of the reports stage: ``"1"`` positive, ``"0"`` negative,
``"-1"`` uncertain, ``""`` not mentioned.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from pipelines.data.sources import SourceItem

POSITIVE, NEGATIVE, UNCERTAIN, UNMENTIONED = "1", "0", "-1", ""
SPLITS = ("train", "val", "test")
LABEL_MAPS = Path(__file__).resolve().parents[2] / "resources" / "label_maps"


@functools.cache
def label_map(name: str) -> dict[str, Any]:
    """A packaged YAML map under ``pipelines/resources/label_maps/<name>.yaml``."""
    return yaml.safe_load((LABEL_MAPS / f"{name}.yaml").read_text(encoding="utf-8"))


@functools.cache
def ecg_labels() -> dict[str, dict[str, Any]]:
    """Our ECG labels: ``{label: {"name": str, "snomed": [codes]}}`` (ecg_snomed.yaml)."""
    return label_map("ecg_snomed")["labels"]


@functools.cache
def snomed_to_label() -> dict[str, str]:
    """SNOMED-CT code -> our ECG label (several codes may share a label)."""
    return {code: label for label, entry in ecg_labels().items() for code in entry["snomed"]}


@functools.cache
def code_to_snomed() -> dict[str, str]:
    """Header code (lower case) -> SNOMED CT id, for codes that are not SNOMED ids themselves: our label
    names (ecg_snomed.yaml, the CinC 2021 abbreviations the demo's ``# Dx:`` uses) and PTB-XL SCP
    statements (ptbxl_scp.yaml)."""
    codes = {str(k).lower(): str(v) for k, v in label_map("ptbxl_scp")["scp_to_snomed"].items()}
    codes.update({name.lower(): str(entry["snomed"][0]) for name, entry in ecg_labels().items()})
    return codes


def _ecg_label(code: str) -> str | None:
    """Our ECG label of one header code (a SNOMED CT id, a label name or an SCP code), None if unknown."""
    code = str(code).strip()
    snomed = code if code.isdigit() else code_to_snomed().get(code.lower(), "")
    return snomed_to_label().get(snomed)


def ecg_label_cells(codes: Iterable[str], uncertain: Iterable[str] = ()) -> dict[str, str]:
    """One cell per ECG label from a record's diagnosis codes: listed -> 1, uncertain -> -1, others -> 0.

    Codes are SNOMED CT ids, our label names or PTB-XL SCP codes (:func:`code_to_snomed`); a code
    none of them knows sets nothing. Diagnosis lists of ECG databases (CinC ``# Dx:``, PTB-XL SCP
    codes) are complete statements about the record, so a label that is not listed is a negative,
    not "not mentioned".
    """
    cells = dict.fromkeys(ecg_labels(), NEGATIVE)
    for code in uncertain:
        if (label := _ecg_label(code)) is not None:
            cells[label] = UNCERTAIN
    for code in codes:
        if (label := _ecg_label(code)) is not None:
            cells[label] = POSITIVE
    return cells


def cxr_label_cells(values: dict[str, Any]) -> dict[str, str]:
    """CheXpert-style row (upstream column -> 1.0/0.0/-1.0/blank) -> our cells; uncertain stays -1."""
    cells = {}
    for upstream, ours in label_map("cxr_findings")["chexpert"].items():
        cells[ours] = chexpert_cell(values.get(upstream))
    return cells


def chexpert_cell(value: Any) -> str:
    """CheXpert label value -> cell. Blank = not mentioned (CheXpert labeler convention, Irvin 2019)."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return UNMENTIONED
    text = str(value).strip()
    if not text or text.lower() == "nan":
        return UNMENTIONED
    number = float(text)
    if number > 0:
        return POSITIVE
    return UNCERTAIN if number < 0 else NEGATIVE


def stable_fraction(key: str, salt: str = "") -> float:
    """Uniform number in [0, 1) from a key: splits that do not depend on file order or the run."""
    digest = hashlib.sha256(f"{salt}\x1f{key}".encode()).hexdigest()
    return int(digest[:15], 16) / 16**15


def read_table(root: Path, *names: str) -> pd.DataFrame | None:
    """The first existing CSV (or ``.csv.gz``) among ``names`` under ``root``, as text; None if absent."""
    for name in names:
        for candidate in (root / name, root / f"{name}.gz"):
            if candidate.is_file():
                return pd.read_csv(candidate, dtype=str, keep_default_na=False)
    return None


def file_index(root: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """File name -> path for every file with one of ``suffixes`` under ``root`` (upstream archives are
    often extracted into varying sub-folders, e.g. NIH ``images_001/images/``)."""
    index: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.lower().endswith(suffixes) and not name.startswith("."):
                index.setdefault(name, Path(dirpath) / name)
    return index


def item(
    path: Path,
    root: Path,
    subject: str,
    study: str,
    extra: dict[str, str] | None = None,
    members: tuple[Path, ...] | None = None,
    reject: str | None = None,
) -> SourceItem:
    """A ``SourceItem`` with ``rel`` relative to the dataset root; empty extra values are dropped
    only for ``split`` (an empty split would override the stage's subject split)."""
    extra = dict(extra or {})
    if not extra.get("split"):
        extra.pop("split", None)
    return SourceItem(
        path=path,
        rel=path.relative_to(root).as_posix(),
        members=members or (path,),
        raw_subject=str(subject),
        raw_study=str(study),
        extra=extra,
        reject=reject,
    )


def missing_file(root: Path, rel: str, subject: str, study: str, what: str) -> SourceItem:
    """An item for a file the dataset's table names but the folder lacks: rejected, still counted."""
    return item(root / rel, root, subject, study, reject=f"{what} listed in the table but missing")


def env_list(name: str) -> list[str]:
    """Comma-separated adapter option from the environment (e.g. ``FSDD_TEST_SPEAKERS=nicolas``)."""
    return [v.strip() for v in os.environ.get(name, "").split(",") if v.strip()]


def wfdb_comments(header: Path) -> list[str]:
    """Comment lines of a WFDB header without the ``#`` (read as text: no signal decoding here)."""
    try:
        lines = header.read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [line.lstrip()[1:].strip() for line in lines if line.lstrip().startswith("#")]


def header_field(comments: list[str], key: str) -> str:
    """Value of a ``Key: value`` header comment (case-insensitive key), else ``""``."""
    wanted = key.lower()
    for line in comments:
        name, sep, value = line.partition(":")
        if sep and name.strip().lower() == wanted:
            return value.strip()
    return ""
