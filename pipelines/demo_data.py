"""Synthesise the demo cohort in real file formats under data/raw/demo (see docs/data-layout.md).

Writes chest X-ray DICOMs (CR/DX, MONOCHROME1/2, 10/12/16 bits, some RLE / JPEG 2000 / JPEG-LS
lossless), 12-lead WFDB ECGs, radiology and cardiology reports (reports.csv), spoken clinical commands
(espeak-ng WAVs + transcripts.csv), truth.csv, cohort.json, withdrawn.txt (the demo forget list of
`make unlearn`) and the data card data_cards/demo-raw.md.
Fake names, birth dates, MRNs and phone numbers are placed in the files on purpose, to exercise
de-identification. The same seed gives byte-identical files.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from pipelines.data.datacard import CARDS_DIR, write_card
from pipelines.data.ids import file_sha256
from pipelines.demo import speech
from pipelines.demo.cohort import GENERATOR_VERSION, Study, plan_cohort, truth_row, write_ecg, write_xray
from pipelines.demo.ecg import ECG_CODES
from pipelines.demo.phantom import FINDINGS
from pipelines.demo.reports import cardiology_report, radiology_report
from pipelines.errors import StageError


@dataclasses.dataclass
class Config:
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


SUBFOLDERS = ("xray", "ecg", "reports", "speech")


def _xray_job(args: tuple) -> list[str]:
    root, study, seed, size_px = args
    return [str(write_xray(root, study, plan, seed, size_px).relative_to(root)) for plan in study.xrays]


def _ecg_job(args: tuple) -> list[str]:
    root, study = args
    hea = write_ecg(root, study)
    return [str(hea.relative_to(root)), str(hea.with_suffix(".dat").relative_to(root))]


def _speech_job(args: tuple) -> list[str]:
    root, utterance = args
    return [str(speech.write_utterance(root / "speech", utterance).relative_to(root))]


def _run_job(job: tuple) -> list[str]:
    kind, args = job
    return {"xray": _xray_job, "ecg": _ecg_job, "speech": _speech_job}[kind](args)


def _write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _withdrawn_subjects(studies: list[Study], seed: int, rate: float) -> list[str]:
    """A seeded ``rate`` share of the subjects (at least one when rate > 0), as their MRNs, sorted."""
    if not 0 <= rate < 1:
        raise StageError(f"withdrawn_rate must be in [0, 1), got {rate}")
    subjects = sorted({s.identity.mrn for s in studies})
    n = max(1, round(rate * len(subjects))) if rate > 0 else 0
    rng = np.random.default_rng([seed, 5])
    return sorted(rng.choice(subjects, size=n, replace=False).tolist()) if n else []


def _report_rows(studies: list[Study]) -> list[dict[str, Any]]:
    rows = []
    for study in studies:
        rng = np.random.default_rng(study.report_seed)
        base = {"mrn": study.identity.mrn, "accession": study.accession}
        if study.has_radiology_report:
            report = radiology_report(study.findings, study.context, rng, study.identity, study.study_date)
            rows.append(
                {
                    **base,
                    "kind": "radiology",
                    "report_date": study.study_date.isoformat(),
                    "text": report.text,
                }
            )
        if study.has_cardiology_report:
            heart_rate = study.ecg.heart_rate_bpm if study.ecg else 70.0
            report = cardiology_report(study.dx, heart_rate, rng, study.identity)
            rows.append(
                {
                    **base,
                    "kind": "cardiology",
                    "report_date": study.study_date.isoformat(),
                    "text": report.text,
                }
            )
    return rows


def run(config: Config) -> int:
    start = time.perf_counter()
    root = Path(config.output_dir)
    if config.n_subjects < 1:
        raise StageError(f"n_subjects must be >= 1, got {config.n_subjects}")
    if config.image_size_px < 64:
        raise StageError(f"image_size_px must be >= 64, got {config.image_size_px}")
    root.mkdir(parents=True, exist_ok=True)
    for name in SUBFOLDERS:  # a re-run must not leave files of a previous, larger cohort behind
        shutil.rmtree(root / name, ignore_errors=True)

    studies = plan_cohort(
        config.seed, config.n_subjects, config.second_study_rate, config.missing_modality_rate
    )
    utterances: list[speech.Utterance] = []
    if config.n_utterances > 0:
        if speech.espeak_available():
            utterances = speech.plan_utterances(config.seed, config.n_utterances, config.n_speakers)
        else:
            print(
                "warning: espeak-ng not found; skipping speech (install it: apt-get install espeak-ng)",
                file=sys.stderr,
            )

    jobs: list[tuple[str, tuple]] = []
    jobs += [("ecg", (root, s)) for s in studies if s.ecg is not None]
    jobs += [("xray", (root, s, config.seed, config.image_size_px)) for s in studies if s.xrays]
    jobs += [("speech", (root, u)) for u in utterances]
    workers = config.workers or os.cpu_count() or 1
    written: list[str] = []
    bar = tqdm(total=len(jobs), desc="demo cohort", unit="job", disable=not config.progress)
    if workers == 1:
        for job in jobs:
            written += _run_job(job)
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for paths in pool.map(_run_job, jobs, chunksize=4):
                written += paths
                bar.update()
    bar.close()

    report_rows = _report_rows(studies)
    _write_csv(
        root / "reports" / "reports.csv", report_rows, ["mrn", "accession", "kind", "report_date", "text"]
    )
    written.append("reports/reports.csv")
    if utterances:
        _write_csv(
            root / "speech" / "transcripts.csv",
            [
                {
                    "file": u.path,
                    "speaker": u.speaker,
                    "transcript": u.transcript,
                    "intent": u.intent,
                    "sample_rate_hz": u.sample_rate_hz,
                }
                for u in utterances
            ],
            ["file", "speaker", "transcript", "intent", "sample_rate_hz"],
        )
        written.append("speech/transcripts.csv")
    truth = [truth_row(s) for s in studies]
    _write_csv(root / "truth.csv", truth, list(truth[0]))
    withdrawn = _withdrawn_subjects(studies, config.seed, config.withdrawn_rate)
    (root / "withdrawn.txt").write_text(
        "# Demo forget list for `make unlearn`: subjects who withdrew consent (original MRNs; the demo\n"
        "# cohort is synthetic and preprocessed with the public demo salt).\n"
        + "".join(f"{m}\n" for m in withdrawn)
    )

    label_counts = {name: int(sum(r[name] for r in truth)) for name in (*FINDINGS, "no_finding", *ECG_CODES)}
    counts = {
        "subjects": config.n_subjects,
        "studies": len(studies),
        "xray_files": sum(len(s.xrays) for s in studies),
        "ecg_records": sum(s.ecg is not None for s in studies),
        "reports": len(report_rows),
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
    from pipelines.data.datacard import content_hash

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
        _card_body(counts, per_task),
        config.cards_dir,
    )
    elapsed = time.perf_counter() - start
    print(
        f"demo cohort: {counts['files']} files ({counts['studies']} studies of {config.n_subjects} subjects, "
        f"{counts['utterances']} utterances) in {elapsed:.1f} s = {counts['files'] / elapsed:.1f} files/s "
        f"with {workers} workers -> {root}; card {card}"
    )
    return 0


def _card_body(counts: dict[str, int], per_task: Counter) -> str:
    tasks = ", ".join(f"{k}: {v} studies" for k, v in sorted(per_task.items()))
    return f"""
# Demo cohort (raw)

A synthetic cohort written in the formats real exports use (DICOM chest X-rays, WFDB 12-lead ECGs,
free-text reports, WAV speech), so the preprocessing code that serves real data runs on it unchanged.
Nothing here describes a real person: names, birth dates, MRNs and phone numbers are invented and are
placed in DICOM tags, WFDB header comments and report text **on purpose**, so that de-identification is
exercised. It must still never leave `data/raw/`.

- X-rays: a parametric chest phantom where findings change anatomy (cardiothoracic ratio > 0.5,
  blunted costophrenic angle with meniscus, pleural line without peripheral markings, patchy opacity
  with air bronchograms, perihilar haze with Kerley lines).
- ECGs: neurokit2 ECGSYN beats on sinus or fibrillating rhythms with LBBB, ST elevation and LVH changes.
- Speech: espeak-ng voices, rates and pitches, white noise at 10-30 dB SNR, 16 kHz and 8 kHz.
- Continual-learning task sequence ({tasks}): task 1 site A (cardiomegaly, effusion, normal), task 2
  site B with different exposure and noise (pneumothorax, consolidation), task 3 new ECG diagnoses.

Counts: {counts["studies"]} studies, {counts["xray_files"]} X-ray files, {counts["ecg_records"]} ECG
records, {counts["reports"]} reports, {counts["utterances"]} utterances. Limitations: the phantom and
the simulator are far simpler than real anatomy and physiology; use it to test the pipeline, not to
claim clinical performance.
"""
