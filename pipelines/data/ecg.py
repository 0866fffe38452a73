"""ECG reader: one WFDB record (``.hea`` + ``.dat``/``.mat``) or 12-lead ECG DICOM in, fixed-length
de-identified 12-lead crops out.

Steps (pure functions in ``pipelines.data.signal``): channels in physical units -> millivolts ->
canonical lead order I, II, III, aVR, aVL, aVF, V1-V6 (other channels dropped) -> missing limb leads
derived (Einthoven/Goldberger) -> NaN/inf gaps interpolated (long ones mask the lead in the crops they
touch) -> polyphase resampling to ``fs_hz`` -> zero-phase band-pass (+ optional notch) -> crops of
``duration_s`` (a longer record gives several, a shorter one is zero-padded at the end) -> flat leads
masked -> per-lead z-score on the crop.

Records with fewer leads (2-lead Holter such as MIT-BIH, ICU monitors) are still read: the leads they
have are placed, the others are zeros with ``0`` in ``lead_mask``. Models must use the mask.

Header comments: CinC/PhysioNet (``# Age:``, ``# Sex:``, ``# Dx:``), the demo cohort (``Patient:``,
``MRN:``, ``DOB:``, ``Accession:``, ``Age:``, ``Sex:``, ``Dx:``), PTB free text (``key: value``),
MIT-BIH (``# 69 M ...``). Comments are read by allow-list and fail closed: only age, sex, diagnosis
codes and the configured report keys reach ``meta``; MRN and accession become ``raw_subject`` /
``raw_study`` (hashed by the stage); every other line, a key with one byte changed included, is
dropped and only counted. Report values pass through the report scrubber. The same holds for the
DICOM waveform: only PatientAge/PatientSex and the annotation text (scrubbed) are read.

Memory is bounded before decoding: the WFDB header's ``sig_len`` x signals x bytes per sample is
checked against the signal files' sizes (a header that lies is rejected with its numbers), and only
``max_read_s`` seconds are decoded (``wfdb.rdrecord(sampto=...)``); an ECG DICOM's declared samples
x channels are checked before its waveform is unpacked.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from pipelines.data.manifest import Decoded
from pipelines.data.reports import scrub_identifiers
from pipelines.data.signal import (
    CANONICAL_LEADS,
    LIMB_LEADS,
    WindowPolicy,
    bandpass,
    crop_starts,
    derive_limb_leads,
    fit_length,
    flat_leads,
    notch,
    place_leads,
    repair_gaps,
    resample,
    zscore_leads,
)
from pipelines.errors import RejectedInput

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

# Ages above 89 are identifying under HIPAA Safe Harbor (45 CFR 164.514(b)(2)(i)(C)): reported as 90.
MAX_REPORTED_AGE = 90
_UNIT_TO_MV = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "microvolt": 1e-3, "millivolt": 1.0, "v": 1e3}
# Allow-listed comment keys (normalised by ``_field_key``); every other key is dropped.
_AGE_KEYS = frozenset({"age"})
_SEX_KEYS = frozenset({"sex", "gender"})
_DX_KEYS = frozenset({"dx", "diagnoses", "diagnosis codes"})
_SUBJECT_KEYS = frozenset({"mrn"})
_STUDY_KEYS = frozenset({"accession", "accession number"})
# Bytes per sample of the WFDB storage formats (PhysioNet "signal" format specification); 212/310/311
# pack 2 or 3 samples into 3 or 4 bytes.
_WFDB_FORMAT_BYTES = {
    "8": 1.0, "16": 2.0, "24": 3.0, "32": 4.0, "61": 2.0, "80": 1.0, "160": 2.0,
    "212": 1.5, "310": 4 / 3, "311": 4 / 3,
}  # fmt: skip
_DATE_VALUE = re.compile(r"\d{1,4}[-/.]\d{1,2}[-/.]\d{2,4}|\d{1,2}[- ][A-Za-z]{3}[- ]\d{2,4}")
_EMPTY_VALUES = {"", "n/a", "na", "nan", "unknown", "none", "(none)", "-"}
_KEY_VALUE = re.compile(r"^\s*([A-Za-z][^:<>]{0,60}?)\s*:\s*(.*?)\s*$")
_TAGGED = re.compile(r"<([^>]+)>\s*:\s*([^<]*)")
_MITBIH = re.compile(r"^\s*(\d{1,3})\s+([MFmf])\b")


@dataclasses.dataclass
class EcgConfig:
    """How ECG records are decoded, filtered, cropped and stored."""

    fs_hz: int = dataclasses.field(
        default=500, metadata={"help": "output sampling rate (polyphase resampling)"}
    )
    duration_s: float = dataclasses.field(default=10.0, metadata={"help": "crop length in seconds"})
    low_hz: float | None = dataclasses.field(
        default=0.5, metadata={"help": "band-pass low cut (baseline wander)"}
    )
    high_hz: float | None = dataclasses.field(
        default=40.0, metadata={"help": "band-pass high cut (EMG, mains)"}
    )
    filter_order: int = dataclasses.field(
        default=2, metadata={"help": "Butterworth order (doubled by filtfilt)"}
    )
    notch_hz: float | None = dataclasses.field(
        default=None, metadata={"help": "mains notch, 50 or 60 Hz; none"}
    )
    notch_quality: float = dataclasses.field(
        default=30.0, metadata={"help": "notch quality factor f0/bandwidth"}
    )
    max_gap_s: float = dataclasses.field(
        default=0.1, metadata={"help": "NaN gaps up to this are interpolated; longer ones mask the lead"}
    )
    window_policy: WindowPolicy = dataclasses.field(
        default="windows", metadata={"help": "long records: windows (all), first or centre crop"}
    )
    max_crops: int = dataclasses.field(default=0, metadata={"help": "cap on crops per record, 0 = no cap"})
    min_duration_s: float = dataclasses.field(default=2.0, metadata={"help": "shorter records are rejected"})
    min_fs_hz: float = dataclasses.field(default=100.0, metadata={"help": "lower source rates are rejected"})
    flat_std_mv: float = dataclasses.field(
        default=0.005, metadata={"help": "a filtered lead with std below this (mV) is flat and masked"}
    )
    dtype: Literal["float16", "float32"] = dataclasses.field(
        default="float16", metadata={"help": "stored dtype"}
    )
    report_keys: list[str] = dataclasses.field(
        default_factory=lambda: [
            "Reason for admission",
            "Diagnose",
            "Diagnosis",
            "Additional diagnoses",
            "Acute infarction (localization)",
            "Former infarction (localization)",
            "Interpretation",
        ],
        metadata={
            "help": "header comment keys (case-insensitive) whose scrubbed text forms the report; "
            "any key not listed here or among age/sex/dx/MRN/accession is dropped"
        },
    )
    extra_dx_codes: list[str] = dataclasses.field(
        default_factory=list,
        metadata={"help": "diagnosis abbreviations accepted in Dx besides SNOMED CT ids and the label maps'"},
    )
    max_read_s: float = dataclasses.field(
        default=600.0, metadata={"help": "longer records are decoded only up to this (bounded memory)"}
    )
    max_header_bytes: int = dataclasses.field(
        default=1 << 20,
        metadata={"help": "larger .hea files are rejected unparsed (real headers are a few KB)"},
    )
    max_samples: int = dataclasses.field(
        default=20_000_000,
        metadata={
            "help": "cap on decoded samples x channels (160 MB as float64): WFDB records are read only "
            "up to it, an ECG DICOM declaring more is rejected from its header"
        },
    )

    def __post_init__(self) -> None:
        if self.max_read_s < self.min_duration_s:
            raise ValueError(f"max_read_s={self.max_read_s} must be >= min_duration_s={self.min_duration_s}")
        if self.max_samples <= 0:
            raise ValueError(f"max_samples must be positive, got {self.max_samples}")


def ecg_normalisation(cfg: EcgConfig) -> dict[str, Any]:
    """What the stored arrays mean, written by the stage to ``normalisation.json`` for training/evaluation."""
    n_samples = round(cfg.duration_s * cfg.fs_hz)
    return {
        "modality": "ecg",
        "fs_hz": cfg.fs_hz,
        "duration_s": cfg.duration_s,
        "n_samples": n_samples,
        "shape": [len(CANONICAL_LEADS), n_samples],
        "leads": list(CANONICAL_LEADS),
        "dtype": cfg.dtype,
        "units_before_normalisation": "mV",
        "bandpass_hz": [cfg.low_hz, cfg.high_hz],
        "filter": f"Butterworth order {cfg.filter_order}, zero-phase (sosfiltfilt)",
        "notch_hz": cfg.notch_hz,
        "resampling": "scipy.signal.resample_poly",
        "per_lead": "z-score on each crop: (x - mean) / std; mean/std in mV in meta lead_mean_mv/lead_std_mv",
        "masked_leads": "zeros, lead_mask '0' (absent, flat, or a NaN gap longer than max_gap_s)",
        "padding": "crops shorter than duration_s are zero-padded at the end; n_samples = real samples",
        "long_records": cfg.window_policy,
    }


def read_ecg(path: Path, cfg: EcgConfig) -> list[Decoded]:
    """Decode one ECG record (``.hea`` path of a WFDB record, or a ``.dcm``) into fixed-length crops.

    Raises ``RejectedInput`` with a readable reason for anything that cannot be used.
    """
    path = Path(path)
    if not path.is_file():
        raise RejectedInput("file not found")
    if path.stat().st_size == 0:
        raise RejectedInput("empty file (0 bytes)")
    suffix = path.suffix.lower()
    if suffix == ".hea":
        size = path.stat().st_size
        if size > cfg.max_header_bytes:
            raise RejectedInput(
                f"WFDB header of {size} bytes > max_header_bytes={cfg.max_header_bytes}: not parsed"
            )
        source = _read_wfdb(path, cfg)
    elif suffix in (".dcm", ".dicom"):
        source = _read_dicom_waveform(path, cfg)
    else:
        raise RejectedInput(f"not an ECG record ({suffix or 'no extension'}; expected .hea or .dcm)")
    return _to_crops(source, cfg)


@dataclasses.dataclass
class _Source:
    signals_mv: np.ndarray  # (n_samples, n_channels)
    labels: list[str]
    fs_hz: float
    meta: dict[str, object]
    raw_subject: str | None
    raw_study: str | None


# ---------------------------------------------------------------------------------------------- WFDB


def _unit_scale(unit: str | None) -> float | None:
    """Millivolts per unit; ``None`` for a non-voltage unit. WFDB's default unit is mV."""
    key = (unit or "mV").strip().lower()
    return _UNIT_TO_MV.get(key)


@dataclasses.dataclass
class _WfdbLayout:
    """What a WFDB header declares, parsed from its text without decoding (PhysioNet header format)."""

    n_sig: int
    fs_hz: float | None
    sig_len: int | None
    multi_segment: bool
    # signal file name -> (bytes per sample summed over its signals, byte offset of the first sample)
    files: dict[str, tuple[float, int]]


def _wfdb_layout(header: Path) -> _WfdbLayout:
    """Record line ``name[/nseg] n_sig [fs[/cfreq][(base)] [sig_len ...]]`` and the signal lines
    ``file fmt[xspf][:skew][+offset] ...``; raises ``RejectedInput`` when they cannot be parsed."""
    try:
        lines = [
            line.split()
            for line in header.read_text(encoding="latin-1").splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        ]
        record = lines[0]
        n_sig = int(record[1])
        fs_match = re.match(r"[0-9.eE+-]+", record[2]) if len(record) > 2 else None
        fs_hz = float(fs_match.group()) if fs_match else None
        sig_len = int(record[3]) if len(record) > 3 else None
    except (OSError, ValueError, IndexError) as exc:
        raise RejectedInput(f"unreadable WFDB header ({type(exc).__name__}: record line)") from None
    if n_sig < 0 or (sig_len is not None and sig_len < 0):
        raise RejectedInput(f"unreadable WFDB header (negative count: {n_sig} signals, {sig_len} samples)")
    files: dict[str, tuple[float, int]] = {}
    multi_segment = "/" in record[0]
    if not multi_segment:
        for fields in lines[1 : 1 + n_sig]:
            spec = re.match(r"(\d+)(?:x\d+)?(?::\d+)?(?:\+(\d+))?", fields[1] if len(fields) > 1 else "")
            if spec is None or spec.group(1) not in _WFDB_FORMAT_BYTES:
                continue  # wfdb itself reports an unknown format when it reads the record
            per_sample, offset = files.get(fields[0], (0.0, 0))
            files[fields[0]] = (per_sample + _WFDB_FORMAT_BYTES[spec.group(1)], int(spec.group(2) or offset))
    return _WfdbLayout(n_sig, fs_hz, sig_len, multi_segment, files)


def _check_wfdb_size(header: Path, layout: _WfdbLayout) -> None:
    """Reject, from the header alone, a record whose signal files cannot hold the samples it declares."""
    if not layout.sig_len:
        return
    for name, (per_sample, offset) in layout.files.items():
        signal_file = header.parent / name
        if "/" in name or not signal_file.is_file():
            continue  # wfdb names the missing file when it reads the record
        needed = offset + math.ceil(layout.sig_len * per_sample)
        present = signal_file.stat().st_size
        if present < needed:
            raise RejectedInput(
                f"header declares {layout.sig_len} samples x {layout.n_sig} signals "
                f"({needed} bytes in its signal file), the file has {present} bytes: "
                "header/data length mismatch, not decoded"
            )


def _samples_in_files(header: Path, layout: _WfdbLayout) -> int | None:
    """Samples per signal that the signal files can hold (the shortest file decides)."""
    counts = [
        math.floor(((header.parent / name).stat().st_size - offset) / per_sample)
        for name, (per_sample, offset) in layout.files.items()
        if "/" not in name and (header.parent / name).is_file() and per_sample > 0
    ]
    return max(min(counts), 0) if counts else None


def _read_wfdb(path: Path, cfg: EcgConfig) -> _Source:
    import wfdb

    layout = _wfdb_layout(path)
    _check_wfdb_size(path, layout)
    record_name = str(path.with_suffix(""))
    # Decode at most max_read_s seconds and max_samples values: a Holter day or a header that
    # claims billions of samples costs no more memory than a ten-minute record.
    sampto = None
    if layout.n_sig:
        bound = cfg.max_samples // layout.n_sig
        if layout.fs_hz and layout.fs_hz > 0:
            bound = min(bound, math.ceil(cfg.max_read_s * layout.fs_hz))
        if layout.sig_len is None:
            # Without a declared length wfdb reads the whole signal file (and cannot stop early).
            in_files = _samples_in_files(path, layout)
            if in_files is not None and in_files > bound:
                raise RejectedInput(
                    f"header declares no length and its signal file holds {in_files} samples x "
                    f"{layout.n_sig} signals, more than the {bound} that max_read_s/max_samples allow: "
                    "not decoded"
                )
        elif layout.sig_len > bound:
            sampto = max(bound, 1)
    try:
        record = wfdb.rdrecord(record_name, physical=True, sampto=sampto)
    except FileNotFoundError as exc:
        raise RejectedInput(
            f"missing signal file {Path(exc.filename or '?').name} named by the header"
        ) from None
    except Exception as exc:  # wfdb raises bare ValueError/IndexError/HeaderSyntaxError/... for bad input
        # Parse the header alone only on this failure path (a second parse costs as much as the read).
        # Only exception types are quoted: wfdb's messages can repeat header text (names, free text).
        try:
            wfdb.rdheader(record_name)
        except Exception as header_exc:
            raise RejectedInput(f"unreadable WFDB header ({type(header_exc).__name__})") from None
        raise RejectedInput(
            f"signal data does not match the header: truncated file or header/data length mismatch "
            f"({type(exc).__name__})"
        ) from None
    if not record.sig_len:
        raise RejectedInput("header declares no samples (signal length 0 or missing)")
    signals = record.p_signal
    if signals is None or signals.shape[0] != record.sig_len:
        got = 0 if signals is None else signals.shape[0]
        raise RejectedInput(f"header says {record.sig_len} samples, data has {got} (header/data mismatch)")
    scales = [_unit_scale(unit) for unit in record.units or [None] * len(record.sig_name)]
    kept = [channel for channel, scale in enumerate(scales) if scale is not None]
    if not kept:
        raise RejectedInput(f"no channel in a voltage unit ({len(scales)} channels)")
    labels = [record.sig_name[channel] for channel in kept]
    if len(kept) < signals.shape[1] or any(scales[channel] != 1.0 for channel in kept):
        signals = signals[:, kept] * np.array([scales[channel] for channel in kept])
    info = parse_comments(record.comments or [], cfg.report_keys, cfg.extra_dx_codes)
    meta = {"format": "wfdb", **{k: info[k] for k in ("age", "sex", "dx", "report", "comments_dropped")}}
    if sampto is not None:
        meta["source_declared_s"] = round(layout.sig_len / float(record.fs), 3)
    return _Source(signals, labels, float(record.fs), meta, info["mrn"], info["accession"])


def _clean(value: str) -> str | None:
    value = value.strip()
    return None if value.lower() in _EMPTY_VALUES else value


def _age(value: str | None) -> int | None:
    match = re.search(r"\d+(\.\d+)?", value or "")
    if not match:
        return None
    return min(int(float(match.group())), MAX_REPORTED_AGE)


def _sex(value: str | None) -> str | None:
    value = (value or "").strip().lower()
    if value.startswith(("m", "male")):
        return "M"
    if value.startswith(("f", "w", "female")):
        return "F"
    return None


def _field_key(key: str) -> str | None:
    """Lower-case key with runs of spaces collapsed; ``None`` unless it is printable ASCII.

    Allow-listed keys are compared exactly after this, so a damaged key (``Pat1ent``, ``M RN``), a
    look-alike letter from another script (Cyrillic ``А``) or an unknown key never matches.
    """
    key = " ".join(key.split()).lower()
    return key if key.isascii() and key.isprintable() else None


@functools.cache
def _known_dx_abbreviations() -> frozenset[str]:
    """ECG label names (CinC 2021 abbreviations) and PTB-XL SCP codes from the packaged label maps."""
    from importlib import resources

    import yaml

    # libyaml's loader when PyYAML was built with it (the same values, ~5x faster), else the pure one.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    maps = resources.files("pipelines.resources") / "label_maps"
    snomed = yaml.load((maps / "ecg_snomed.yaml").read_text(encoding="utf-8"), Loader=loader)  # noqa: S506
    scp = yaml.load((maps / "ptbxl_scp.yaml").read_text(encoding="utf-8"), Loader=loader)  # noqa: S506
    return frozenset(code.lower() for code in [*snomed["labels"], *scp["scp_to_snomed"]])


def prepare_reader(cfg: EcgConfig | None = None) -> None:
    """Load the label maps behind ``parse_comments`` in this process: preprocessing calls this before it
    forks its workers, so they inherit the cache instead of each parsing the YAML again."""
    _known_dx_abbreviations()


# Verhoeff's dihedral-group check digit (Verhoeff 1969), which every SNOMED CT identifier ends with.
_VERHOEFF_D = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 2, 3, 4, 0, 6, 7, 8, 9, 5], [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
    [3, 4, 0, 1, 2, 8, 9, 5, 6, 7], [4, 0, 1, 2, 3, 9, 5, 6, 7, 8], [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
    [6, 5, 9, 8, 7, 1, 0, 4, 3, 2], [7, 6, 5, 9, 8, 2, 1, 0, 4, 3], [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
    [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
]  # fmt: skip
_VERHOEFF_P = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 5, 7, 6, 2, 8, 3, 0, 9, 4], [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
    [8, 9, 1, 6, 0, 4, 3, 5, 2, 7], [9, 4, 5, 3, 1, 2, 6, 8, 7, 0], [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
    [2, 7, 9, 3, 8, 0, 6, 4, 1, 5], [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
]  # fmt: skip


def is_snomed_concept_id(code: str) -> bool:
    """A SNOMED CT concept identifier: 6-18 digits, partition ``00`` (core) or ``10`` (extension)
    before the final Verhoeff check digit. A record number in a ``Dx`` field almost never passes."""
    if not (code.isascii() and code.isdigit() and 6 <= len(code) <= 18 and code[0] != "0"):
        return False
    if code[-3:-1] not in ("00", "10"):
        return False
    check = 0
    for position, digit in enumerate(reversed(code)):
        check = _VERHOEFF_D[check][_VERHOEFF_P[position % 8][int(digit)]]
    return check == 0


def _dx_code(code: str, extra: frozenset[str]) -> bool:
    return is_snomed_concept_id(code) or code.lower() in _known_dx_abbreviations() or code.lower() in extra


def parse_comments(
    comments: list[str], report_keys: Sequence[str] | None = None, extra_dx_codes: Sequence[str] = ()
) -> dict[str, Any]:
    """Header comments -> ``age, sex, dx, report, comments_dropped`` (safe for meta) and ``mrn,
    accession`` (raw IDs, hashed by the stage).

    Fails closed: a field is read only when its key is on the allow-list (age, sex/gender, dx,
    MRN, accession, and ``report_keys``; default ``EcgConfig().report_keys``), compared after
    lower-casing and collapsing spaces, ASCII only. Age is reduced to a number (capped at 90), sex to
    M/F, ``dx`` to SNOMED CT concept ids and known ECG abbreviations joined with ``;``; report values
    with a date are dropped, the rest pass through ``scrub_identifiers``. Every other field, and unkeyed
    free text, is dropped and counted in ``comments_dropped``.
    """
    if report_keys is None:
        report_keys = EcgConfig().report_keys
    allowed_report = {key for key in map(_field_key, report_keys) if key}
    extra_dx = frozenset(code.lower() for code in extra_dx_codes)
    fields: list[tuple[str, str]] = []
    info: dict[str, Any] = {
        "age": None, "sex": None, "dx": "", "report": "", "mrn": None, "accession": None, "comments_dropped": 0,
    }  # fmt: skip
    for line in comments:
        tagged = _TAGGED.findall(line)
        if tagged:
            fields.extend((k.strip(), v.strip()) for k, v in tagged)
            continue
        match = _KEY_VALUE.match(line)
        if match:
            fields.append((match.group(1), match.group(2)))
            continue
        positional = _MITBIH.match(line)
        if positional:
            fields.extend([("age", positional.group(1)), ("sex", positional.group(2))])
        elif line.strip():
            info["comments_dropped"] += 1
    report: list[str] = []
    dx: list[str] = []
    for key, raw in fields:
        name, value = _field_key(key), _clean(raw)
        if name in _AGE_KEYS:
            info["age"] = _age(value)
        elif name in _SEX_KEYS:
            info["sex"] = _sex(value)
        elif name in _DX_KEYS:
            codes = [code for code in re.split(r"[,;\s]+", value or "") if _clean(code)]
            kept = [code for code in codes if _dx_code(code, extra_dx)]
            dx.extend(kept)
            info["comments_dropped"] += len(codes) - len(kept)
        elif name in _SUBJECT_KEYS:
            info["mrn"] = value
        elif name in _STUDY_KEYS:
            info["accession"] = value
        elif name in allowed_report and value and not _DATE_VALUE.search(value):
            report.append(f"{' '.join(key.split())}: {scrub_identifiers(value)}")
        elif name in allowed_report and not value:
            continue  # an empty report field ("Diagnose:") is nothing, not a dropped identifier
        else:
            info["comments_dropped"] += 1
    info["dx"] = ";".join(dx)
    info["report"] = "; ".join(report)
    return info


# --------------------------------------------------------------------------------------------- DICOM


def _text(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    text = str(value).strip() if value is not None else ""
    return text or None


def _waveform_group(ds: Dataset) -> int:
    """The rhythm multiplex group (not median beats); else the longest."""
    groups = list(ds.WaveformSequence)
    for index, group in enumerate(groups):
        if str(group.get("MultiplexGroupLabel", "")).strip().upper() == "RHYTHM":
            return index
    return int(np.argmax([int(g.get("NumberOfWaveformSamples", 0) or 0) for g in groups]))


def _channel_label(channel: Dataset) -> str:
    for item in channel.get("ChannelSourceSequence", []):
        if item.get("CodeMeaning"):
            return str(item.CodeMeaning)
    return str(channel.get("ChannelLabel", ""))


def _channel_unit(channel: Dataset) -> str | None:
    for item in channel.get("ChannelSensitivityUnitsSequence", []):
        return str(item.get("CodeValue", "")) or None
    return None


def _read_dicom_waveform(path: Path, cfg: EcgConfig) -> _Source:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        # Large values (the waveform data) stay on disk until the declared size has been checked.
        ds = pydicom.dcmread(path, defer_size="256 KB")
    except InvalidDicomError:
        raise RejectedInput("not a DICOM file (no DICM header)") from None
    except (EOFError, OSError, ValueError, KeyError, TypeError, struct.error) as exc:
        raise RejectedInput(f"truncated or corrupt DICOM ({type(exc).__name__}: {exc})") from None
    if "WaveformSequence" not in ds or not ds.WaveformSequence:
        raise RejectedInput("no waveform data (not an ECG DICOM)")
    try:
        index = _waveform_group(ds)
        group = ds.WaveformSequence[index]
        declared = int(group.NumberOfWaveformSamples) * int(group.NumberOfWaveformChannels)
        if declared > cfg.max_samples:
            raise RejectedInput(
                f"waveform declares {int(group.NumberOfWaveformSamples)} samples x "
                f"{int(group.NumberOfWaveformChannels)} channels = {declared} > max_samples={cfg.max_samples}: "
                "not decoded"
            )
        # waveform_array applies each channel's sensitivity, correction factor and baseline.
        signals = np.asarray(ds.waveform_array(index), dtype=np.float64)
        fs_hz = float(group.SamplingFrequency)
        channels = list(group.ChannelDefinitionSequence)
    except (AttributeError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise RejectedInput(f"corrupt waveform data ({type(exc).__name__}: {exc})") from None
    if signals.ndim != 2 or signals.shape[1] != len(channels):
        raise RejectedInput(f"waveform has shape {signals.shape} for {len(channels)} channel definitions")
    labels, columns = [], []
    for position, channel in enumerate(channels):
        scale = _unit_scale(_channel_unit(channel))
        if scale is not None:
            labels.append(_channel_label(channel))
            columns.append(signals[:, position] * scale)
    if not columns:
        raise RejectedInput("no waveform channel in a voltage unit")
    # The annotations are the cart's measurement and interpretation statements: the only free text
    # read from an ECG DICOM, scrubbed like any report. No other text attribute is read.
    annotations = [
        str(item.UnformattedTextValue).strip()
        for item in ds.get("WaveformAnnotationSequence", [])
        if str(item.get("UnformattedTextValue", "") or "").strip()
    ]
    kept = [scrub_identifiers(a) for a in annotations if not _DATE_VALUE.search(a)]
    meta = {
        "format": "dicom",
        "age": _dicom_age(_text(ds, "PatientAge")),
        "sex": _sex(_text(ds, "PatientSex")),
        "dx": "",
        "report": "; ".join(kept),
        "comments_dropped": len(annotations) - len(kept),
    }
    raw_study = _text(ds, "AccessionNumber") or _text(ds, "StudyInstanceUID")
    return _Source(np.stack(columns, axis=1), labels, fs_hz, meta, _text(ds, "PatientID"), raw_study)


def _dicom_age(value: str | None) -> int | None:
    """PatientAge ``nnnY`` (or D/W/M, under a year -> 0), capped at ``MAX_REPORTED_AGE``."""
    match = re.fullmatch(r"(\d{1,3})([DWMY])", (value or "").strip().upper())
    if not match:
        return None
    years = int(match.group(1)) if match.group(2) == "Y" else 0
    return min(years, MAX_REPORTED_AGE)


# ------------------------------------------------------------------------------------------- crops


def _to_crops(source: _Source, cfg: EcgConfig) -> list[Decoded]:
    fs_in = source.fs_hz
    if not np.isfinite(fs_in) or fs_in < cfg.min_fs_hz:
        raise RejectedInput(f"sampling rate {fs_in:g} Hz is below min_fs_hz={cfg.min_fs_hz:g} Hz")
    duration_s = source.signals_mv.shape[0] / fs_in
    if duration_s < cfg.min_duration_s:
        raise RejectedInput(
            f"record too short ({duration_s:.2f} s < min_duration_s={cfg.min_duration_s:g} s)"
        )
    leads, recorded = place_leads(source.signals_mv, source.labels)
    if not recorded.any():
        raise RejectedInput(f"no standard 12-lead ECG lead among the {len(source.labels)} channels")
    # Derive before repairing gaps: NaN propagates through the sums, so a gap in I or II is a gap in
    # every lead derived from it and is repaired or masked the same way.
    if recorded[: len(LIMB_LEADS)].all():
        present = recorded  # nothing to derive: no copy of the record
    else:
        leads, present = derive_limb_leads(leads, recorded)
    leads, present, long_gaps = repair_gaps(leads, present, fs_in, cfg.max_gap_s)
    if not present.any():
        raise RejectedInput("every ECG lead is empty (no finite sample)")
    # Only present leads are resampled and filtered (absent ones stay zero): a 2-lead Holter costs 2/12.
    columns = np.flatnonzero(present)
    every_lead = columns.size == len(CANONICAL_LEADS)
    filtered = resample(leads if every_lead else leads[:, columns], fs_in, cfg.fs_hz)
    filtered = bandpass(filtered, cfg.fs_hz, cfg.low_hz, cfg.high_hz, cfg.filter_order)
    if cfg.notch_hz:
        filtered = notch(filtered, cfg.fs_hz, cfg.notch_hz, cfg.notch_quality)
    if every_lead:
        leads = np.asfortranarray(filtered)
    else:
        leads = np.zeros((filtered.shape[0], len(CANONICAL_LEADS)), order="F")
        leads[:, columns] = filtered

    window_n = round(cfg.duration_s * cfg.fs_hz)
    derived = [CANONICAL_LEADS[i] for i in np.flatnonzero(present & ~recorded)]
    base_meta = {
        **source.meta,
        "fs_hz": cfg.fs_hz,
        "source_fs_hz": fs_in,
        "source_duration_s": round(duration_s, 3),
        "derived_leads": ";".join(derived),
    }
    decoded = []
    for crop_index, start in enumerate(
        crop_starts(leads.shape[0], window_n, cfg.window_policy, cfg.max_crops)
    ):
        crop = leads[start : start + window_n]
        lead_std = crop.std(axis=0)  # once, for the flat-lead test and the z-score
        mask = present & ~flat_leads(crop, cfg.flat_std_mv, lead_std)
        start_s, end_s = start / cfg.fs_hz, (start + crop.shape[0]) / cfg.fs_hz
        for lead, gap_start_s, gap_end_s in long_gaps:
            if gap_start_s < end_s and gap_end_s > start_s:
                mask[lead] = False
        normalised, mean, std = zscore_leads(crop, mask, std_mv=lead_std)
        array = fit_length(normalised, window_n).T.astype(cfg.dtype)
        meta = {
            **base_meta,
            "n_samples": crop.shape[0],
            "crop_start_s": round(start_s, 3),
            "lead_mask": "".join("1" if m else "0" for m in mask),
            "lead_mean_mv": json.dumps([None if np.isnan(v) else round(float(v), 5) for v in mean]),
            "lead_std_mv": json.dumps([None if np.isnan(v) else round(float(v), 5) for v in std]),
        }
        decoded.append(
            Decoded(
                array=array,
                raw_subject=source.raw_subject,
                raw_study=source.raw_study,
                meta=meta,
                crop_index=crop_index,
            )
        )
    return decoded
