"""PhysioNet/CinC Challenge 2021 layout: WFDB records (``.hea`` + ``.mat``) with ``# Dx:`` SNOMED codes.

Labels: the ``# Dx:`` codes mapped to our ECG labels (ecg_snomed.yaml, with the challenge's
equivalent classes); ``dx_names`` carries every code's name from the challenge's own mapping tables
(``dx_mapping_scored.csv`` / ``dx_mapping_unscored.csv``, when present under the root) so that
prompts can be built for codes outside our vocabulary. The challenge data has no patient IDs: each
record is its own subject, except the PTB-XL part (``HRnnnnn`` = PTB-XL ``ecg_id`` nnnnn), which is
joined to ``ptbxl_database*.csv`` when one is under the root for the patient ID, the free-text
report and the ``strat_fold`` split.
"""

from __future__ import annotations

import re
from pathlib import Path

from pipelines.data.adapters._common import ecg_label_cells, header_field, item, read_table, wfdb_comments
from pipelines.data.adapters.ptbxl import fold_split
from pipelines.data.sources import SourceItem, list_ecg

MAPPING_TABLES = ("dx_mapping_scored.csv", "dx_mapping_unscored.csv")
_PTBXL_RECORD = re.compile(r"^HR(\d{5})$")


def dx_names(root: Path) -> dict[str, tuple[str, str]]:
    """SNOMED code -> (name, abbreviation) from the challenge's mapping tables found under ``root``."""
    names: dict[str, tuple[str, str]] = {}
    for table_name in MAPPING_TABLES:
        for path in sorted(Path(root).rglob(table_name)):
            table = read_table(path.parent, path.name)
            for row in table.to_dict("records") if table is not None else []:
                names.setdefault(
                    row["SNOMEDCTCode"].strip(), (row["Dx"].strip(), row["Abbreviation"].strip())
                )
    return names


def dx_codes(comments: list[str]) -> list[str]:
    """The ``# Dx:`` SNOMED codes of a header, in order."""
    return [c for c in re.split(r"[,;\s]+", header_field(comments, "Dx")) if c]


def _ptbxl_rows(root: Path) -> dict[int, dict[str, str]]:
    rows: dict[int, dict[str, str]] = {}
    for path in sorted(Path(root).rglob("ptbxl_database*.csv")):
        table = read_table(path.parent, path.name)
        for row in table.to_dict("records") if table is not None else []:
            rows[int(float(row["ecg_id"]))] = row
    return rows


def list_cinc2021(root: Path) -> list[SourceItem]:
    """Every WFDB record (and stray signal file) under ``root``, labelled from its ``# Dx:`` codes."""
    root = Path(root)
    names = dx_names(root)
    ptbxl = _ptbxl_rows(root)
    items = []
    for source in list_ecg(root):
        if source.reject or source.path.suffix.lower() != ".hea":
            items.append(source)
            continue
        record = source.path.stem
        comments = wfdb_comments(source.path)
        codes = dx_codes(comments)
        extra = ecg_label_cells(codes)
        extra["dx_names"] = ";".join(names.get(c, (c, c))[0] for c in codes)
        subject = record
        match = _PTBXL_RECORD.match(record)
        row = ptbxl.get(int(match.group(1))) if match else None
        if row is not None:
            subject = f"ptbxl-patient-{int(float(row['patient_id']))}"
            extra["report"] = row.get("report", "").strip()
            extra["split"] = fold_split(row.get("strat_fold", ""))
        items.append(item(source.path, root, subject, record, extra, members=source.members))
    return items
