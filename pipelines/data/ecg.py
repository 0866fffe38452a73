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
MIT-BIH (``# 69 M ...``). Identifying fields never reach ``meta``: MRN and accession become
``raw_subject`` / ``raw_study`` (hashed by the stage), names, birth dates and any dated line are dropped.
"""

from __future__ import annotations

import dataclasses
import json
import re
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from pipelines.data.manifest import Decoded
from pipelines.data.signal import (
    CANONICAL_LEADS,
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
# Comment keys that identify a person or a date; such lines never reach the report text.
_IDENTIFYING_KEY = re.compile(
    r"patient|name|mrn|\bid\b|dob|birth|date|accession|institution|hospital|clinic|physician|doctor|"
    r"operator|technician|address|phone|email|ssn|insurance|record",
    re.IGNORECASE,
)
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
        source = _read_wfdb(path)
    elif suffix in (".dcm", ".dicom"):
        source = _read_dicom_waveform(path)
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


def _read_wfdb(path: Path) -> _Source:
    import wfdb

    record_name = str(path.with_suffix(""))
    try:
        record = wfdb.rdrecord(record_name, physical=True)
    except FileNotFoundError as exc:
        raise RejectedInput(
            f"missing signal file {Path(exc.filename or '?').name} named by the header"
        ) from None
    except Exception as exc:  # wfdb raises bare ValueError/IndexError/HeaderSyntaxError/... for bad input
        # Parse the header alone only on this failure path (a second parse costs as much as the read).
        try:
            wfdb.rdheader(record_name)
        except Exception as header_exc:
            raise RejectedInput(
                f"unreadable WFDB header ({type(header_exc).__name__}: {header_exc})"
            ) from None
        raise RejectedInput(
            f"signal data does not match the header: truncated file or header/data length mismatch "
            f"({type(exc).__name__}: {exc})"
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
        raise RejectedInput(f"no channel in a voltage unit (units {record.units})")
    labels = [record.sig_name[channel] for channel in kept]
    if len(kept) < signals.shape[1] or any(scales[channel] != 1.0 for channel in kept):
        signals = signals[:, kept] * np.array([scales[channel] for channel in kept])
    info = parse_comments(record.comments or [])
    meta = {"format": "wfdb", **{k: info[k] for k in ("age", "sex", "dx", "report")}}
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


def parse_comments(comments: list[str]) -> dict[str, Any]:
    """Header comments -> ``age, sex, dx, report`` (safe for meta) and ``mrn, accession`` (raw IDs).

    ``dx`` joins codes with ``;``. ``report`` joins the remaining ``key: value`` lines whose key is not
    identifying and whose value holds no date; unkeyed free text (which may be anything) is left out.
    """
    fields: list[tuple[str, str]] = []
    info: dict[str, Any] = {"age": None, "sex": None, "dx": "", "report": "", "mrn": None, "accession": None}
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
    report: list[str] = []
    dx: list[str] = []
    for key, raw in fields:
        name, value = key.strip().lower(), _clean(raw)
        if name == "age":
            info["age"] = _age(value)
        elif name in ("sex", "gender"):
            info["sex"] = _sex(value)
        elif name in ("dx", "diagnoses", "diagnosis codes"):
            dx.extend(code for code in re.split(r"[,;\s]+", value or "") if _clean(code))
        elif name == "mrn":
            info["mrn"] = value
        elif name in ("accession", "accession number"):
            info["accession"] = value
        elif value and not _IDENTIFYING_KEY.search(name) and not _DATE_VALUE.search(value):
            report.append(f"{key.strip()}: {value}")
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


def _read_dicom_waveform(path: Path) -> _Source:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError:
        raise RejectedInput("not a DICOM file (no DICM header)") from None
    except (EOFError, OSError, ValueError, KeyError, TypeError, struct.error) as exc:
        raise RejectedInput(f"truncated or corrupt DICOM ({type(exc).__name__}: {exc})") from None
    if "WaveformSequence" not in ds or not ds.WaveformSequence:
        raise RejectedInput("no waveform data (not an ECG DICOM)")
    try:
        index = _waveform_group(ds)
        group = ds.WaveformSequence[index]
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
    annotations = [
        str(item.UnformattedTextValue).strip()
        for item in ds.get("WaveformAnnotationSequence", [])
        if str(item.get("UnformattedTextValue", "") or "").strip()
    ]
    meta = {
        "format": "dicom",
        "age": _dicom_age(_text(ds, "PatientAge")),
        "sex": _sex(_text(ds, "PatientSex")),
        "dx": "",
        "report": "; ".join(a for a in annotations if not _DATE_VALUE.search(a)),
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
        raise RejectedInput(f"no standard 12-lead ECG lead among channels {source.labels}")
    # Derive before repairing gaps: NaN propagates through the sums, so a gap in I or II is a gap in
    # every lead derived from it and is repaired or masked the same way.
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
        mask = present & ~flat_leads(crop, cfg.flat_std_mv)
        start_s, end_s = start / cfg.fs_hz, (start + crop.shape[0]) / cfg.fs_hz
        for lead, gap_start_s, gap_end_s in long_gaps:
            if gap_start_s < end_s and gap_end_s > start_s:
                mask[lead] = False
        normalised, mean, std = zscore_leads(crop, mask)
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
