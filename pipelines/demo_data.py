"""Synthesise the demo cohort in real file formats under data/raw/demo (see docs/data-layout.md).

Writes chest X-ray DICOMs (CR/DX, MONOCHROME1/2, 10/12/16 bits, some RLE / JPEG 2000 / JPEG-LS
lossless), 12-lead WFDB ECGs, radiology and cardiology reports (reports.csv), spoken clinical commands
(espeak-ng WAVs + transcripts.csv), truth.csv, cohort.json, withdrawn.txt (the demo forget list of
`make unlearn`) and the data card data_cards/demo-raw.md.
Fake names, birth dates, MRNs and phone numbers are placed in the files on purpose, to exercise
de-identification. The same seed gives byte-identical files.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tqdm import tqdm

from pipelines.config import ConfigError
from pipelines.data.datacard import CARDS_DIR, content_hash, write_card
from pipelines.data.ids import file_sha256
from pipelines.demo import speech, writers
from pipelines.demo.cohort import GENERATOR_VERSION, Study, plan_cohort, truth_row
from pipelines.demo.ecg import ECG_CODES
from pipelines.demo.phantom import FINDINGS

SUBFOLDERS = ("xray", "ecg", "reports", "speech")


@dataclasses.dataclass
class DemoDataConfig:
    output_dir: str = dataclasses.field(default="data/raw/demo", metadata={"help": "cohort root folder"})
    seed: int = dataclasses.field(default=1234, metadata={"help": "all randomness derives from this"})
    n_subjects: int = dataclasses.field(default=160, metadata={"help": "number of synthetic subjects"})
    second_study_rate: float = dataclasses.field(
        default=0.4, metadata={"help": "share of subjects with 2 studies"}
    )
    missing_modality_rate: float = dataclasses.field(
        default=0.1, metadata={"help": "share of studies lacking the X-ray or the ECG"}
    )
    image_size_px: int = dataclasses.field(default=320, metadata={"help": "X-ray rows = columns"})
    n_utterances: int = dataclasses.field(default=200, metadata={"help": "speech utterances (0 = no speech)"})
    n_speakers: int = dataclasses.field(default=12, metadata={"help": "synthetic speakers (voice + pitch)"})
    withdrawn_rate: float = dataclasses.field(
        default=0.05,
        metadata={
            "help": "share of subjects listed in withdrawn.txt, the demo forget list of `make unlearn`"
        },
    )
    workers: int = dataclasses.field(default=0, metadata={"help": "processes; 0 = all cores"})
    cards_dir: str = dataclasses.field(default=str(CARDS_DIR), metadata={"help": "where the data card goes"})
    progress: bool = dataclasses.field(default=True, metadata={"help": "show tqdm progress bars"})

    def __post_init__(self) -> None:
        problems = []
        if self.n_subjects < 1:
            problems.append(f"n_subjects must be >= 1, got {self.n_subjects}")
        # The phantom's anatomy (costophrenic angles, pleural lines) needs this many pixels to be drawn.
        if self.image_size_px < 64:
            problems.append(f"image_size_px must be >= 64, got {self.image_size_px}")
        for name in ("second_study_rate", "missing_modality_rate"):
            if not 0 <= getattr(self, name) <= 1:
                problems.append(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0 <= self.withdrawn_rate < 1:
            problems.append(f"withdrawn_rate must be in [0, 1), got {self.withdrawn_rate}")
        if self.n_utterances < 0 or self.n_speakers < 1 or self.workers < 0:
            problems.append(
                "n_utterances and workers must be >= 0 and n_speakers >= 1, got "
                f"{self.n_utterances}, {self.workers}, {self.n_speakers}"
            )
        if problems:
            raise ConfigError("demo-data: " + "; ".join(problems))


def _plan_utterances(config: DemoDataConfig) -> list[speech.Utterance]:
    if config.n_utterances == 0:
        return []
    if not speech.espeak_available():
        print(
            "warning: espeak-ng not found; skipping speech (install it: apt-get install espeak-ng)",
            file=sys.stderr,
        )
        return []
    return speech.plan_utterances(config.seed, config.n_utterances, config.n_speakers)


def _write_tables(
    root: Path, studies: list[Study], utterances: list[speech.Utterance], config: DemoDataConfig
) -> tuple[list[str], int, list[dict[str, Any]], list[str]]:
    """reports.csv, transcripts.csv, truth.csv and withdrawn.txt: (the data files written, number of
    reports, truth rows, withdrawn MRNs); truth and withdrawn.txt are for tests and unlearning only."""
    report_rows = writers.report_rows(studies)
    writers.write_csv(root / "reports" / "reports.csv", report_rows, writers.REPORT_COLUMNS)
    written = ["reports/reports.csv"]
    if utterances:
        rows = writers.transcript_rows(utterances)
        writers.write_csv(root / "speech" / "transcripts.csv", rows, writers.TRANSCRIPT_COLUMNS)
        written.append("speech/transcripts.csv")
    truth = [truth_row(s) for s in studies]
    writers.write_csv(root / "truth.csv", truth, list(truth[0]))
    withdrawn = writers.withdrawn_subjects(studies, config.seed, config.withdrawn_rate)
    writers.write_withdrawn(root / "withdrawn.txt", withdrawn)
    return written, len(report_rows), truth, withdrawn


def _usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. a container's cpuset), not the host's."""
    if hasattr(os, "sched_getaffinity"):
        return max(len(os.sched_getaffinity(0)), 1)
    return os.cpu_count() or 1


def run(config: DemoDataConfig) -> int:
    start = time.perf_counter()
    root = Path(config.output_dir)
    root.mkdir(parents=True, exist_ok=True)
    for name in SUBFOLDERS:  # a re-run must not leave files of a previous, larger cohort behind
        shutil.rmtree(root / name, ignore_errors=True)

    studies = plan_cohort(
        config.seed, config.n_subjects, config.second_study_rate, config.missing_modality_rate
    )
    utterances = _plan_utterances(config)
    jobs = writers.file_jobs(root, studies, utterances, config.seed, config.image_size_px)
    workers = config.workers or _usable_cores()
    written: list[str] = []
    with tqdm(total=len(jobs), desc="demo cohort", unit="job", disable=not config.progress) as bar:
        for paths in writers.run_jobs(jobs, workers):
            written += paths
            bar.update()
    tables, n_reports, truth, withdrawn = _write_tables(root, studies, utterances, config)
    written += tables

    label_counts = {name: int(sum(r[name] for r in truth)) for name in (*FINDINGS, "no_finding", *ECG_CODES)}
    counts = {
        "subjects": config.n_subjects,
        "studies": len(studies),
        "xray_files": sum(len(s.xrays) for s in studies),
        "ecg_records": sum(s.ecg is not None for s in studies),
        "reports": n_reports,
        "utterances": len(utterances),
        "files": len(written),
    }
    per_task = Counter(f"task{s.task}" for s in studies)
    cohort = {
        "seed": config.seed,
        "generator": GENERATOR_VERSION,
        "sizes": {
            "n_subjects": config.n_subjects,
            "image_size_px": config.image_size_px,
            "n_utterances": config.n_utterances,
        },
        "counts": counts,
        "label_counts": label_counts,
        "studies_per_task": dict(sorted(per_task.items())),
        "speech_skipped": config.n_utterances > 0 and not utterances,
        "withdrawn_subjects": len(withdrawn),
    }
    (root / "cohort.json").write_text(json.dumps(cohort, indent=2, sort_keys=True) + "\n")

    hashes = sorted((p, file_sha256(root / p)) for p in written)
    card = write_card(
        "demo-raw",
        {
            "source": f"synthetic, generated by `make demo-data` (seed {config.seed})",
            "licence": "CC0-1.0 (synthetic)",
            "modalities": ["xray", "ecg", "reports"] + (["speech"] if utterances else []),
            "counts": counts,
            "label_counts": label_counts,
            "phi_status": "synthetic",
            "preprocessing": {"image_size_px": config.image_size_px, "ecg_duration_s": 10},
            "generator": GENERATOR_VERSION,
            "version": f"seed-{config.seed}",
            "content_hash": content_hash(hashes),
        },
        writers.card_body(counts, per_task),
        config.cards_dir,
    )
    elapsed = time.perf_counter() - start
    print(
        f"demo cohort: {counts['files']} files ({counts['studies']} studies of {config.n_subjects} subjects, "
        f"{counts['utterances']} utterances) in {elapsed:.1f} s = {counts['files'] / elapsed:.1f} files/s "
        f"with {workers} workers -> {root}; card {card}"
    )
    return 0
