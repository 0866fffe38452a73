"""NIH ChestX-ray14 (Wang et al., CVPR 2017): ``Data_Entry_2017.csv`` + ``images*/`` PNGs.

Labels: ``Finding Labels`` (``|``-separated, text-mined from the reports) mapped to our names
(cxr_findings.yaml). The 14 findings are a complete list per image, so an unlisted finding is 0.
Subject: ``Patient ID``. Split: ``test_list.txt`` is test; ``train_val_list.txt`` is split by
patient into train and validation (``val_fraction`` of the patients, by a stable hash), because
NIH gives no validation list; without the lists the stage splits by subject.

A derived index with snake_case columns (``file, finding_labels, patient_id, view_position`` ...,
as in ``nih_cxr14_thumbs64/labels.csv``) is read the same way when ``Data_Entry_2017.csv`` is absent.
"""

from __future__ import annotations

from pathlib import Path

from pipelines.data.adapters._common import (
    NEGATIVE,
    POSITIVE,
    file_index,
    item,
    label_map,
    missing_file,
    read_table,
    stable_fraction,
)
from pipelines.data.sources import SourceItem

VAL_FRACTION = 0.1
_UPSTREAM = {
    "Image Index": "file",
    "Finding Labels": "finding_labels",
    "Patient ID": "patient_id",
    "View Position": "view_position",
    "Follow-up #": "follow_up",
}


def nih_label_cells(finding_labels: str) -> dict[str, str]:
    """``"Cardiomegaly|Effusion"`` -> a cell for each of our NIH-derived labels (listed 1, else 0)."""
    mapping = label_map("cxr_findings")["nih"]
    cells = {ours: NEGATIVE for targets in mapping.values() for ours in targets}
    for finding in filter(None, (f.strip() for f in finding_labels.split("|"))):
        if finding not in mapping:
            raise ValueError(f"unknown NIH finding {finding!r}")
        for ours in mapping[finding]:
            cells[ours] = POSITIVE
    return cells


def _table(root: Path):
    table = read_table(root, "Data_Entry_2017.csv", "Data_Entry_2017_v2020.csv")
    if table is not None:
        return table.rename(columns=_UPSTREAM)
    table = read_table(root, "labels.csv")
    if table is None or not {"file", "finding_labels", "patient_id"} <= set(table.columns):
        raise FileNotFoundError(f"{root} has no Data_Entry_2017.csv (is this the ChestX-ray14 root?)")
    return table


def _lists(root: Path) -> tuple[set[str], set[str]]:
    def names(file: str) -> set[str]:
        path = root / file
        return set(path.read_text().split()) if path.is_file() else set()

    return names("train_val_list.txt"), names("test_list.txt")


def list_nih(root: Path) -> list[SourceItem]:
    """One item per table row; rows whose image is missing are rejected."""
    root = Path(root)
    table = _table(root)
    images = file_index(root, (".png",))
    train_val, test = _lists(root)
    items = []
    for row in table.to_dict("records"):
        name = Path(row["file"]).name
        patient = str(int(float(row["patient_id"])))
        if name not in images:
            items.append(missing_file(root, f"images/{name}", patient, name, "image"))
            continue
        split = ""
        if name in test:
            split = "test"
        elif name in train_val:
            split = "val" if stable_fraction(patient, "nih-val") < VAL_FRACTION else "train"
        extra = nih_label_cells(row["finding_labels"])
        extra.update({"view": row.get("view_position", "").strip().upper(), "split": split})
        items.append(item(images[name], root, patient, Path(name).stem, extra))
    return items
