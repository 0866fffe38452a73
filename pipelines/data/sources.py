"""Generic folder sources: which files under a root belong to a modality, and whose they are.

A source turns a folder into ``SourceItem``s: the file a reader opens, the files whose bytes define
the input (a WFDB record is its ``.hea`` plus its ``.dat``/``.mat``), and fallback raw subject/study
IDs for readers that find none in the file's headers. The fallback follows the layout that PACS/ECG
exports and the demo cohort share: ``<subject>/<study>[_<view>].<ext>``; a file directly in the root
is its own subject. Named adapters for public datasets (later) subclass nothing: they are just other
functions returning ``SourceItem``s.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import os
import re
from pathlib import Path, PurePosixPath

from pipelines.data.ids import file_sha256
from pipelines.data.reports import scrub_identifiers

XRAY_SUFFIXES = (".dcm", ".dicom", ".png", ".jpg", ".jpeg")
WFDB_HEADER = ".hea"
WFDB_SIGNAL_SUFFIXES = (".dat", ".mat")
ECG_DICOM_SUFFIXES = (".dcm", ".dicom")
SPEECH_SUFFIXES = (".wav", ".flac", ".ogg", ".oga")
TRANSCRIPTS = "transcripts.csv"
_WFDB_HEADER_READ_BYTES = 1 << 20
# Side-table columns holding free text; every other column is a label, code, ID or split.
FREE_TEXT_COLUMNS = ("report", "transcript")
# Trailing view codes in file names such as "<accession>_PA.dcm" (DICOM ViewPosition values).
_VIEW_SUFFIX = re.compile(r"[_-](PA|AP|LL|RL|LAT|LATERAL|LLD|RLD|AP_SUPINE)$", re.IGNORECASE)


@dataclasses.dataclass
class SourceItem:
    """One input of a modality.

    ``rel`` is the path relative to the dataset root (POSIX). ``raw_subject``/``raw_study`` are the
    fallback raw IDs (hashed by the stage, never written). ``extra`` adds manifest columns from a side
    table (e.g. transcripts). ``reject`` is a reason known without decoding (e.g. a WFDB signal file
    without its header), so that the file is still accounted for.
    """

    path: Path
    rel: str
    members: tuple[Path, ...]
    raw_subject: str
    raw_study: str
    extra: dict[str, str] = dataclasses.field(default_factory=dict)
    reject: str | None = None

    def __post_init__(self) -> None:
        # Free text from a side table (reports, transcripts) can name people or carry record numbers:
        # it reaches the manifest only through the report scrubber, whichever adapter supplied it.
        scrubbed = {k: scrub_identifiers(v) for k, v in self.extra.items() if k in FREE_TEXT_COLUMNS and v}
        if scrubbed:
            self.extra = {**self.extra, **scrubbed}


def modality_root(root: Path, modality: str) -> Path:
    """``<root>/<modality>`` when it exists (the demo/processed layout), else ``root`` itself."""
    nested = Path(root) / modality
    return nested if nested.is_dir() else Path(root)


def derive_ids(rel_to_modality_root: PurePosixPath) -> tuple[str, str]:
    """Fallback (subject, study) from ``<subject>/.../<study>[_<view>].<ext>`` (else the stem for both)."""
    stem = rel_to_modality_root.name.split(".", 1)[0]
    study = _VIEW_SUFFIX.sub("", stem) or stem
    parts = rel_to_modality_root.parts
    subject = parts[0] if len(parts) > 1 else stem
    return subject, study


def source_sha256(members: tuple[Path, ...]) -> str:
    """sha256 of the input's bytes: the file's own hash, or for several files a hash over
    ``suffix:sha256`` lines (suffixes, not names, so that renaming a record keeps its hash)."""
    if len(members) == 1:
        return file_sha256(members[0])
    lines = sorted(f"{p.suffix.lower()}:{file_sha256(p)}" for p in members)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def pseudonymous_path(rel: str, salt: str) -> str:
    """``<top folder>/<salted hash of the path><suffix>``: file names often carry MRNs or accessions."""
    path = PurePosixPath(rel)
    digest = hashlib.sha256(f"{salt}\x1fpath\x1f{rel}".encode()).hexdigest()[:16]
    top = f"{path.parts[0]}/" if len(path.parts) > 1 else ""
    return f"{top}{digest}{path.suffix.lower()}"


def _walk(folder: Path) -> list[Path]:
    """Regular files under ``folder``, sorted, skipping hidden files and folders."""
    files = []
    # followlinks: raw datasets are often assembled from symlinked folders
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        files.extend(
            Path(dirpath) / name
            for name in filenames
            if not name.startswith(".") and (Path(dirpath) / name).is_file()
        )
    return sorted(files)


def _is_dicom_without_suffix(path: Path) -> bool:
    """DICOM Part 10 files start with a 128-byte preamble and ``DICM`` (PACS exports often have no suffix).

    Legacy files written without preamble and file meta start directly with a little-endian group
    0x0008 element (Identifying group, e.g. (0008,0005) or (0008,0016)); those are listed too and the
    reader decides whether they hold an image.
    """
    if path.suffix:
        return False
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return head[128:] == b"DICM" or (len(head) >= 8 and head[:2] == b"\x08\x00" and head[3] == 0)


def _item(path: Path, root: Path, mroot: Path, members: tuple[Path, ...] | None = None, **kw) -> SourceItem:
    subject, study = derive_ids(PurePosixPath(path.relative_to(mroot).as_posix()))
    return SourceItem(
        path=path,
        rel=path.relative_to(root).as_posix(),
        members=members or (path,),
        raw_subject=subject,
        raw_study=study,
        **kw,
    )


def list_xray(root: Path) -> list[SourceItem]:
    """DICOM (also suffix-less Part 10 files), PNG and JPEG files under the X-ray folder."""
    mroot = modality_root(root, "xray")
    return [
        _item(p, root, mroot)
        for p in _walk(mroot)
        if p.suffix.lower() in XRAY_SUFFIXES or _is_dicom_without_suffix(p)
    ]


def _wfdb_signal_files(header: Path) -> list[Path]:
    """Signal files a WFDB header names (first token of each signal line), plus same-stem .dat/.mat."""
    names: set[str] = set()
    try:
        # The record and signal lines come first; a bounded read keeps a huge or hostile header cheap
        # (the reader rejects it by its size).
        with open(header, "rb") as handle:
            text = handle.read(_WFDB_HEADER_READ_BYTES).decode("latin-1")
        lines = [
            line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
        ]
        n_signals = int(lines[0].split()[1]) if lines and len(lines[0].split()) > 1 else 0
        names.update(line.split()[0] for line in lines[1 : 1 + n_signals] if line.split())
    except (OSError, ValueError, IndexError):
        pass
    found = {header.parent / n for n in names if "/" not in n and (header.parent / n).is_file()}
    found.update(p for s in WFDB_SIGNAL_SUFFIXES if (p := header.with_suffix(s)).is_file())
    return sorted(found)


def list_ecg(root: Path) -> list[SourceItem]:
    """WFDB records (one item per ``.hea`` with its signal files), ECG DICOMs, and orphaned signal files."""
    mroot = modality_root(root, "ecg")
    files = _walk(mroot)
    items, claimed = [], set()
    for path in files:
        if path.suffix.lower() == WFDB_HEADER:
            signals = _wfdb_signal_files(path)
            claimed.update(signals)
            items.append(_item(path, root, mroot, members=(path, *signals)))
        elif path.suffix.lower() in ECG_DICOM_SUFFIXES or _is_dicom_without_suffix(path):
            items.append(_item(path, root, mroot))
    for path in files:
        if path.suffix.lower() in WFDB_SIGNAL_SUFFIXES and path not in claimed:
            items.append(_item(path, root, mroot, reject="WFDB signal file without a header (.hea)"))
    return sorted(items, key=lambda item: item.rel)


def read_transcripts(speech_root: Path) -> dict[str, dict[str, str]]:
    """``transcripts.csv`` (file relative to the speech folder, speaker, transcript, intent), keyed by file."""
    path = speech_root / TRANSCRIPTS
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as handle:
        return {row["file"]: row for row in csv.DictReader(handle) if row.get("file")}


def list_speech(root: Path) -> list[SourceItem]:
    """WAV/FLAC/OGG files under the speech folder; speaker, transcript and intent from ``transcripts.csv``."""
    mroot = modality_root(root, "speech")
    transcripts = read_transcripts(mroot)
    items = []
    for path in _walk(mroot):
        if path.suffix.lower() not in SPEECH_SUFFIXES:
            continue
        item = _item(path, root, mroot)
        row = transcripts.get(path.relative_to(mroot).as_posix())
        if row:
            item = dataclasses.replace(
                item,
                extra={k: row[k] for k in ("transcript", "intent") if row.get(k) is not None},
                raw_subject=row.get("speaker") or item.raw_subject,
            )
        items.append(item)
    return items
