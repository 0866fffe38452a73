"""MIMIC-IV-ECG (Gow et al., PhysioNet 2023): ``record_list.csv`` + ``machine_measurements.csv`` +
``files/p1000/p10000032/s40689238/40689238.{hea,dat}``.

Subject and study are MIMIC's ``subject_id`` / ``study_id``; the machine report (``report_0`` ...
``report_17``, the cart's statements in order) is joined into ``report`` for the reports stage. There
is no upstream split: the stage splits by subject.
"""

from __future__ import annotations

import re
from pathlib import Path

from pipelines.data.adapters._common import item, missing_file, read_table
from pipelines.data.sources import SourceItem

_REPORT_COLUMN = re.compile(r"^report_(\d+)$")


def machine_report(row: dict[str, str]) -> str:
    """``report_0`` ... ``report_N`` in order, empty ones skipped, joined as sentences."""
    columns = sorted((int(m.group(1)), k) for k in row if (m := _REPORT_COLUMN.match(k)))
    parts = [row[k].strip().rstrip(".") for _, k in columns if row[k] and row[k].strip()]
    return ". ".join(parts) + ("." if parts else "")


def list_mimic_ecg(root: Path) -> list[SourceItem]:
    """One item per ``record_list.csv`` row, with the machine report when measurements are present."""
    root = Path(root)
    records = read_table(root, "record_list.csv")
    if records is None:
        raise FileNotFoundError(f"{root} has no record_list.csv (is this the MIMIC-IV-ECG root?)")
    measurements = read_table(root, "machine_measurements.csv")
    reports = (
        {row["study_id"]: machine_report(row) for row in measurements.to_dict("records")}
        if measurements is not None
        else {}
    )
    items = []
    for row in records.to_dict("records"):
        subject, study = row["subject_id"], row["study_id"]
        header = root / f"{row['path']}.hea"
        if not header.is_file():
            items.append(missing_file(root, f"{row['path']}.hea", subject, study, "WFDB record"))
            continue
        members = (header, *(p for s in (".dat", ".mat") if (p := header.with_suffix(s)).is_file()))
        items.append(item(header, root, subject, study, {"report": reports.get(study, "")}, members=members))
    return items
