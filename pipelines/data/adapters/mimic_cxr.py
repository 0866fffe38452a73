"""MIMIC-CXR (DICOM, Johnson et al., Sci Data 2019) and MIMIC-CXR-JPG (PhysioNet 2019).

Layout: ``files/p10/p10000032/s50414267/<dicom_id>.dcm`` (or ``.jpg``), the CheXpert-labeler
CSV ``mimic-cxr-2.0.0-chexpert.csv(.gz)`` (one row per study; 1 / 0 / -1 uncertain / blank), the
split CSV ``mimic-cxr-2.0.0-split.csv(.gz)`` (train / validate / test per ``dicom_id``), the
metadata CSV (``ViewPosition``) and the free-text reports ``files/p10/p10000032/s50414267.txt``.
Subject: ``subject_id`` (the ``pNNNNNNNN`` folder); study: ``study_id`` (``sNNNNNNNN``).
"""

from __future__ import annotations

import re
from pathlib import Path

from pipelines.data.adapters._common import cxr_label_cells, file_index, item, read_table
from pipelines.data.sources import SourceItem

_SUBJECT, _STUDY = re.compile(r"^p(\d{8})$"), re.compile(r"^s(\d{8})$")
_SPLITS = {"train": "train", "validate": "val", "test": "test"}
PREFIX = "mimic-cxr-2.0.0-"


def _by_key(table, key: str) -> dict[str, dict[str, str]]:
    return {str(row[key]): row for row in table.to_dict("records")} if table is not None else {}


def read_report(path: Path) -> str:
    """A MIMIC-CXR report file, whitespace collapsed (sections stay; the reports stage splits them)."""
    return " ".join(path.read_text(encoding="utf-8", errors="replace").split()) if path.is_file() else ""


def _list(root: Path, suffixes: tuple[str, ...]) -> list[SourceItem]:
    root = Path(root)
    files = root / "files"
    if not files.is_dir():
        raise FileNotFoundError(f"{root} has no files/ folder (is this the MIMIC-CXR root?)")
    labels = _by_key(read_table(root, f"{PREFIX}chexpert.csv"), "study_id")
    splits = _by_key(read_table(root, f"{PREFIX}split.csv"), "dicom_id")
    metadata = _by_key(read_table(root, f"{PREFIX}metadata.csv"), "dicom_id")
    items = []
    for name, path in sorted(file_index(files, suffixes).items(), key=lambda kv: kv[1]):
        study_dir, subject_dir = path.parent.name, path.parent.parent.name
        study_match, subject_match = _STUDY.match(study_dir), _SUBJECT.match(subject_dir)
        if not (study_match and subject_match):
            items.append(
                item(path, root, subject_dir, study_dir, reject="not under files/pNN/pNNNNNNNN/sNNNNNNNN/")
            )
            continue
        subject, study = subject_match.group(1), study_match.group(1)
        dicom_id = Path(name).stem
        extra = cxr_label_cells(labels.get(study, {}))
        extra["report"] = read_report(path.parent.parent / f"{study_dir}.txt")
        view = metadata.get(dicom_id, {}).get("ViewPosition", "")
        if view:
            extra["view"] = view.strip().upper()
        extra["split"] = _SPLITS.get(splits.get(dicom_id, {}).get("split", ""), "")
        items.append(item(path, root, subject, study, extra))
    return items


def list_mimic_cxr(root: Path) -> list[SourceItem]:
    """MIMIC-CXR: the DICOMs under ``files/``."""
    return _list(root, (".dcm",))


def list_mimic_cxr_jpg(root: Path) -> list[SourceItem]:
    """MIMIC-CXR-JPG: the JPGs under ``files/``."""
    return _list(root, (".jpg", ".jpeg"))
