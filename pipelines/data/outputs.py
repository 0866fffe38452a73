"""What a preprocessing run leaves besides shards: manifest, rejections, summary.json and the data card.

``finish`` rebuilds ``manifest.csv`` and ``rejections.csv`` from the committed batches (so that every
input is in exactly one of them), writes ``summary.json`` (seen = processed + rejected, reasons, this
run's counts), prints the summary and writes the data card ``<cards_dir>/<dataset>-<modality>.md``.
Label counting is the caller's: per split for array modalities (``label_counts``), positive / negative
/ uncertain for report labels (``report_label_counts``).
"""

from __future__ import annotations

import collections
import dataclasses
import json
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines.data import datacard, manifest
from pipelines.data.file_loop import Tally

LabelCounter = Callable[[pd.DataFrame], dict[str, Any]]


@dataclasses.dataclass
class CardSettings:
    """The data card's provenance: dataset, licence, PHI status and the run's settings."""

    dataset: str
    cards_dir: str
    licence: str
    phi_status: str
    out_label: str  # the processed folder as the card names it
    preprocessing: dict[str, Any]  # settings shared by every modality (shard size, seed, splits...)


def label_counts(rows: pd.DataFrame, columns: tuple[str, ...]) -> dict[str, Any]:
    """``{column: {value: {split: n}}}``; ``;``-separated cells count once per value."""
    out: dict[str, Any] = {}
    for column in columns:
        if column not in rows.columns:
            continue
        counts: dict[str, dict[str, int]] = collections.defaultdict(lambda: collections.defaultdict(int))
        for cell, split in zip(rows[column], rows["split"], strict=True):
            if isinstance(cell, str) and cell:
                for value in filter(None, (v.strip() for v in cell.split(";"))):
                    counts[value][split] += 1
        out[column] = {value: dict(sorted(splits.items())) for value, splits in sorted(counts.items())}
    return out


def report_label_counts(rows: pd.DataFrame, columns: tuple[str, ...]) -> dict[str, Any]:
    """``{label: {"positive"|"negative"|"uncertain": n}}`` over all reports."""
    names = {1: "positive", 0: "negative", -1: "uncertain"}
    out = {}
    for column in columns:
        values = pd.to_numeric(rows[column], errors="coerce").dropna().astype(int)
        out[column] = {names[v]: int(n) for v, n in values.value_counts().sort_index().items() if v in names}
    return out


def summary(modality: str, rows: pd.DataFrame, rejected: pd.DataFrame, tally: Tally) -> dict[str, Any]:
    processed = int(rows["source"].nunique()) if not rows.empty else 0
    return {
        "modality": modality,
        "seen": processed + len(rejected),
        "processed": processed,
        "rejected": len(rejected),
        "samples": len(rows),
        "rejected_by_reason": dict(collections.Counter(rejected["reason"]).most_common()),
        "rejected_by_stage": dict(collections.Counter(rejected["stage"]).most_common()),
        "samples_by_split": {k: int(v) for k, v in rows["split"].value_counts().sort_index().items()}
        if not rows.empty
        else {},
        "this_run": {"processed": tally.processed, "rejected": tally.rejected, "already_done": tally.known},
    }


def print_summary(dataset: str, result: dict[str, Any], out_dir: Path) -> None:
    run = result["this_run"]
    print(
        f"preprocess-{result['modality']} [{dataset}]: seen {result['seen']} = processed "
        f"{result['processed']} + rejected {result['rejected']} ({result['samples']} samples; this run: "
        f"{run['processed']} new, {run['rejected']} rejected, {run['already_done']} already done) -> {out_dir}"
    )
    for reason, count in result["rejected_by_reason"].items():
        print(f"  rejected {count:>5} x {reason}")


def finish(
    out_dir: Path,
    modality: str,
    tally: Tally,
    card: CardSettings,
    count_labels: LabelCounter,
    parameters: dict[str, Any],
    tables: tuple[pd.DataFrame, pd.DataFrame] | None = None,
) -> dict[str, Any]:
    """Rebuild manifest/rejections from what is committed (or from ``tables``), write summary.json and
    the data card, print the summary; returns the summary."""
    rows, rejected = tables if tables is not None else manifest.read_batches(out_dir)
    # A source that was fixed after a rejection and now decodes is no longer rejected.
    rejected = rejected[~rejected["path"].isin(set(rows["source"]))]
    if not rows.empty:
        manifest.write_manifest(out_dir, rows)
    else:
        manifest.write_csv_atomic(
            out_dir / "manifest.csv", pd.DataFrame(columns=list(manifest.COMMON_COLUMNS))
        )
    manifest.write_rejections(out_dir, rejected)
    result = summary(modality, rows, rejected, tally)
    manifest.atomic_write(out_dir / "summary.json", lambda h: h.write(json.dumps(result, indent=2).encode()))
    write_processed_card(card, modality, rows, count_labels(rows), parameters)
    print_summary(card.dataset, result, out_dir)
    return result


def package_version() -> str:
    try:
        return version("clinical-encoders")
    except PackageNotFoundError:
        return "0+unknown"


def write_processed_card(
    card: CardSettings,
    modality: str,
    rows: pd.DataFrame,
    labels: dict[str, Any],
    parameters: dict[str, Any],
) -> Path:
    """The data card of one processed modality: counts per split, label counts, settings, content hash."""
    counts = (
        {k: int(v) for k, v in rows["split"].value_counts().sort_index().items()} if not rows.empty else {}
    )
    hashes = sorted(set(rows["source_sha256"])) if not rows.empty else []
    demo = card.dataset == "demo"
    front = {
        "source": f"{card.dataset} ({'synthetic demo cohort, make demo-data' if demo else 'folder'})",
        "licence": card.licence or ("Apache-2.0 (synthetic)" if demo else "unknown (set licence=)"),
        "modalities": [modality],
        "counts": counts,
        "label_counts": labels,
        "phi_status": card.phi_status or ("synthetic" if demo else "pseudonymised"),
        "preprocessing": {
            "stage": f"preprocess-{modality}",
            **card.preprocessing,
            modality: json.loads(json.dumps(parameters, default=str)),
        },
        "generator": f"pipelines.preprocess ({package_version()})",
        "version": package_version(),
        "content_hash": datacard.content_hash(hashes),
    }
    body = (
        f"# {card.dataset}-{modality}\n\n"
        f"{modality} samples of the `{card.dataset}` dataset, preprocessed by `python -m pipelines "
        f"preprocess-{modality}` into `{card.out_label}/{modality}/`.\n\n"
        "Subject, study and sample IDs are salted SHA-256 hashes; raw identifiers, names and dates do not "
        "leave the raw folder. Splits are by subject (seeded), so no subject is in two splits. "
        "Counts are samples per split; label counts are per label value and split. "
        "`content_hash` is the SHA-256 of the sorted source file hashes.\n"
    )
    return datacard.write_card(f"{card.dataset}-{modality}", front, body, card.cards_dir)
