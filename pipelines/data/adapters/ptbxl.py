"""PTB-XL (Wagner et al., Sci Data 7:154, 2020): ``ptbxl_database.csv`` + ``scp_statements.csv`` +
``records500/`` (or ``records100/``).

One item per database row: the record at ``filename_hr`` (500 Hz; ``filename_lr`` 100 Hz when
``PTBXL_RECORDS=100`` or the 500 Hz file is absent), the patient as subject, the free-text
``report``, the SCP statements mapped to our ECG labels (ptbxl_scp.yaml; a diagnostic statement of
likelihood below 50 is uncertain), the diagnostic superclasses from ``scp_statements.csv`` and the
recommended split: ``strat_fold`` 1-8 train, 9 validation, 10 test (folds 9-10 hold only
human-validated labels, and patients never straddle folds).
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

from pipelines.data.adapters._common import ecg_label_cells, item, label_map, missing_file, read_table
from pipelines.data.sources import SourceItem

VAL_FOLD, TEST_FOLD = 9, 10


def fold_split(strat_fold: str) -> str:
    """PTB-XL's recommended split of ``strat_fold`` (1-8 train, 9 val, 10 test); ``""`` if unknown."""
    try:
        fold = int(float(strat_fold))
    except (TypeError, ValueError):
        return ""
    return "test" if fold == TEST_FOLD else ("val" if fold == VAL_FOLD else "train")


def parse_scp_codes(text: str) -> dict[str, float]:
    """The ``scp_codes`` cell, a Python dict literal such as ``{'NORM': 100.0, 'SR': 0.0}``."""
    try:
        value = ast.literal_eval(text or "{}")
    except (ValueError, SyntaxError):
        return {}
    return {str(k): float(v) for k, v in value.items()} if isinstance(value, dict) else {}


def scp_label_cells(scp_codes: dict[str, float]) -> dict[str, str]:
    """SCP statements -> our ECG label cells (via SNOMED codes, ptbxl_scp.yaml)."""
    table = label_map("ptbxl_scp")
    to_snomed, certain_from = table["scp_to_snomed"], float(table["likelihood"]["certain_from"])
    certain, uncertain = [], []
    for code, likelihood in scp_codes.items():
        snomed = to_snomed.get(code)
        if snomed is None:
            continue
        (uncertain if 0 < likelihood < certain_from else certain).append(str(snomed))
    return ecg_label_cells(certain, uncertain)


def _superclasses(root: Path) -> dict[str, str]:
    table = read_table(root, "scp_statements.csv")
    if table is None:
        return {}
    code_column = table.columns[0]  # the statement code is the unnamed index column upstream
    return {
        row[code_column]: row.get("diagnostic_class", "")
        for row in table.to_dict("records")
        if row.get("diagnostic_class")
    }


def list_ptbxl(root: Path) -> list[SourceItem]:
    """One item per row of ``ptbxl_database.csv``; a row whose record is missing is rejected."""
    root = Path(root)
    table = read_table(root, "ptbxl_database.csv")
    if table is None:
        raise FileNotFoundError(f"{root} has no ptbxl_database.csv (is this the PTB-XL root?)")
    superclasses = _superclasses(root)
    prefer_lr = os.environ.get("PTBXL_RECORDS", "500").strip() == "100"
    items = []
    for row in table.to_dict("records"):
        ecg_id = int(float(row["ecg_id"]))
        subject = f"ptbxl-patient-{int(float(row['patient_id']))}" if row.get("patient_id") else str(ecg_id)
        names = [row.get("filename_lr", ""), row.get("filename_hr", "")]
        candidates = [n for n in (names if prefer_lr else names[::-1]) if n]
        header = next((root / f"{n}.hea" for n in candidates if (root / f"{n}.hea").is_file()), None)
        if header is None:
            items.append(missing_file(root, f"{candidates[0]}.hea", subject, str(ecg_id), "WFDB record"))
            continue
        members = (header, *(p for s in (".dat", ".mat") if (p := header.with_suffix(s)).is_file()))
        scp = parse_scp_codes(row.get("scp_codes", ""))
        extra = scp_label_cells(scp)
        extra.update(
            {
                "report": row.get("report", "").strip(),
                "scp_codes": ";".join(sorted(scp)),
                "superclasses": ";".join(sorted({superclasses[c] for c in scp if c in superclasses})),
                "split": fold_split(row.get("strat_fold", "")),
            }
        )
        items.append(item(header, root, subject, str(ecg_id), extra, members=members))
    return items
