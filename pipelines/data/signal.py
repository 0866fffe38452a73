"""Pure ECG signal functions: lead naming and placement, limb-lead derivation, gap repair, resampling,
filtering, cropping and per-lead normalisation.

Arrays are ``(n_samples, n_leads)`` in millivolts unless a name says otherwise; the canonical 12-lead
order is ``CANONICAL_LEADS``. No file I/O here. ``place_leads`` returns a Fortran-ordered array (each
lead contiguous in memory), which the copies below keep, so per-lead filters and reductions run over
contiguous samples.
"""

from __future__ import annotations

import functools
import re
from fractions import Fraction
from typing import Literal

import numpy as np
from scipy import signal as sps

CANONICAL_LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
LEAD_INDEX = {name: i for i, name in enumerate(CANONICAL_LEADS)}
LIMB_LEADS = CANONICAL_LEADS[:6]
_I, _II, _III, _AVR, _AVL, _AVF = range(len(LIMB_LEADS))  # limb-lead columns

# Spellings seen in WFDB headers and DICOM ChannelSourceSequence code meanings, lower-cased with
# spaces removed: "I", "i", "Lead I (Einthoven)", "DI"/"DII"/"DIII" (European), "AVR", "avr".
# Modified leads (MIT-BIH "MLII", "MLIII", "MV1") come from other electrode placements and are not
# interchangeable with the standard leads, so they are not mapped.
_ALIASES = {
    **{name.lower(): name for name in CANONICAL_LEADS},
    "di": "I",
    "dii": "II",
    "diii": "III",
    "1": "I",
    "2": "II",
    "3": "III",
}
_DECORATION = re.compile(r"\(.*?\)|^lead|\s+|[-_]")

WindowPolicy = Literal["windows", "first", "centre"]


def canonical_lead(label: str) -> str | None:
    """The canonical name of a lead label (``"AVR"`` -> ``"aVR"``), or ``None`` when it is not a 12-lead lead."""
    key = _DECORATION.sub("", label.strip().lower())
    return _ALIASES.get(key)


def place_leads(signals: np.ndarray, labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Put the channels whose label is a 12-lead name into canonical order.

    Returns ``(n_samples, 12)`` float64 (NaN where absent) and the ``(12,)`` presence mask. Other
    channels (respiration, Frank X/Y/Z, modified leads) are dropped; a duplicate name keeps its first channel.
    """
    placed = np.full((signals.shape[0], len(CANONICAL_LEADS)), np.nan, order="F")
    present = np.zeros(len(CANONICAL_LEADS), dtype=bool)
    for channel, label in enumerate(labels):
        name = canonical_lead(label)
        if name is None or present[LEAD_INDEX[name]]:
            continue
        placed[:, LEAD_INDEX[name]] = signals[:, channel]
        present[LEAD_INDEX[name]] = True
    return placed, present


def derive_limb_leads(leads: np.ndarray, present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fill missing limb leads from those present, by Einthoven's and Goldberger's relations.

    The six limb leads are combinations of two independent potential differences, so any two of
    I, II, III give the third (Einthoven's law, I + III = II; Einthoven 1912) and I and II give the
    augmented leads (Goldberger 1942): aVR = -(I + II)/2, aVL = I - II/2, aVF = II - I/2.
    Recorded leads are never overwritten. Returns copies.
    """
    leads, present = leads.copy(order="K"), present.copy()
    if not present[_III] and present[_I] and present[_II]:
        leads[:, _III], present[_III] = leads[:, _II] - leads[:, _I], True
    if not present[_II] and present[_I] and present[_III]:
        leads[:, _II], present[_II] = leads[:, _I] + leads[:, _III], True
    if not present[_I] and present[_II] and present[_III]:
        leads[:, _I], present[_I] = leads[:, _II] - leads[:, _III], True
    if present[_I] and present[_II]:
        lead_i, lead_ii = leads[:, _I], leads[:, _II]
        for index, derived in (
            (_AVR, -(lead_i + lead_ii) / 2),
            (_AVL, lead_i - lead_ii / 2),
            (_AVF, lead_ii - lead_i / 2),
        ):
            if not present[index]:
                leads[:, index], present[index] = derived, True
    return leads, present


def nonfinite_runs(column: np.ndarray) -> list[tuple[int, int]]:
    """``[start, end)`` sample ranges where a 1-D signal is NaN or infinite."""
    bad = ~np.isfinite(column)
    if not bad.any():
        return []
    edges = np.diff(np.concatenate(([0], bad.view(np.int8), [0])))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True))


def repair_gaps(
    leads: np.ndarray, present: np.ndarray, fs_hz: float, max_gap_s: float
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, float, float]]]:
    """Interpolate NaN/inf gaps linearly in every present lead.

    Gaps up to ``max_gap_s`` are repaired (a few dropped samples do not change an ECG's meaning).
    Longer gaps are interpolated too, so that filters do not ring, but returned as ``(lead, start_s,
    end_s)`` so crops that overlap them mask that lead. A lead with no finite sample is marked absent.
    Returns the repaired copy, the presence mask and the long gaps.
    """
    leads, present = leads.copy(order="K"), present.copy()
    long_gaps: list[tuple[int, float, float]] = []
    columns = np.flatnonzero(present)
    if np.isfinite(leads[:, columns]).all():  # the usual case: nothing to repair
        leads[:, ~present] = 0.0
        return leads, present, long_gaps
    samples = np.arange(leads.shape[0])
    for lead in columns:
        column = leads[:, lead]
        runs = nonfinite_runs(column)
        if not runs:
            continue
        good = np.isfinite(column)
        if not good.any():
            leads[:, lead], present[lead] = np.nan, False
            continue
        column[~good] = np.interp(samples[~good], samples[good], column[good])
        long_gaps.extend(
            (int(lead), start / fs_hz, end / fs_hz)
            for start, end in runs
            if (end - start) / fs_hz > max_gap_s
        )
    leads[:, ~present] = 0.0
    return leads, present, long_gaps


def resample(leads: np.ndarray, fs_in_hz: float, fs_out_hz: float) -> np.ndarray:
    """Polyphase resampling along time (``scipy.signal.resample_poly``, Kaiser-windowed anti-alias FIR).

    The rate ratio is approximated by a fraction with denominator <= 1000 (360 -> 500 Hz is 25/18).
    Output length is ``ceil(n * up / down)``.
    """
    if fs_in_hz == fs_out_hz:
        return leads
    ratio = Fraction(fs_out_hz / fs_in_hz).limit_denominator(1000)
    return sps.resample_poly(leads, ratio.numerator, ratio.denominator, axis=0, padtype="line")


def bandpass(
    leads: np.ndarray, fs_hz: float, low_hz: float | None, high_hz: float | None, order: int = 2
) -> np.ndarray:
    """Zero-phase Butterworth band-pass (``sosfiltfilt``: no QRS delay or distortion, doubled order).

    0.5 Hz removes baseline wander from respiration and electrode drift without distorting the ST
    segment much (AHA recommendation 0.05-0.67 Hz, Kligfield et al. 2007, *Circulation* 115:1306);
    40 Hz removes EMG and mains noise above the QRS band. A cut at or above Nyquist is skipped.
    """
    nyquist = fs_hz / 2
    low = low_hz if low_hz and low_hz > 0 else None
    high = high_hz if high_hz and high_hz < nyquist else None
    sos = _butter_sos(order, low, high, float(fs_hz))
    return leads if sos is None else sps.sosfiltfilt(sos, leads, axis=0)


@functools.lru_cache(maxsize=32)
def _butter_sos(order: int, low_hz: float | None, high_hz: float | None, fs_hz: float) -> np.ndarray | None:
    # The design depends only on the settings and the rate: once per worker, not once per record.
    if low_hz and high_hz:
        sos = sps.butter(order, [low_hz, high_hz], btype="bandpass", output="sos", fs=fs_hz)
    elif low_hz:
        sos = sps.butter(order, low_hz, btype="highpass", output="sos", fs=fs_hz)
    elif high_hz:
        sos = sps.butter(order, high_hz, btype="lowpass", output="sos", fs=fs_hz)
    else:
        return None
    return sos


def notch(leads: np.ndarray, fs_hz: float, notch_hz: float, quality: float = 30.0) -> np.ndarray:
    """Zero-phase IIR notch at the mains frequency (50 or 60 Hz), bandwidth ``notch_hz / quality``."""
    if notch_hz >= fs_hz / 2:
        return leads
    b, a = sps.iirnotch(notch_hz, quality, fs=fs_hz)
    return sps.sosfiltfilt(sps.tf2sos(b, a), leads, axis=0)


def crop_starts(n_samples: int, window_n: int, policy: WindowPolicy, max_crops: int = 0) -> list[int]:
    """Start samples of fixed-length crops of a record.

    ``windows``: consecutive non-overlapping windows (a tail shorter than one window is dropped);
    ``first``: one crop at the start; ``centre``: one crop in the middle. A record no longer than
    one window gives one crop at 0 (padded by ``fit_length``). ``max_crops`` > 0 caps the count.
    """
    if n_samples <= window_n:
        return [0]
    if policy == "first":
        return [0]
    if policy == "centre":
        return [(n_samples - window_n) // 2]
    starts = list(range(0, n_samples - window_n + 1, window_n))
    return starts[:max_crops] if max_crops > 0 else starts


def fit_length(leads: np.ndarray, n_samples: int) -> np.ndarray:
    """Zero-pad at the end (or cut) to exactly ``n_samples`` along time."""
    if leads.shape[0] >= n_samples:
        return leads[:n_samples]
    pad = np.zeros((n_samples - leads.shape[0], leads.shape[1]), dtype=leads.dtype)
    return np.concatenate([leads, pad], axis=0)


def flat_leads(leads: np.ndarray, min_std_mv: float, std_mv: np.ndarray | None = None) -> np.ndarray:
    """``(n_leads,)`` True where a lead's standard deviation is below ``min_std_mv`` (electrode off).
    ``std_mv``: ``leads.std(axis=0)`` when the caller has it already."""
    return (np.std(leads, axis=0) if std_mv is None else std_mv) < min_std_mv


def zscore_leads(
    leads: np.ndarray, present: np.ndarray, eps_mv: float = 1e-6, std_mv: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-lead z-score on the crop; absent leads become zeros.

    Returns the normalised leads and each lead's mean and std (mV, NaN for absent leads), so the
    amplitude can be restored (``x * std + mean``). ``std_mv``: ``leads.std(axis=0)`` when the caller
    has it already (the flat-lead test needs it too), so it is not computed twice.
    """
    mean = np.where(present, leads.mean(axis=0), np.nan)
    std = np.where(present, leads.std(axis=0) if std_mv is None else std_mv, np.nan)
    if present.all():
        return (leads - mean) / np.maximum(std, eps_mv), mean, std
    normalised = np.zeros_like(leads)
    cols = np.flatnonzero(present)
    normalised[:, cols] = (leads[:, cols] - mean[cols]) / np.maximum(std[cols], eps_mv)
    return normalised, mean, std
