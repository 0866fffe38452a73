"""Preprocess raw files into clean, pseudonymised, sharded datasets (data/processed/<dataset>/<modality>/).

preprocess-xray / -ecg / -speech decode every file of the modality under `root` (the demo cohort, or
any folder: `dataset=folder root=<dir>`), in parallel; each file ends up in manifest.csv (+ .npy
shards) or in rejections.csv with a reason. preprocess-reports splits, scrubs and labels report text.
Re-runs skip inputs already done (by content hash); output is written atomically, so a killed run
resumes cleanly. At the end: summary.json (seen = processed + rejected), normalisation.json and the
data card data_cards/<dataset>-<modality>.md. The salt for IDs comes from PIPELINE_SALT (preferred)
or `salt=`; it is never printed.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import hashlib
import importlib
import json
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd
from tqdm import tqdm

from pipelines.config import public_dict
from pipelines.data import datacard, ids, manifest, registry, sources
from pipelines.data.audio import SpeechConfig
from pipelines.data.ecg import EcgConfig
from pipelines.data.executor import check_executor, ray_map
from pipelines.data.xray import XrayConfig
from pipelines.errors import RejectedInput, StageError

ARRAY_MODALITIES = ("xray", "ecg", "speech")
REPORT_SUFFIXES = (".csv", ".txt")


@dataclasses.dataclass
class ReportsConfig:
    """Report text: where the label vocabulary is."""

    vocabulary: str = dataclasses.field(
        default="", metadata={"help": "label vocabulary file (empty: the packaged, versioned one)"}
    )
    default_kind: str = dataclasses.field(
        default="radiology", metadata={"help": "kind of reports given as .txt files or without a kind column"}
    )


@dataclasses.dataclass
class Config:
    dataset: str = dataclasses.field(default="demo", metadata={"help": "dataset name (output folder, card)"})
    root: str = dataclasses.field(default="data/raw/demo", metadata={"help": "raw data folder"})
    out: str = dataclasses.field(
        default="", metadata={"help": "output folder (empty: data/processed/<dataset>)"}
    )
    cards_dir: str = dataclasses.field(
        default="data_cards", metadata={"help": "where data cards are written"}
    )
    workers: int = dataclasses.field(default=0, metadata={"help": "worker processes (0: all cores)"})
    chunksize: int = dataclasses.field(default=4, metadata={"help": "files per task sent to a worker"})
    executor: str = dataclasses.field(
        default="local", metadata={"help": "local (process pool) or ray (Ray tasks; needs .[scale])"}
    )
    ray_address: str = dataclasses.field(
        default="", metadata={"help": "executor=ray: cluster to join (host:port); empty: start one"}
    )
    shard_size: int = dataclasses.field(default=256, metadata={"help": "samples per .npy shard"})
    seed: int = dataclasses.field(default=0, metadata={"help": "seed of the subject-level split"})
    split_fractions: list[float] = dataclasses.field(
        default_factory=lambda: [0.7, 0.15, 0.15], metadata={"help": "train,val,test fractions of subjects"}
    )
    salt: str | None = dataclasses.field(
        default=None,
        metadata={"help": "ID salt (prefer env PIPELINE_SALT; never printed)", "secret": True},
    )
    hash_paths: bool = dataclasses.field(
        default=True, metadata={"help": "write source paths as salted hashes (names often hold MRNs)"}
    )
    phi_status: str = dataclasses.field(
        default="", metadata={"help": "data card phi_status (empty: synthetic for demo, else pseudonymised)"}
    )
    licence: str = dataclasses.field(
        default="", metadata={"help": "licence of the raw data, for the data card"}
    )
    progress: bool = dataclasses.field(default=True, metadata={"help": "show tqdm progress bars"})
    xray: XrayConfig = dataclasses.field(default_factory=XrayConfig)
    ecg: EcgConfig = dataclasses.field(default_factory=EcgConfig)
    speech: SpeechConfig = dataclasses.field(default_factory=SpeechConfig)
    reports: ReportsConfig = dataclasses.field(default_factory=ReportsConfig)

    @property
    def out_dir(self) -> Path:
        return Path(self.out) if self.out else Path("data/processed") / self.dataset


# --------------------------------------------------------------------------- worker side
@dataclasses.dataclass
class _Job:
    """Everything a worker needs; handed over once per process by the pool initializer."""

    modality: str
    process: Callable[[Any, _Job], _Outcome]
    reader: str | Callable[..., Any]
    reader_cfg: Any
    salt: str
    seed: int
    fractions: tuple[float, float, float]
    hash_paths: bool
    known: frozenset[str]


@dataclasses.dataclass
class _Outcome:
    shown: str  # the path as written to outputs (pseudonymised or relative)
    sha: str
    status: str  # "done" | "rejected" | "known"
    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    arrays: list[Any] = dataclasses.field(default_factory=list)
    stage: str = ""
    reason: str = ""


_JOB: _Job | None = None


def _init_worker(job: _Job) -> None:
    global _JOB
    _JOB = job
    # Parallelism is across files: one intra-op thread per worker avoids oversubscribing the cores.
    os.environ["OMP_NUM_THREADS"] = "1"
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def _run_one(item: Any) -> _Outcome:
    assert _JOB is not None, "worker not initialised"
    return _JOB.process(item, _JOB)


def _shown_path(rel: str, job: _Job) -> str:
    return sources.pseudonymous_path(rel, job.salt) if job.hash_paths else rel


def _scrub(message: str, path: Path) -> str:
    """Library messages often quote the file path (which may hold an MRN): cut it out."""
    for text in (str(path.resolve()), str(path), path.name):
        message = message.replace(text, "<file>")
    return message[:200]


def _common_row(job: _Job, raw_subject: str, raw_study: str, sha: str, crop: int, shown: str) -> dict:
    subject = ids.subject_id(raw_subject, job.salt)
    return {
        "sample_id": ids.sample_id(job.modality, sha, crop),
        "subject_id": subject,
        "study_id": ids.study_id(raw_subject, raw_study, job.salt),
        "modality": job.modality,
        "source": shown,
        "source_sha256": sha,
        "split": ids.assign_split(subject, job.seed, job.fractions),
    }


def _process_file(item: sources.SourceItem, job: _Job) -> _Outcome:
    """Hash, decode and pseudonymise one input; every failure becomes a rejected outcome."""
    shown = _shown_path(item.rel, job)
    try:
        sha = sources.source_sha256(item.members)
    except OSError as err:
        return _Outcome(shown, "", "rejected", stage="read", reason=f"unreadable file ({err.strerror})")
    if sha in job.known:
        return _Outcome(shown, sha, "known")
    if item.reject:
        return _Outcome(shown, sha, "rejected", stage="source", reason=item.reject)
    try:
        decoded = registry.resolve(job.reader)(item.path, job.reader_cfg)
    except RejectedInput as err:
        return _Outcome(shown, sha, "rejected", stage=err.stage, reason=_scrub(err.reason, item.path))
    except Exception as err:  # noqa: BLE001 - a decoder bug on odd input must not stop the run
        reason = f"unexpected decoder error ({type(err).__name__}: {_scrub(str(err), item.path)})"
        return _Outcome(shown, sha, "rejected", stage="decode", reason=reason)
    if not decoded:
        return _Outcome(shown, sha, "rejected", stage="decode", reason="reader returned no samples")
    outcome = _Outcome(shown, sha, "done")
    for sample in decoded:
        raw_subject = (sample.raw_subject or "").strip() or item.raw_subject
        raw_study = (sample.raw_study or "").strip() or item.raw_study
        row = _common_row(job, raw_subject, raw_study, sha, sample.crop_index, shown)
        row.update(sample.meta)
        # An adapter's columns (upstream labels, report, split) win over empty reader fields.
        row.update({k: v for k, v in item.extra.items() if v not in (None, "") or row.get(k) in (None, "")})
        if job.modality == "speech":
            row["speaker"] = row["subject_id"]  # the speaker is the subject; its raw name is PHI
        outcome.rows.append(row)
        outcome.arrays.append(sample.array)
    return outcome


def _map(
    job: _Job, items: list[Any], workers: int, chunksize: int, executor: str = "local", ray_address: str = ""
) -> Iterator[_Outcome]:
    """Outcomes in input order (deterministic shards), computed by ``workers`` processes or by Ray tasks
    (the same ``job.process`` per file; the driver writes every output either way)."""
    try:
        check_executor(executor)
    except ValueError as err:
        raise StageError(str(err)) from None
    if executor == "ray":
        yield from ray_map(job.process, job, items, workers, chunksize, address=ray_address)
        return
    if workers <= 1 or len(items) <= chunksize:
        _init_worker(job)
        yield from map(_run_one, items)
        return
    # fork: workers inherit the imported readers and the job; no re-import per worker.
    context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    window = workers * chunksize * 8  # bounds the results (arrays) held in memory at once
    with concurrent.futures.ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_init_worker, initargs=(job,)
    ) as pool:
        for start in range(0, len(items), window):
            yield from pool.map(_run_one, items[start : start + window], chunksize=chunksize)


# --------------------------------------------------------------------------- stage side
def _workers(cfg: Config) -> int:
    return cfg.workers if cfg.workers > 0 else (os.cpu_count() or 1)


def _job(cfg: Config, modality: str, process: Callable, reader: str, reader_cfg: Any, known) -> _Job:
    fractions = tuple(float(f) for f in cfg.split_fractions)
    if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-6 or min(fractions) < 0:
        raise StageError(f"split_fractions must be three non-negative numbers summing to 1, got {fractions}")
    return _Job(
        modality=modality,
        process=process,
        reader=reader,
        reader_cfg=reader_cfg,
        salt=ids.salt_from_env(cfg.salt),
        seed=cfg.seed,
        fractions=fractions,  # type: ignore[arg-type]
        hash_paths=cfg.hash_paths,
        known=frozenset(known),
    )


def _rejection(outcome: _Outcome, stage: str | None = None, reason: str | None = None) -> dict[str, str]:
    return {
        "path": outcome.shown,
        "stage": stage or outcome.stage,
        "reason": reason or outcome.reason,
        "source_sha256": outcome.sha,
    }


class _Tally:
    """Counts of this run: new samples, new rejections, inputs already done."""

    def __init__(self) -> None:
        self.processed = self.rejected = self.known = 0


def _account(
    outcome: _Outcome, known_paths: dict[str, set[str]], first_seen: dict[str, str], tally: _Tally
) -> dict[str, str] | None:
    """Dedupe by content: returns a rejection for a repeat of an input already seen, else None."""
    if outcome.status == "known":
        if outcome.shown in known_paths.get(outcome.sha, set()):
            tally.known += 1
            return None
        original = sorted(known_paths[outcome.sha])[0]
        return _rejection(outcome, "dedupe", f"duplicate content of {original}")
    if outcome.sha and outcome.sha in first_seen:
        return _rejection(outcome, "dedupe", f"duplicate content of {first_seen[outcome.sha]}")
    if outcome.sha:
        first_seen[outcome.sha] = outcome.shown
    return _rejection(outcome) if outcome.status == "rejected" else None


def _accounted(
    cfg: Config,
    job: Any,
    items: list[Any],
    name: str,
    chunksize: int,
    known_paths: dict[str, set[str]],
    tally: _Tally,
) -> Iterator[tuple[_Outcome, dict[str, str] | None]]:
    """Runs ``job`` over ``items`` with a progress bar and counts every input in ``tally``; yields
    ``(outcome, rejection)`` for each processed input (rejection None) and each rejected one."""
    first_seen: dict[str, str] = {}
    with _progress(cfg, len(items), name) as bar:
        for outcome in _map(job, items, _workers(cfg), chunksize, cfg.executor, cfg.ray_address):
            bar.update()
            rejection = _account(outcome, known_paths, first_seen, tally)
            if rejection:
                tally.rejected += 1
                yield outcome, rejection
            elif outcome.status == "done":
                tally.processed += 1
                yield outcome, None


def _progress(cfg: Config, total: int, name: str) -> tqdm:
    return tqdm(total=total, desc=name, unit="file", disable=not cfg.progress, file=sys.stderr, leave=False)


def _list_items(cfg: Config, modality: str, spec: registry.Modality, root: Path) -> list[sources.SourceItem]:
    """A named dataset's adapter when there is one (upstream layout, labels, splits), else the generic
    folder source."""
    from pipelines.data import adapters

    try:
        items = adapters.list_items(cfg.dataset, modality, root)
    except FileNotFoundError as err:
        raise StageError(f"dataset={cfg.dataset}: {err}") from None
    return spec.list_items(root) if items is None else items


def _run_array_modality(cfg: Config, modality: str) -> int:
    spec = registry.get(modality)
    root = Path(cfg.root)
    if not root.is_dir():
        raise StageError(f"raw data folder {root} does not exist (run `make demo-data` or set root=...)")
    if cfg.shard_size < 1:
        raise StageError("shard_size must be at least 1")
    items = _list_items(cfg, modality, spec, root)
    if not items:
        raise StageError(f"no {modality} files under {sources.modality_root(root, modality)}")
    out_dir = cfg.out_dir / modality
    manifest.discard_uncommitted(out_dir)
    done_rows, done_rejections = manifest.read_batches(out_dir)
    known_paths: dict[str, set[str]] = collections.defaultdict(set)
    for frame, column in ((done_rows, "source"), (done_rejections, "path")):
        for sha, shown in zip(frame["source_sha256"].fillna(""), frame[column], strict=True):
            if sha:
                known_paths[sha].add(shown)
    reader_cfg = getattr(cfg, spec.config_attr)
    registry.resolve(spec.reader)  # import the reader (and its libraries) once, before the workers fork
    for library in spec.libraries:
        with contextlib.suppress(ImportError):  # a missing one is the reader's error to report, per file
            importlib.import_module(library)
    job = _job(cfg, modality, _process_file, spec.reader, reader_cfg, known_paths)

    number = manifest.next_batch_number(out_dir)
    arrays: list[Any] = []
    rows: list[dict[str, Any]] = []
    rejections: list[dict[str, str]] = []
    tally = _Tally()
    accounted = _accounted(
        cfg, job, items, f"preprocess-{modality}", max(1, cfg.chunksize), known_paths, tally
    )
    for outcome, rejection in accounted:
        if rejection:
            rejections.append(rejection)
        else:
            rows.extend(outcome.rows)
            arrays.extend(outcome.arrays)
        # A file's crops stay in one batch, so a batch boundary never splits an input.
        if len(arrays) >= cfg.shard_size:
            manifest.write_batch(out_dir, number, arrays, rows, rejections)
            number, arrays, rows, rejections = number + 1, [], [], []
    if arrays or rejections:
        manifest.write_batch(out_dir, number, arrays, rows, rejections)
    normalisation = registry.resolve(spec.normalisation)(reader_cfg)
    # The reader settings travel with the data, so a served model decodes new files exactly as
    # training data was decoded (the registry bundles this file with the model).
    normalisation["reader_config"] = dataclasses.asdict(reader_cfg)
    manifest.atomic_write(
        out_dir / "normalisation.json",
        lambda h: h.write(json.dumps(normalisation, indent=2, default=str).encode()),
    )
    return _finish(cfg, modality, out_dir, tally, spec.card_labels, dataclasses.asdict(reader_cfg))


def _finish(
    cfg: Config,
    modality: str,
    out_dir: Path,
    tally: _Tally,
    card_labels: tuple[str, ...],
    parameters: dict[str, Any],
    tables: tuple[pd.DataFrame, pd.DataFrame] | None = None,
) -> int:
    """Rebuild manifest/rejections from what is committed, write summary.json and the data card."""
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
    summary = _summary(modality, rows, rejected, tally)
    manifest.atomic_write(out_dir / "summary.json", lambda h: h.write(json.dumps(summary, indent=2).encode()))
    _write_card(cfg, modality, rows, card_labels, parameters)
    _print_summary(cfg, summary, out_dir)
    return 0


def _summary(modality: str, rows: pd.DataFrame, rejected: pd.DataFrame, tally: _Tally) -> dict[str, Any]:
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


def _print_summary(cfg: Config, summary: dict[str, Any], out_dir: Path) -> None:
    run = summary["this_run"]
    print(
        f"preprocess-{summary['modality']} [{cfg.dataset}]: seen {summary['seen']} = processed "
        f"{summary['processed']} + rejected {summary['rejected']} ({summary['samples']} samples; this run: "
        f"{run['processed']} new, {run['rejected']} rejected, {run['already_done']} already done) -> {out_dir}"
    )
    for reason, count in summary["rejected_by_reason"].items():
        print(f"  rejected {count:>5} x {reason}")


def _label_counts(rows: pd.DataFrame, columns: tuple[str, ...]) -> dict[str, Any]:
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


def _write_card(
    cfg: Config, modality: str, rows: pd.DataFrame, card_labels: tuple[str, ...], parameters: dict[str, Any]
) -> Path:
    label_counts = (
        _report_label_counts(rows, card_labels) if modality == "reports" else _label_counts(rows, card_labels)
    )
    counts = (
        {k: int(v) for k, v in rows["split"].value_counts().sort_index().items()} if not rows.empty else {}
    )
    hashes = sorted(set(rows["source_sha256"])) if not rows.empty else []
    phi_status = cfg.phi_status or ("synthetic" if cfg.dataset == "demo" else "pseudonymised")
    common = public_dict(cfg)
    preprocessing = {
        "stage": f"preprocess-{modality}",
        "shard_size": cfg.shard_size,
        "seed": cfg.seed,
        "split_fractions": [float(f) for f in cfg.split_fractions],
        "hash_paths": cfg.hash_paths,
        modality: json.loads(json.dumps(parameters, default=str)),
    }
    front = {
        "source": f"{cfg.dataset} ({'synthetic demo cohort, make demo-data' if cfg.dataset == 'demo' else 'folder'})",
        "licence": cfg.licence
        or ("Apache-2.0 (synthetic)" if cfg.dataset == "demo" else "unknown (set licence=)"),
        "modalities": [modality],
        "counts": counts,
        "label_counts": label_counts,
        "phi_status": phi_status,
        "preprocessing": preprocessing,
        "generator": f"pipelines.preprocess ({_package_version()})",
        "version": _package_version(),
        "content_hash": datacard.content_hash(hashes),
    }
    body = (
        f"# {cfg.dataset}-{modality}\n\n"
        f"{modality} samples of the `{cfg.dataset}` dataset, preprocessed by `python -m pipelines "
        f"preprocess-{modality}` into `{common['out'] or 'data/processed/' + cfg.dataset}/{modality}/`.\n\n"
        "Subject, study and sample IDs are salted SHA-256 hashes; raw identifiers, names and dates do not "
        "leave the raw folder. Splits are by subject (seeded), so no subject is in two splits. "
        "Counts are samples per split; label counts are per label value and split. "
        "`content_hash` is the SHA-256 of the sorted source file hashes.\n"
    )
    return datacard.write_card(f"{cfg.dataset}-{modality}", front, body, cfg.cards_dir)


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("clinical-encoders")
    except PackageNotFoundError:
        return "0+unknown"


# --------------------------------------------------------------------------- reports
@dataclasses.dataclass
class _ReportItem:
    rel: str
    row: int
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


def list_reports(root: Path, default_kind: str) -> tuple[list[_ReportItem], list[dict[str, str]]]:
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
            items.append(_ReportItem(rel, 0, subject, study, default_kind, text))
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
                _ReportItem(
                    rel,
                    i + 1,
                    _first(record, ("mrn", "subject", "subject_id", "patient_id")) or f"{subject}#{i + 1}",
                    _first(record, ("accession", "study", "study_id")) or f"{study}#{i + 1}",
                    _first(record, ("kind",)) or default_kind,
                    _first(record, ("text", "report")),
                )
            )
    return items, problems


def _process_report(item: _ReportItem, job: _Job) -> _Outcome:
    from pipelines.data import reports

    shown = _shown_path(item.rel, job) + (f"#row{item.row}" if item.row else "")
    # Content hash of what the stage uses (identity + text), not of the whole CSV: one new row is one
    # new input, and the date column (PHI, unused) does not enter.
    payload = json.dumps([item.raw_subject, item.raw_study, item.kind, item.text], ensure_ascii=False)
    sha = hashlib.sha256(payload.encode()).hexdigest()
    if sha in job.known:
        return _Outcome(shown, sha, "known")
    if not item.text.strip():
        return _Outcome(shown, sha, "rejected", stage="read", reason="empty report text")
    vocabulary = job.reader_cfg
    sections = reports.split_sections(item.text)
    findings = reports.scrub_identifiers(sections.get("findings") or "")
    impression = reports.scrub_identifiers(sections.get("impression") or "")
    text = reports.scrub_identifiers(sections.get("text") or " ".join(filter(None, (findings, impression))))
    # Label against the report kind's own vocabulary: a radiology report never switches on an ECG label.
    body = " ".join(filter(None, (findings, impression))) or text
    labels = reports.label_report(body, vocabulary, reports.KIND_MODALITY.get(item.kind))
    row = _common_row(job, item.raw_subject, item.raw_study, sha, 0, shown)
    row.update({"shard": None, "index": None, "kind": item.kind, "text": text})
    row.update({"findings": findings, "impression": impression})
    row.update({name: (None if value is None else int(value)) for name, value in labels.items()})
    return _Outcome(shown, sha, "done", rows=[row])


def run_reports(cfg: Config) -> int:
    """Split, scrub and label report text into reports/manifest.csv (no shards)."""
    from pipelines.data import reports

    root = Path(cfg.root)
    if not root.is_dir():
        raise StageError(f"raw data folder {root} does not exist (run `make demo-data` or set root=...)")
    items, problems = list_reports(root, cfg.reports.default_kind)
    if not items and not problems:
        raise StageError(f"no report CSV or .txt files under {sources.modality_root(root, 'reports')}")
    vocabulary = reports.load_vocabulary(cfg.reports.vocabulary or None)
    out_dir = cfg.out_dir / "reports"
    previous = (
        manifest.load_manifest(out_dir, include_tombstoned=True)
        if (out_dir / "manifest.csv").is_file()
        else None
    )
    known = set(previous["source_sha256"]) if previous is not None else set()
    job = _job(cfg, "reports", _process_report, "", vocabulary, known)
    known_paths = collections.defaultdict(set)
    if previous is not None:
        for sha, shown in zip(previous["source_sha256"], previous["source"], strict=True):
            known_paths[sha].add(shown)
    rows, rejections = [], []
    tally = _Tally()
    for outcome, rejection in _accounted(
        cfg, job, items, "preprocess-reports", max(16, cfg.chunksize), known_paths, tally
    ):
        if rejection:
            rejections.append(rejection)
        else:
            rows.extend(outcome.rows)
    for problem in problems:
        shown = sources.pseudonymous_path(problem["path"], job.salt) if cfg.hash_paths else problem["path"]
        rejections.append({**problem, "path": shown, "source_sha256": ""})
        tally.rejected += 1
    frame = pd.DataFrame(rows)
    if previous is not None:
        frame = pd.concat([previous, frame], ignore_index=True)
    label_columns = tuple(c for c in frame.columns if c in set(_vocabulary_labels(vocabulary, frame)))
    for column in label_columns:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("Int64")
    rejected = pd.DataFrame(rejections, columns=list(manifest.REJECTION_COLUMNS))
    parameters = {
        "vocabulary": cfg.reports.vocabulary or "packaged",
        "default_kind": cfg.reports.default_kind,
    }
    return _finish(cfg, "reports", out_dir, tally, label_columns, parameters, tables=(frame, rejected))


def _vocabulary_labels(vocabulary: Any, frame: pd.DataFrame) -> list[str]:
    """Label names of the vocabulary: manifest columns that are not common or text columns."""
    fixed = set(manifest.COMMON_COLUMNS) | {"kind", "text", "findings", "impression"}
    return [c for c in frame.columns if c not in fixed]


def _report_label_counts(rows: pd.DataFrame, columns: tuple[str, ...]) -> dict[str, Any]:
    """``{label: {"positive"|"negative"|"uncertain": n}}`` over all reports."""
    names = {1: "positive", 0: "negative", -1: "uncertain"}
    out = {}
    for column in columns:
        values = pd.to_numeric(rows[column], errors="coerce").dropna().astype(int)
        out[column] = {names[v]: int(n) for v, n in values.value_counts().sort_index().items() if v in names}
    return out


# --------------------------------------------------------------------------- entry points
def run_xray(cfg: Config) -> int:
    """Chest X-rays (DICOM/PNG/JPEG) -> uint8 shards + manifest + rejections + data card."""
    return _run_array_modality(cfg, "xray")


def run_ecg(cfg: Config) -> int:
    """ECGs (WFDB records, ECG DICOMs) -> 12-lead crops in shards + manifest + rejections + data card."""
    return _run_array_modality(cfg, "ecg")


def run_speech(cfg: Config) -> int:
    """Speech (WAV/FLAC/OGG) -> 16 kHz waveforms in shards + manifest + rejections + data card."""
    return _run_array_modality(cfg, "speech")


def run_all(cfg: Config) -> int:
    """Every modality found under ``root`` (a missing modality folder is skipped with a note)."""
    root = Path(cfg.root)
    if not root.is_dir():
        raise StageError(f"raw data folder {root} does not exist (run `make demo-data` or set root=...)")
    ran = 0
    for modality, run in (
        ("xray", run_xray),
        ("ecg", run_ecg),
        ("speech", run_speech),
        ("reports", run_reports),
    ):
        if not (root / modality).is_dir():
            print(f"preprocess: no {root / modality} folder, {modality} skipped")
            continue
        run(cfg)
        ran += 1
    if not ran:
        raise StageError(f"no xray/ecg/speech/reports folders under {root}")
    return 0
