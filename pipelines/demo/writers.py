"""Writing the planned demo cohort to disk: per-file jobs, the CSV side files, the forget list, the card.

The stage (``pipelines/demo_data.py``) plans the cohort and calls these; each job writes one study's
files (or one utterance) and returns their paths relative to the cohort root, so that jobs can run in
any process and any order and still give byte-identical files.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.demo import speech
from pipelines.demo.cohort import Study, write_ecg, write_xray
from pipelines.demo.reports import cardiology_report, radiology_report

Job = tuple[str, tuple]

REPORT_COLUMNS = ["mrn", "accession", "kind", "report_date", "text"]
TRANSCRIPT_COLUMNS = ["file", "speaker", "transcript", "intent", "sample_rate_hz"]


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


_JOBS = {"xray": _xray_job, "ecg": _ecg_job, "speech": _speech_job}


def run_job(job: Job) -> list[str]:
    """One ``(kind, args)`` job: the relative paths of the files it wrote."""
    kind, args = job
    return _JOBS[kind](args)


def file_jobs(
    root: Path, studies: list[Study], utterances: list[speech.Utterance], seed: int, image_size_px: int
) -> list[Job]:
    """Every file-writing job of the cohort, in a fixed order (ECGs, X-rays, utterances)."""
    jobs: list[Job] = [("ecg", (root, s)) for s in studies if s.ecg is not None]
    jobs += [("xray", (root, s, seed, image_size_px)) for s in studies if s.xrays]
    jobs += [("speech", (root, u)) for u in utterances]
    return jobs


def run_jobs(jobs: list[Job], workers: int) -> Iterator[list[str]]:
    """Paths written by each job, in job order; ``workers`` processes (1: in this process)."""
    if workers == 1:
        yield from map(run_job, jobs)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(run_job, jobs, chunksize=4)


def write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def withdrawn_subjects(studies: list[Study], seed: int, rate: float) -> list[str]:
    """A seeded ``rate`` share of the subjects (at least one when rate > 0), as their MRNs, sorted."""
    if not 0 <= rate < 1:
        raise ValueError(f"withdrawn_rate must be in [0, 1), got {rate}")
    subjects = sorted({s.identity.mrn for s in studies})
    n = max(1, round(rate * len(subjects))) if rate > 0 else 0
    rng = np.random.default_rng([seed, 5])
    return sorted(rng.choice(subjects, size=n, replace=False).tolist()) if n else []


def write_withdrawn(path: Path, mrns: list[str]) -> None:
    path.write_text(
        "# Demo forget list for `make unlearn`: subjects who withdrew consent (original MRNs; the demo\n"
        "# cohort is synthetic and preprocessed with the public demo salt).\n"
        + "".join(f"{m}\n" for m in mrns)
    )


def report_rows(studies: list[Study]) -> list[dict[str, Any]]:
    """One reports.csv row per radiology and cardiology report, each drawn from its study's seed."""
    rows = []
    for study in studies:
        rng = np.random.default_rng(study.report_seed)
        base = {
            "mrn": study.identity.mrn,
            "accession": study.accession,
            "report_date": study.study_date.isoformat(),
        }
        if study.has_radiology_report:
            report = radiology_report(study.findings, study.context, rng, study.identity, study.study_date)
            rows.append({**base, "kind": "radiology", "text": report.text})
        if study.has_cardiology_report:
            heart_rate = study.ecg.heart_rate_bpm if study.ecg else 70.0
            report = cardiology_report(study.dx, heart_rate, rng, study.identity)
            rows.append({**base, "kind": "cardiology", "text": report.text})
    return rows


def transcript_rows(utterances: list[speech.Utterance]) -> list[dict[str, Any]]:
    return [
        {
            "file": u.path,
            "speaker": u.speaker,
            "transcript": u.transcript,
            "intent": u.intent,
            "sample_rate_hz": u.sample_rate_hz,
        }
        for u in utterances
    ]


def card_body(counts: dict[str, int], per_task: Counter) -> str:
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
