"""Synthetic 12-lead ECGs: diagnosis codes in, signals in millivolts out.

One PQRST beat per lead comes from neurokit2's ECGSYN multi-lead simulator (McSharry et al. 2003,
*IEEE TBME* 50:289; multi-lead gains of neurokit2 #625), run for a few beats with the morphology
parameters that the diagnosis implies (no P wave in AF, wider Q/R/S Gaussians in LBBB). The median
beat is then laid on a rhythm of our own: sinus with respiratory sinus arrhythmia, or atrial
fibrillation with independent, irregular RR intervals and a fibrillatory baseline. Voltage criteria
(LVH) and ST elevation are applied to the beat itself. This is faster than simulating 10 s per record
(the ODE integration dominates) and it keeps every rhythm property under our control.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import math
import warnings
from collections.abc import Iterator

import numpy as np

LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
# Our ECG vocabulary (the `Dx:` header comment). Rhythm codes are mutually exclusive.
ECG_CODES = ("NSR", "SB", "STach", "AF", "LBBB", "STE", "LVH")
RHYTHMS = ("NSR", "SB", "STach", "AF")
ECG_CODE_NAMES = {
    "NSR": "normal sinus rhythm",
    "SB": "sinus bradycardia",
    "STach": "sinus tachycardia",
    "AF": "atrial fibrillation",
    "LBBB": "left bundle branch block",
    "STE": "ST elevation",
    "LVH": "left ventricular hypertrophy",
}
# Heart-rate ranges (bpm) per rhythm: bradycardia < 60, tachycardia > 100 (AHA/ACC definitions).
HEART_RATE_RANGE_BPM = {"NSR": (62, 92), "SB": (42, 55), "STach": (108, 135), "AF": (85, 130)}

# Typical peak-to-peak scale per lead (mV), to undo neurokit2's per-lead [-0.4, 1.2] normalisation.
_LEAD_GAIN = np.array([0.7, 1.0, 0.6, 0.6, 0.5, 0.7, 0.9, 1.3, 1.4, 1.3, 1.1, 0.9])
_ECGSYN_AI = np.array([1.2, -5.0, 30.0, -7.5, 0.75])  # P Q R S T amplitudes (McSharry 2003, table 1)
_ECGSYN_BI = np.array([0.25, 0.1, 0.1, 0.1, 0.4])  # Gaussian widths (radians)
_LVH_LEADS = (0, 4, 10, 11)  # I, aVL, V5, V6: tall R
_LVH_S_LEADS = (6, 7)  # V1, V2: deep S
_STE_TERRITORIES = {"anterior": (6, 7, 8, 9), "inferior": (1, 2, 5), "lateral": (0, 4, 10, 11)}
_RECIPROCAL = {"anterior": (1, 2, 5), "inferior": (0, 4), "lateral": (2, 5)}


def rhythm_of(dx: tuple[str, ...] | list[str]) -> str:
    rhythms = [code for code in dx if code in RHYTHMS]
    if len(rhythms) != 1:
        raise ValueError(f"exactly one rhythm code of {RHYTHMS} expected, got {list(dx)}")
    return rhythms[0]


_TWO_PI = 2 * np.pi


def _ecgsyn_derivatives(
    t: float, x: np.ndarray, rr: np.ndarray, ti: np.ndarray, sfint: float, ai: np.ndarray, bi: np.ndarray
) -> np.ndarray:
    """neurokit2's ``_ecg_simulate_derivsecgsyn`` (McSharry 2003, eq. 3) with the same floating-point
    operations in the same order, minus its per-call overhead (numpy scalar maths, ``np.sum`` /
    ``np.round`` wrappers). The integrator calls it ~1000 times per lead and second of signal, and the
    integration is ~90% of writing a demo ECG; this halves the derivative's cost and cuts an ECG's by a
    quarter. Bit-identical results are a test (tests/pipelines/demo/test_ecg_synth.py)."""
    x0, x1, x2 = x.tolist()
    ta = math.atan2(x1, x0)
    a0 = 1.0 - math.sqrt(x0**2 + x1**2)
    w0 = _TWO_PI / rr[min(math.floor(t * sfint), len(rr) - 1)]
    zbase = 0.005 * np.sin(_TWO_PI * 0.25 * t)  # respiratory baseline, 0.25 Hz
    angle = ta - ti
    dti = angle - np.rint(angle / 2 / np.pi) * 2 * np.pi  # np.round(a) is np.rint(a)
    dx3dt = -np.add.reduce(ai * dti * np.exp(-0.5 * (dti / bi) ** 2)) - (x2 - zbase)
    return np.array([a0 * x0 - w0 * x1, a0 * x1 + w0 * x0, dx3dt])


_REFERENCE_DERIVATIVES = False  # True inside reference_ecgsyn(): neurokit2's own derivative


@contextlib.contextmanager
def reference_ecgsyn() -> Iterator[None]:
    """Within the block (this process), ECGSYN runs neurokit2's own derivative: the reference that the
    fast one must equal byte for byte (tests, audits after a neurokit2 upgrade)."""
    global _REFERENCE_DERIVATIVES
    previous, _REFERENCE_DERIVATIVES = _REFERENCE_DERIVATIVES, True
    try:
        yield
    finally:
        _REFERENCE_DERIVATIVES = previous


@contextlib.contextmanager
def _fast_ecgsyn() -> Iterator[None]:
    """neurokit2's ECGSYN with :func:`_ecgsyn_derivatives` (its loop looks the derivative up by module
    name at every call); unchanged inside :func:`reference_ecgsyn` or if neurokit2 renames it."""
    module = importlib.import_module("neurokit2.ecg.ecg_simulate")
    original = getattr(module, "_ecg_simulate_derivsecgsyn", None)
    if _REFERENCE_DERIVATIVES or original is None:
        yield
        return
    module._ecg_simulate_derivsecgsyn = _ecgsyn_derivatives
    try:
        yield
    finally:
        module._ecg_simulate_derivsecgsyn = original


def _beat_template(
    fs_hz: int, heart_rate_bpm: float, with_p: bool, qrs_width_factor: float, seed: int
) -> tuple[np.ndarray, int]:
    """Median beat (n, 12) in mV from a short ECGSYN run and the index of its R peak."""
    import neurokit2 as nk

    ai = _ECGSYN_AI.copy()
    bi = _ECGSYN_BI.copy()
    if not with_p:
        ai[0] = 0.0
    bi[1:4] *= qrs_width_factor
    rr_s = 60.0 / heart_rate_bpm
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), _fast_ecgsyn():
        warnings.simplefilter("ignore")
        frame = nk.ecg_simulate(
            duration=max(6 * rr_s, 3.0),
            sampling_rate=fs_hz,
            heart_rate=heart_rate_bpm,
            heart_rate_std=0.5,
            method="multileads",
            noise=0.0,
            random_state=seed,
            ai=ai,
            bi=bi,
        )
    signals = frame.to_numpy(dtype=np.float64)
    signals = signals - np.median(signals, axis=0)  # isoelectric line at 0 (most samples are baseline)
    signals *= _LEAD_GAIN / np.maximum(np.ptp(signals, axis=0), 1e-6)
    # R peaks: maxima of the QRS slope energy summed over leads (QRS is the steepest wave).
    energy = np.sum(np.diff(signals, axis=0) ** 2, axis=1)
    from scipy.signal import find_peaks

    peaks, _ = find_peaks(energy, distance=int(0.6 * rr_s * fs_hz), height=0.3 * energy.max())
    pre, post = int(0.4 * rr_s * fs_hz), int(0.6 * rr_s * fs_hz)
    beats = [signals[r - pre : r + post] for r in peaks if r - pre >= 0 and r + post <= len(signals)]
    if not beats:
        raise RuntimeError("ECGSYN produced no complete beat")
    template = np.median(np.stack(beats), axis=0)
    return template - template[:5].mean(axis=0), pre


def _rr_intervals_s(rhythm: str, heart_rate_bpm: float, duration_s: float, rng: np.random.Generator) -> list:
    """Beat-to-beat intervals covering ``duration_s`` (plus one beat either side)."""
    mean_rr = 60.0 / heart_rate_bpm
    intervals, t = [], 0.0
    while t < duration_s + 2 * mean_rr:
        if rhythm == "AF":
            # Irregularly irregular: independent intervals, coefficient of variation ~0.2 or more
            # (AF RR CV is typically 0.15-0.35; sinus rhythm's is < 0.05 at rest).
            rr = mean_rr * rng.lognormal(0.0, 0.24)
        else:
            # Respiratory sinus arrhythmia (~0.25 Hz) plus small beat-to-beat jitter.
            rr = mean_rr * (1.0 + 0.03 * np.sin(2 * np.pi * 0.25 * t) + 0.01 * rng.standard_normal())
        rr = float(np.clip(rr, 0.3, 2.0))
        intervals.append(rr)
        t += rr
    return intervals


def _apply_morphology(template: np.ndarray, r_index: int, dx: tuple[str, ...], fs_hz: int, rng) -> np.ndarray:
    beat = template.copy()
    n = len(beat)
    t_s = (np.arange(n) - r_index) / fs_hz
    if "LVH" in dx:
        # Sokolow-Lyon: S(V1) + R(V5 or V6) > 3.5 mV (Sokolow & Lyon 1949). Scale the QRS only.
        qrs = np.exp(-((t_s / 0.035) ** 4))[:, None]
        factor = np.ones(12)
        factor[list(_LVH_LEADS)] = rng.uniform(2.4, 3.0)
        factor[list(_LVH_S_LEADS)] = rng.uniform(2.4, 3.0)
        beat = beat * (1.0 + qrs * (factor - 1.0))
    if "STE" in dx:
        # ST elevation from the J point into the T wave in one coronary territory, reciprocal
        # depression opposite (Fourth Universal Definition of MI, Thygesen et al. 2018).
        territory = rng.choice(list(_STE_TERRITORIES))
        qrs_end = 0.06 if "LBBB" not in dx else 0.09
        st = 1.0 / (1.0 + np.exp(-(t_s - qrs_end) / 0.008)) * np.exp(-(((t_s - 0.16) / 0.16) ** 4))
        elevation = rng.uniform(0.2, 0.35)
        for lead in _STE_TERRITORIES[territory]:
            beat[:, lead] += elevation * st
        for lead in _RECIPROCAL[territory]:
            beat[:, lead] -= 0.5 * elevation * st
    return beat


def simulate_ecg(
    dx: tuple[str, ...],
    fs_hz: int = 500,
    duration_s: float = 10.0,
    heart_rate_bpm: float | None = None,
    seed: int = 0,
    noise_mv: float = 0.015,
) -> np.ndarray:
    """A 12-lead ECG, shape ``(round(duration_s * fs_hz), 12)`` in mV, leads in ``LEADS`` order."""
    unknown = set(dx) - set(ECG_CODES)
    if unknown:
        raise ValueError(f"unknown ECG codes {sorted(unknown)}; valid: {ECG_CODES}")
    rhythm = rhythm_of(dx)
    rng = np.random.default_rng(seed)
    if heart_rate_bpm is None:
        heart_rate_bpm = float(rng.uniform(*HEART_RATE_RANGE_BPM[rhythm]))
    template, r_index = _beat_template(
        fs_hz,
        heart_rate_bpm,
        with_p=rhythm != "AF",
        qrs_width_factor=2.2 if "LBBB" in dx else 1.0,
        seed=int(rng.integers(2**31)),
    )
    # Morphology draws from its own stream so that adding a code leaves the rhythm and noise unchanged.
    beat = _apply_morphology(template, r_index, dx, fs_hz, np.random.default_rng([seed, 1]))
    # Taper the beat's ends so that overlapping neighbours at short RR intervals join smoothly.
    edge = max(len(beat) // 12, 1)
    taper = np.ones(len(beat))
    taper[:edge] = np.sin(np.linspace(0, np.pi / 2, edge)) ** 2
    taper[-edge:] = taper[:edge][::-1]
    beat *= taper[:, None]

    n_samples = int(round(duration_s * fs_hz))
    pad = len(beat)
    out = np.zeros((n_samples + 2 * pad, 12))
    t_s = float(rng.uniform(0.0, 60.0 / heart_rate_bpm))
    for rr in _rr_intervals_s(rhythm, heart_rate_bpm, duration_s, rng):
        start = pad + int(round(t_s * fs_hz)) - r_index
        if start >= 0 and start + len(beat) <= len(out):
            out[start : start + len(beat)] += beat
        t_s += rr
    signal = out[pad : pad + n_samples]
    time_s = np.arange(n_samples) / fs_hz
    if rhythm == "AF":
        # Fibrillatory waves: 4-9 Hz, 0.05-0.1 mV, clearest in V1 and the inferior leads.
        f_waves = np.zeros(n_samples)
        for _ in range(3):
            freq = rng.uniform(4.0, 9.0)
            f_waves += rng.uniform(0.02, 0.04) * np.sin(2 * np.pi * freq * time_s + rng.uniform(0, 2 * np.pi))
        lead_weight = np.array([0.3, 0.8, 0.8, 0.4, 0.3, 0.8, 1.0, 0.7, 0.5, 0.4, 0.3, 0.3])
        signal = signal + f_waves[:, None] * lead_weight
    # Baseline wander (respiration, ~0.15-0.3 Hz) and measurement noise.
    wander = rng.uniform(0.02, 0.08) * np.sin(2 * np.pi * rng.uniform(0.15, 0.3) * time_s + rng.uniform(0, 6))
    signal = signal + wander[:, None] + noise_mv * rng.standard_normal(signal.shape)
    return signal.astype(np.float64)


def qrs_energy(signal_mv: np.ndarray, fs_hz: int, band_hz: tuple[float, float] = (5.0, 20.0)) -> np.ndarray:
    """Band-passed squared slope summed over leads: high during QRS complexes.

    Pan & Tompkins (1985, *IEEE TBME* 32:230): the 5-20 Hz band keeps the QRS and rejects P/T waves,
    baseline wander and most noise; the squared derivative emphasises the steep QRS slopes.
    """
    from scipy.signal import butter, sosfiltfilt

    sos = butter(2, [band_hz[0], min(band_hz[1], 0.45 * fs_hz)], btype="bandpass", fs=fs_hz, output="sos")
    filtered = sosfiltfilt(sos, signal_mv, axis=0)
    return np.concatenate([[0.0], np.sum(np.diff(filtered, axis=0) ** 2, axis=1)]) * fs_hz**2


def detect_r_peaks(signal_mv: np.ndarray, fs_hz: int) -> np.ndarray:
    """QRS sample indices from the multi-lead QRS energy (150 ms moving integration, 250 ms refractory)."""
    from scipy.ndimage import uniform_filter1d
    from scipy.signal import find_peaks

    energy = uniform_filter1d(qrs_energy(signal_mv, fs_hz), max(int(0.15 * fs_hz), 1))
    peaks, _ = find_peaks(energy, distance=int(0.25 * fs_hz), height=0.3 * np.percentile(energy, 99))
    return peaks


def qrs_duration_s(signal_mv: np.ndarray, fs_hz: int) -> float:
    """Width of the median beat's 1-40 Hz slope-energy peak above 5% of its maximum (s).

    A proxy for QRS duration that reads shorter than a clinical caliper measurement, but scales with it.
    """
    energy = qrs_energy(signal_mv, fs_hz, band_hz=(1.0, 40.0))
    half = int(0.25 * fs_hz)
    peaks = detect_r_peaks(signal_mv, fs_hz)
    windows = [energy[r - half : r + half] for r in peaks if half <= r < len(energy) - half]
    if not windows:
        raise ValueError("no complete beat to measure")
    median = np.median(np.stack(windows), axis=0)
    centre = int(np.argmax(median))
    above = median > 0.05 * median[centre]
    left = centre
    while left > 0 and above[left - 1]:
        left -= 1
    right = centre
    while right < len(median) - 1 and above[right + 1]:
        right += 1
    return float(right - left + 1) / fs_hz
