"""Report text as preprocessing inputs: one item per report row of a CSV (or per .txt file), and the
per-item work -- split into sections, scrub identifiers, label against the report kind's vocabulary.

``process_report`` has the shape of ``file_loop.process_file``, so reports go through the same loop,
deduplication and rejection bookkeeping as files; its rows have no shard (the text is the sample).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from pipelines.data import manifest, sources
from pipelines.data.file_loop import Job, Outcome, common_row, shown_path

REPORT_SUFFIXES = (".csv", ".txt")
# Manifest columns of a report that are neither common columns nor labels.
TEXT_COLUMNS = ("kind", "text", "findings", "impression")


@dataclasses.dataclass
class ReportItem:
    rel: str
    row: int  # 1-based row of a CSV; 0 for a .txt file
    raw_subject: str
    raw_study: str
    kind: str
    text: str


def _first(record: dict[str, Any], names: tuple[str, ...]) -> str:
    for name in names:
        value = record.get(name)
        if value is not None and str(value).strip() and str(value) != "nan":
            return str(value).strip()
    return ""


def list_reports(root: Path, default_kind: str) -> tuple[list[ReportItem], list[dict[str, str]]]:
    """Report rows of every CSV (columns text + mrn/subject, accession/study, kind) and .txt file.

    Returns (items, rejections for files that cannot be read as reports).
    """
    mroot = sources.modality_root(root, "reports")
    items, problems = [], []
    for path in sorted(p for p in mroot.rglob("*") if p.is_file() and p.suffix.lower() in REPORT_SUFFIXES):
        rel = path.relative_to(root).as_posix()
        rel_m = PurePosixPath(path.relative_to(mroot).as_posix())
        subject, study = sources.derive_ids(rel_m)
        if path.suffix.lower() == ".txt":
            text = path.read_text(encoding="utf-8", errors="replace")
            items.append(ReportItem(rel, 0, subject, study, default_kind, text))
            continue
        try:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            problems.append(
                {"path": rel, "stage": "read", "reason": f"unreadable CSV ({type(err).__name__})"}
            )
            continue
        if "text" not in frame.columns and "report" not in frame.columns:
            problems.append({"path": rel, "stage": "read", "reason": "CSV has no text/report column"})
            continue
        for i, record in enumerate(frame.to_dict("records")):
            items.append(
                ReportItem(
                    rel,
                    i + 1,
                    _first(record, ("mrn", "subject", "subject_id", "patient_id")) or f"{subject}#{i + 1}",
                    _first(record, ("accession", "study", "study_id")) or f"{study}#{i + 1}",
                    _first(record, ("kind",)) or default_kind,
                    _first(record, ("text", "report")),
                )
            )
    return items, problems


def process_report(item: ReportItem, job: Job) -> Outcome:
    """Split, scrub and label one report; ``job.reader_cfg`` is the label vocabulary."""
    from pipelines.data import reports

    shown = shown_path(item.rel, job) + (f"#row{item.row}" if item.row else "")
    # Content hash of what the stage uses (identity + text), not of the whole CSV: one new row is one
    # new input, and the date column (PHI, unused) does not enter.
    payload = json.dumps([item.raw_subject, item.raw_study, item.kind, item.text], ensure_ascii=False)
    sha = hashlib.sha256(payload.encode()).hexdigest()
    if sha in job.known:
        return Outcome(shown, sha, "known")
    if not item.text.strip():
        return Outcome(shown, sha, "rejected", stage="read", reason="empty report text")
    vocabulary = job.reader_cfg
    sections = reports.split_sections(item.text)
    findings = reports.scrub_identifiers(sections.get("findings") or "")
    impression = reports.scrub_identifiers(sections.get("impression") or "")
    text = reports.scrub_identifiers(sections.get("text") or " ".join(filter(None, (findings, impression))))
    # Label against the report kind's own vocabulary: a radiology report never switches on an ECG label.
    body = " ".join(filter(None, (findings, impression))) or text
    labels = reports.label_report(body, vocabulary, reports.KIND_MODALITY.get(item.kind))
    row = common_row(job, item.raw_subject, item.raw_study, sha, 0, shown)
    row.update({"shard": None, "index": None, "kind": item.kind, "text": text})
    row.update({"findings": findings, "impression": impression})
    row.update({name: (None if value is None else int(value)) for name, value in labels.items()})
    return Outcome(shown, sha, "done", rows=[row])


def label_columns(frame: pd.DataFrame) -> tuple[str, ...]:
    """Label columns of a report manifest: every column that is not a common or text column."""
    fixed = set(manifest.COMMON_COLUMNS) | set(TEXT_COLUMNS)
    return tuple(c for c in frame.columns if c not in fixed)
