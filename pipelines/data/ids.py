"""Pseudonymous identifiers and subject-level splits.

Raw identifiers (MRN, accession, file names that contain them) never leave the raw folder: every
output carries ``sha256(salt + raw)`` truncated to 16 hex characters. The salt is read from the
``PIPELINE_SALT`` environment variable (or passed explicitly) and is never logged. Splits are a
seeded function of the pseudonymous subject ID alone, so every modality stage assigns a subject to
the same split without talking to the others, and no subject can straddle two splits.
"""

from __future__ import annotations

import hashlib
import os

DEFAULT_SALT = "demo-salt-change-me"
SPLITS = ("train", "val", "test")


def salt_from_env(configured: str | None = None) -> str:
    """The configured salt, else ``PIPELINE_SALT``, else the demo default (fine for synthetic data only)."""
    return configured or os.environ.get("PIPELINE_SALT") or DEFAULT_SALT


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()[:16]


def subject_id(raw_subject: str, salt: str) -> str:
    return _digest(salt, "subject", raw_subject.strip())


def study_id(raw_subject: str, raw_study: str, salt: str) -> str:
    return _digest(salt, "study", raw_subject.strip(), raw_study.strip())


def sample_id(modality: str, source_sha256: str, crop_index: int = 0) -> str:
    return f"{modality}-{_digest(source_sha256, str(crop_index))}"


def file_sha256(path: str | os.PathLike[str], chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def assign_split(
    pseudonymous_subject: str, seed: int = 0, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
) -> str:
    """Map a subject to train/val/test by a uniform hash in [0, 1): deterministic, seed-dependent."""
    if abs(sum(fractions) - 1.0) > 1e-6 or any(f < 0 for f in fractions):
        raise ValueError(f"split fractions must be non-negative and sum to 1, got {fractions}")
    u = int(_digest(str(seed), "split", pseudonymous_subject), 16) / 16**16
    edge = 0.0
    for name, fraction in zip(SPLITS, fractions, strict=True):
        edge += fraction
        if u < edge:
            return name
    return SPLITS[-1]
