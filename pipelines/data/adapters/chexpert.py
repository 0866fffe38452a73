"""CheXpert (Irvin et al., AAAI 2019): ``train.csv`` / ``valid.csv`` (/ ``test.csv``) + JPGs.

The ``Path`` column is relative to the folder *above* the dataset folder
(``CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg``); the adapter also accepts it
relative to the root. Labels: the 14 observations, with CheXpert's values kept: 1 positive,
0 negative, -1 uncertain (not resolved to either: that is a modelling choice, U-Ones/U-Zeros in the
paper), blank not mentioned. Subject: the ``patientNNNNN`` folder; study: ``patient/studyN``.
Split: the file the row comes from (train / valid -> val / test).
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from pipelines.data.adapters._common import cxr_label_cells, item, missing_file, read_table
from pipelines.data.sources import SourceItem

SPLIT_FILES = {"train": "train.csv", "val": "valid.csv", "test": "test.csv"}


def _resolve(root: Path, rel: str) -> Path | None:
    posix = PurePosixPath(rel)
    for candidate in (root / posix, root.parent / posix, root / PurePosixPath(*posix.parts[1:])):
        if candidate.is_file():
            return candidate
    return None


def _ids(rel: str) -> tuple[str, str]:
    parts = PurePosixPath(rel).parts
    patient = next((p for p in parts if p.startswith("patient")), parts[0])
    study = next((p for p in parts if p.startswith("study")), PurePosixPath(rel).stem)
    return patient, f"{patient}/{study}"


def list_chexpert(root: Path) -> list[SourceItem]:
    """One item per CSV row; a row whose image is missing is rejected."""
    root = Path(root)
    items = []
    found = False
    for split, name in SPLIT_FILES.items():
        table = read_table(root, name)
        if table is None:
            continue
        found = True
        for row in table.to_dict("records"):
            rel = row["Path"].strip()
            patient, study = _ids(rel)
            path = _resolve(root, rel)
            if path is None or not path.is_relative_to(root):
                items.append(
                    missing_file(
                        root, PurePosixPath(*PurePosixPath(rel).parts[1:]).as_posix(), patient, study, "image"
                    )
                )
                continue
            extra = cxr_label_cells(row)
            view = (row.get("AP/PA") or "").strip().upper() or (
                "LATERAL" if row.get("Frontal/Lateral", "").strip().lower() == "lateral" else ""
            )
            extra.update({"view": view, "split": split})
            items.append(item(path, root, patient, study, extra))
    if not found:
        raise FileNotFoundError(f"{root} has no train.csv/valid.csv (is this the CheXpert root?)")
    return items
