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

from pipelines.data.preprocessing import (
    PreprocessConfig,
    ReportTextConfig,
    process_modality,
    process_reports,
    raw_root,
)
from pipelines.errors import StageError

__all__ = [
    "PreprocessConfig",
    "ReportTextConfig",
    "run_all",
    "run_ecg",
    "run_reports",
    "run_speech",
    "run_xray",
]


def run_xray(cfg: PreprocessConfig) -> int:
    """Chest X-rays (DICOM/PNG/JPEG) -> uint8 shards + manifest + rejections + data card."""
    process_modality(cfg, "xray")
    return 0


def run_ecg(cfg: PreprocessConfig) -> int:
    """ECGs (WFDB records, ECG DICOMs) -> 12-lead crops in shards + manifest + rejections + data card."""
    process_modality(cfg, "ecg")
    return 0


def run_speech(cfg: PreprocessConfig) -> int:
    """Speech (WAV/FLAC/OGG) -> mono waveforms at the reader's rate in shards + manifest + rejections +
    data card."""
    process_modality(cfg, "speech")
    return 0


def run_reports(cfg: PreprocessConfig) -> int:
    """Split, scrub and label report text into reports/manifest.csv (no shards)."""
    process_reports(cfg)
    return 0


def run_all(cfg: PreprocessConfig) -> int:
    """Every modality found under ``root`` (a missing modality folder is skipped with a note)."""
    root = raw_root(cfg)
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
