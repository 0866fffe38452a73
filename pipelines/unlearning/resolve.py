"""Forget list -> samples, through the processed manifests.

A forget list is a text file with one identifier per line (blank lines and ``#`` comments are
ignored). An identifier is either

- pseudonymous: a ``subject_id`` or ``study_id`` exactly as the manifests carry it (always accepted), or
- original: a raw subject ID (MRN) or a raw study written ``MRN/ACCESSION``. Originals are hashed with
  :func:`pipelines.data.ids.subject_id` / :func:`~pipelines.data.ids.study_id` and therefore accepted
  only when the salt that preprocessing used is available (configured, or ``PIPELINE_SALT``): without
  it an original cannot be matched and is refused like any unknown ID.

Unknown identifiers stop the stage. The message names how many and on which lines, never the IDs
themselves (an unmatched line may well be an MRN). The resolved request is summarised by the SHA-256
of the sorted, de-duplicated *pseudonymous* subject/study IDs it matched, so that two lists naming the
same people (one by MRN, one by hash) get the same hash and nothing in clear leaves this module.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pandas as pd

from pipelines.data import ids
from pipelines.data.manifest import load_manifest
from pipelines.errors import StageError

MODALITIES = ("xray", "ecg", "speech", "reports")
STUDY_SEPARATOR = "/"


@dataclasses.dataclass
class ForgetEntry:
    """One line of the forget list: its 1-based line number and text (kept in memory only)."""

    line: int
    text: str


@dataclasses.dataclass
class Resolution:
    """What a forget list names: samples per modality, and the pseudonymous IDs it matched.

    ``sample_ids[modality]`` are every sample (all splits) of the matched subjects/studies;
    ``already_withdrawn`` those of them that an earlier request already tombstoned.
    """

    subject_ids: set[str]
    study_ids: set[str]
    affected_study_ids: set[str]
    sample_ids: dict[str, set[str]]
    already_withdrawn: dict[str, set[str]]
    n_lines: int
    n_original: int
    list_sha256: str

    @property
    def all_sample_ids(self) -> set[str]:
        return set().union(*self.sample_ids.values()) if self.sample_ids else set()

    @property
    def withdrawn_keys(self) -> set[str]:
        """Every pseudonymous key whose rows must go from keyed tables: samples, their studies, and
        the subjects named as a whole (a study-level request leaves the subject's other studies)."""
        return self.all_sample_ids | self.affected_study_ids | self.subject_ids

    @property
    def new_sample_ids(self) -> dict[str, set[str]]:
        return {m: s - self.already_withdrawn.get(m, set()) for m, s in self.sample_ids.items()}

    def counts(self) -> dict[str, int]:
        """Counts only (what may be logged): lines, matched subjects/studies, samples per modality."""
        out = {
            "forget.lines": self.n_lines,
            "forget.original_ids": self.n_original,
            "forget.subjects": len(self.subject_ids),
            "forget.studies": len(self.study_ids),
        }
        for modality, samples in sorted(self.sample_ids.items()):
            out[f"forget.samples.{modality}"] = len(samples)
            out[f"forget.already_withdrawn.{modality}"] = len(self.already_withdrawn.get(modality, ()))
        return out


def read_forget_list(path: str | Path) -> list[ForgetEntry]:
    """Non-empty, non-comment lines of ``path`` with their line numbers."""
    path = Path(path)
    if not path.is_file():
        raise StageError(f"forget list {path} does not exist (make unlearn FORGET=<file>)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise StageError(f"forget list {path} is not UTF-8 text ({err.reason})") from None
    entries = []
    for number, raw in enumerate(text.splitlines(), start=1):
        value = raw.split("#", 1)[0].strip()
        if value:
            entries.append(ForgetEntry(number, value))
    if not entries:
        raise StageError(f"forget list {path} names no IDs (one subject or study ID per line)")
    return entries


def load_id_table(processed_root: str | Path, modalities: tuple[str, ...] = MODALITIES) -> pd.DataFrame:
    """``modality, sample_id, subject_id, study_id`` of every sample, tombstoned ones included."""
    root = Path(processed_root)
    frames = []
    for modality in modalities:
        if not (root / modality / "manifest.csv").is_file():
            continue
        frame = load_manifest(root / modality, include_tombstoned=True)
        frame = frame[["sample_id", "subject_id", "study_id"]].astype(str)
        frames.append(frame.assign(modality=modality))
    if not frames:
        raise StageError(f"no processed manifests under {root}: run `make preprocess` first")
    return pd.concat(frames, ignore_index=True)


def list_hash(subject_ids: set[str], study_ids: set[str]) -> str:
    """SHA-256 over the sorted pseudonymous IDs matched (``subject:<id>`` / ``study:<id>`` lines)."""
    lines = sorted(f"subject:{s}" for s in subject_ids) + sorted(f"study:{s}" for s in study_ids)
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


def resolve_entries(
    entries: list[ForgetEntry],
    table: pd.DataFrame,
    salt: str | None,
    tombstoned: dict[str, set[str]] | None = None,
    source: str = "forget list",
) -> Resolution:
    """Match every entry to subjects/studies of ``table`` (see module docstring); refuse unknown ones.

    ``salt`` is ``None`` when no salt is available: then only pseudonymous IDs can match.
    """
    subjects_known = set(table["subject_id"])
    studies_known = set(table["study_id"])
    subjects, studies = set(), set()
    unknown_lines: list[int] = []
    n_original = 0
    for entry in entries:
        value = entry.text
        if value in subjects_known:
            subjects.add(value)
            continue
        if value in studies_known:
            studies.add(value)
            continue
        if salt is not None:
            if STUDY_SEPARATOR in value:
                raw_subject, raw_study = value.split(STUDY_SEPARATOR, 1)
                hashed = ids.study_id(raw_subject, raw_study, salt)
                if hashed in studies_known:
                    studies.add(hashed)
                    n_original += 1
                    continue
            hashed = ids.subject_id(value, salt)
            if hashed in subjects_known:
                subjects.add(hashed)
                n_original += 1
                continue
        unknown_lines.append(entry.line)
    if unknown_lines:
        shown = ", ".join(str(n) for n in unknown_lines[:20]) + (" ..." if len(unknown_lines) > 20 else "")
        hint = (
            "original IDs (MRN or MRN/ACCESSION) were hashed with the available salt and did not match either"
            if salt is not None
            else "original IDs (MRN) need the preprocessing salt: export PIPELINE_SALT, or list the "
            "pseudonymous subject_id/study_id from the manifests"
        )
        raise StageError(
            f"{source}: {len(unknown_lines)} of {len(entries)} IDs match no subject or study in the "
            f"processed manifests (line(s) {shown}); nothing was removed. {hint}"
        )
    hit = table[table["subject_id"].isin(subjects) | table["study_id"].isin(studies)]
    samples = {m: set(g["sample_id"]) for m, g in hit.groupby("modality")}
    tombstoned = tombstoned or {}
    already = {m: s & tombstoned.get(m, set()) for m, s in samples.items()}
    return Resolution(
        subject_ids=subjects,
        study_ids=studies,
        affected_study_ids=set(hit["study_id"]),
        sample_ids=samples,
        already_withdrawn=already,
        n_lines=len(entries),
        n_original=n_original,
        list_sha256=list_hash(subjects, studies),
    )


def available_salt(configured: str | None, accept_demo_salt: bool = False) -> str | None:
    """The salt originals are hashed with, or ``None`` when none was given.

    :func:`pipelines.data.ids.salt_from_env` falls back to the public demo salt; for real data that
    fallback would "match" originals against a salt preprocessing never used, so it is accepted only
    when asked for (``accept_demo_salt``, synthetic demo cohort).
    """
    salt = ids.salt_from_env(configured)
    if salt == ids.DEFAULT_SALT and not accept_demo_salt:
        return None
    return salt
