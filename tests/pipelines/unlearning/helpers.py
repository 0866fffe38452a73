"""A processed fixture whose IDs are salted hashes of known originals (MRNs), as preprocessing writes them."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipelines.data import ids
from tests.pipelines.processed_fixture import write_processed_dataset

SALT = "test-salt-0123"
MODALITIES = ("xray", "ecg", "reports", "speech")


def mrn(i: int) -> str:
    """The original subject ID of fixture subject ``i`` (a canary: it must never appear in outputs)."""
    return f"CANARY-MRN-{i:05d}"


def accession(i: int) -> str:
    return f"CANARY-ACC-{i:05d}"


def write_hashed_dataset(root: Path, n_studies: int = 40) -> Path:
    """``write_processed_dataset`` with subject/study IDs replaced by ``ids.subject_id(MRN, SALT)``."""
    write_processed_dataset(root, n_studies=n_studies)
    subject = {f"sub{i:04d}": ids.subject_id(mrn(i), SALT) for i in range(n_studies)}
    study = {f"st{i:04d}": ids.study_id(mrn(i), accession(i), SALT) for i in range(n_studies)}
    for modality in MODALITIES:
        for path in [root / modality / "manifest.csv", *sorted((root / modality / "shards").glob("*.csv"))]:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
            frame["subject_id"] = frame["subject_id"].map(subject)
            frame["study_id"] = frame["study_id"].map(study)
            frame.to_csv(path, index=False)
    return root


def manifest(root: Path, modality: str) -> pd.DataFrame:
    return pd.read_csv(root / modality / "manifest.csv", dtype=str, keep_default_na=False)
