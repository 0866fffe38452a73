"""Any folder of WFDB records (PTB Diagnostic ECG DB, MIT-BIH, CinC 2015 alarms, ...), and ECG DICOMs.

Files are found as by the generic ECG source; labels come from header comments when they say
something checkable: CinC-style ``# Dx:`` SNOMED codes (complete lists: absent labels are 0), or
the PTB Diagnostic DB's ``Reason for admission`` (one statement: only the named label is set, the
others are left "not mentioned"). The subject is the PTB ``patientNNN`` folder when there is one,
else the record name.
"""

from __future__ import annotations

from pathlib import Path

from pipelines.data.adapters._common import (
    POSITIVE,
    ecg_label_cells,
    ecg_labels,
    header_field,
    item,
    wfdb_comments,
)
from pipelines.data.adapters.cinc2021 import dx_codes
from pipelines.data.sources import SourceItem, list_ecg

# PTB Diagnostic ECG Database "Reason for admission" -> our label (Bousseljot et al. 1995).
PTB_REASONS = {"myocardial infarction": "MI"}


def header_label_cells(comments: list[str]) -> dict[str, str]:
    """Label cells a header states: Dx codes (complete list) or a PTB reason for admission."""
    codes = dx_codes(comments)
    if codes:
        return ecg_label_cells(codes)
    reason = header_field(comments, "Reason for admission").lower()
    label = PTB_REASONS.get(reason)
    if label and label in ecg_labels():
        return {label: POSITIVE}
    return {}


def list_wfdb_generic(root: Path) -> list[SourceItem]:
    """Every record under ``root`` with the labels its header states."""
    root = Path(root)
    items = []
    for source in list_ecg(root):
        if source.reject or source.path.suffix.lower() != ".hea":
            items.append(source)
            continue
        parent = source.path.parent.name
        subject = parent if parent.lower().startswith("patient") else source.path.stem
        extra = header_label_cells(wfdb_comments(source.path))
        items.append(item(source.path, root, subject, source.path.stem, extra, members=source.members))
    return items
