"""Preprocessing as a library: its settings and one function per kind of input.

``process_modality(cfg, "xray" | "ecg" | "speech")`` decodes every file of an array modality (the
modality's reader, config and card labels come from ``pipelines.data.registry``) through the shared
file loop into shard batches, then writes ``normalisation.json``, the manifest, rejections, summary and
data card. ``process_reports(cfg)`` does the same for report text (no shards). Both resume: inputs
already done (by content hash) are skipped. The stage ``pipelines/preprocess.py`` calls these; so do the
evidence stage and the preprocessing benchmark, which is why the settings live here.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import importlib
import json
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines.config import ConfigError, public_dict
from pipelines.data import ids, manifest, registry, sources
from pipelines.data.audio import SpeechConfig
from pipelines.data.datacard import PHI_STATUSES
from pipelines.data.ecg import EcgConfig
from pipelines.data.file_loop import Job, LoopSettings, Tally, accounted, process_file
from pipelines.data.outputs import CardSettings, finish, label_counts, report_label_counts
from pipelines.data.report_items import label_columns, list_reports, process_report
from pipelines.data.xray import XrayConfig
from pipelines.errors import StageError


@dataclasses.dataclass
class ReportTextConfig:
    """Report text: where the label vocabulary is."""

    vocabulary: str = dataclasses.field(
        default="", metadata={"help": "label vocabulary file (empty: the packaged, versioned one)"}
    )
    default_kind: str = dataclasses.field(
        default="radiology", metadata={"help": "kind of reports given as .txt files or without a kind column"}
    )


@dataclasses.dataclass
class PreprocessConfig:
    dataset: str = dataclasses.field(default="demo", metadata={"help": "dataset name (output folder, card)"})
    root: str = dataclasses.field(default="data/raw/demo", metadata={"help": "raw data folder"})
    out: str = dataclasses.field(
        default="", metadata={"help": "output folder (empty: data/processed/<dataset>)"}
    )
    cards_dir: str = dataclasses.field(
        default="data_cards", metadata={"help": "where data cards are written"}
    )
    workers: int = dataclasses.field(default=0, metadata={"help": "worker processes (0: all cores)"})
    chunksize: int = dataclasses.field(
        default=4,
        metadata={
            "help": "at least this many files per task sent to a worker (the local pool raises it to about "
            "4 tasks per worker, at most 16)"
        },
    )
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
    reports: ReportTextConfig = dataclasses.field(default_factory=ReportTextConfig)

    def __post_init__(self) -> None:
        problems = []
        fractions = [float(f) for f in self.split_fractions]
        if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-6 or min(fractions) < 0:
            problems.append(
                f"split_fractions must be three non-negative numbers summing to 1, got {fractions}"
            )
        if self.shard_size < 1:
            problems.append(f"shard_size must be at least 1, got {self.shard_size}")
        if self.chunksize < 1 or self.workers < 0:
            problems.append(f"chunksize must be >= 1 and workers >= 0, got {self.chunksize}, {self.workers}")
        if self.phi_status and self.phi_status not in PHI_STATUSES:
            problems.append(
                f"phi_status must be empty or one of {sorted(PHI_STATUSES)}, got {self.phi_status!r}"
            )
        if problems:
            raise ConfigError("preprocess: " + "; ".join(problems))

    @property
    def out_dir(self) -> Path:
        return Path(self.out) if self.out else Path("data/processed") / self.dataset

    def loop(self, min_chunksize: int = 1) -> LoopSettings:
        return LoopSettings(
            self.workers, max(min_chunksize, self.chunksize), self.progress, self.executor, self.ray_address
        )

    def card(self) -> CardSettings:
        return CardSettings(
            dataset=self.dataset,
            cards_dir=self.cards_dir,
            licence=self.licence,
            phi_status=self.phi_status,
            out_label=public_dict(self)["out"] or f"data/processed/{self.dataset}",
            preprocessing={
                "shard_size": self.shard_size,
                "seed": self.seed,
                "split_fractions": [float(f) for f in self.split_fractions],
                "hash_paths": self.hash_paths,
            },
        )

    def job(self, modality: str, process: Any, reader: Any, reader_cfg: Any, known: Any, **extra: Any) -> Job:
        return Job(
            modality=modality,
            process=process,
            reader=reader,
            reader_cfg=reader_cfg,
            salt=ids.salt_from_env(self.salt),
            seed=self.seed,
            fractions=tuple(float(f) for f in self.split_fractions),  # type: ignore[arg-type]
            hash_paths=self.hash_paths,
            known=frozenset(known),
            **extra,
        )


def raw_root(cfg: PreprocessConfig) -> Path:
    root = Path(cfg.root)
    if not root.is_dir():
        raise StageError(f"raw data folder {root} does not exist (run `make demo-data` or set root=...)")
    return root


def _list_items(cfg: PreprocessConfig, spec: registry.Modality, root: Path) -> list[sources.SourceItem]:
    """A named dataset's adapter when there is one (upstream layout, labels, splits), else the generic
    folder source."""
    from pipelines.data import adapters

    try:
        items = adapters.list_items(cfg.dataset, spec.name, root)
    except FileNotFoundError as err:
        raise StageError(f"dataset={cfg.dataset}: {err}") from None
    return spec.list_items(root) if items is None else items


def _known_paths(*tables: tuple[pd.DataFrame, str]) -> dict[str, set[str]]:
    """``{content hash: {shown paths}}`` of inputs already in the manifest or the rejections."""
    known: dict[str, set[str]] = collections.defaultdict(set)
    for frame, column in tables:
        for sha, shown in zip(frame["source_sha256"].fillna(""), frame[column], strict=True):
            if sha:
                known[sha].add(shown)
    return known


def _import_reader(spec: registry.Modality, reader_cfg: Any = None) -> None:
    """Import the reader (and its libraries) and fill its caches once, before the workers fork."""
    registry.resolve(spec.reader)
    for library in spec.libraries:
        with contextlib.suppress(ImportError):  # a missing one is the reader's error to report, per file
            importlib.import_module(library)
    if spec.prepare:
        registry.resolve(spec.prepare)(reader_cfg)


def process_modality(cfg: PreprocessConfig, modality: str) -> dict[str, Any]:
    """Every file of ``modality`` under ``cfg.root`` into ``<out>/<modality>/``; returns the summary."""
    spec = registry.get(modality)
    root = raw_root(cfg)
    items = _list_items(cfg, spec, root)
    if not items:
        raise StageError(f"no {modality} files under {sources.modality_root(root, modality)}")
    out_dir = cfg.out_dir / modality
    manifest.discard_uncommitted(out_dir)
    done_rows, done_rejections = manifest.read_batches(out_dir)
    known_paths = _known_paths((done_rows, "source"), (done_rejections, "path"))
    reader_cfg = getattr(cfg, spec.config_attr)
    _import_reader(spec, reader_cfg)
    job = cfg.job(
        modality, process_file, spec.reader, reader_cfg, known_paths, subject_columns=spec.subject_columns
    )

    number = manifest.next_batch_number(out_dir)
    arrays: list[Any] = []
    rows: list[dict[str, Any]] = []
    rejections: list[dict[str, str]] = []
    tally = Tally()
    for outcome, rejection in accounted(cfg.loop(), job, items, f"preprocess-{modality}", known_paths, tally):
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
    return finish(
        out_dir,
        modality,
        tally,
        cfg.card(),
        lambda frame: label_counts(frame, spec.card_labels),
        dataclasses.asdict(reader_cfg),
    )


def process_reports(cfg: PreprocessConfig) -> dict[str, Any]:
    """Split, scrub and label report text into ``<out>/reports/manifest.csv`` (no shards)."""
    from pipelines.data import reports

    root = raw_root(cfg)
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
    job = cfg.job("reports", process_report, "", vocabulary, known)
    known_paths = _known_paths((previous, "source")) if previous is not None else {}
    rows, rejections = [], []
    tally = Tally()
    # Reports are cheap per item: larger tasks keep the pool's overhead below the work.
    for outcome, rejection in accounted(cfg.loop(16), job, items, "preprocess-reports", known_paths, tally):
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
    labels = label_columns(frame)
    for column in labels:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("Int64")
    rejected = pd.DataFrame(rejections, columns=list(manifest.REJECTION_COLUMNS))
    parameters = {
        "vocabulary": cfg.reports.vocabulary or "packaged",
        "default_kind": cfg.reports.default_kind,
    }
    return finish(
        out_dir,
        "reports",
        tally,
        cfg.card(),
        lambda table: report_label_counts(table, labels),
        parameters,
        tables=(frame, rejected),
    )
