"""Synthetic ECGs: rhythms and morphology changes are measurable in the signal."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.demo.ecg import (
    _ecgsyn_derivatives,
    detect_r_peaks,
    qrs_duration_s,
    reference_ecgsyn,
    simulate_ecg,
)

FS = 250


def _rr(dx, seed):
    signal = simulate_ecg(dx, fs_hz=FS, seed=seed)
    return np.diff(detect_r_peaks(signal, FS)) / FS


@pytest.mark.parametrize("seed", [1, 2])
def test_atrial_fibrillation_rr_irregularity_exceeds_sinus_rhythm(seed):
    af, sinus = _rr(("AF",), seed), _rr(("NSR",), seed)
    cv_af, cv_sinus = af.std() / af.mean(), sinus.std() / sinus.mean()
    assert cv_sinus < 0.06
    assert cv_af > 0.1
    assert cv_af > 2 * cv_sinus


@pytest.mark.parametrize(
    ("dx", "low", "high"), [(("SB",), 38, 60), (("STach",), 100, 140), (("NSR",), 60, 100)]
)
def test_heart_rate_is_in_the_rhythm_range(dx, low, high):
    rr = _rr(dx, 5)
    assert low <= 60.0 / rr.mean() <= high


def test_lbbb_widens_qrs():
    normal = qrs_duration_s(simulate_ecg(("NSR",), fs_hz=500, heart_rate_bpm=70, seed=3), 500)
    lbbb = qrs_duration_s(simulate_ecg(("NSR", "LBBB"), fs_hz=500, heart_rate_bpm=70, seed=3), 500)
    assert lbbb > 1.4 * normal


def test_lvh_raises_sokolow_lyon_voltage():
    def sokolow_mv(signal):  # S depth in V1 + R height in V5 (leads 6 and 10)
        return -np.percentile(signal[:, 6], 0.5) + np.percentile(signal[:, 10], 99.5)

    normal = simulate_ecg(("NSR",), heart_rate_bpm=70, seed=4, noise_mv=0.0)
    lvh = simulate_ecg(("NSR", "LVH"), heart_rate_bpm=70, seed=4, noise_mv=0.0)
    assert sokolow_mv(lvh) > 1.8 * sokolow_mv(normal)


def test_st_elevation_raises_the_st_segment_in_some_leads():
    fs = 500
    normal = simulate_ecg(("NSR",), fs_hz=fs, heart_rate_bpm=70, seed=6, noise_mv=0.0)
    ste = simulate_ecg(("NSR", "STE"), fs_hz=fs, heart_rate_bpm=70, seed=6, noise_mv=0.0)
    peaks = detect_r_peaks(normal, fs)
    st_points = [p + int(0.1 * fs) for p in peaks if p + int(0.1 * fs) < len(normal)]
    shift = ste[st_points].mean(axis=0) - normal[st_points].mean(axis=0)
    assert shift.max() > 0.15


def test_output_shape_sampling_rates_and_determinism():
    for fs in (250, 500, 1000):
        assert simulate_ecg(("NSR",), fs_hz=fs, seed=1).shape == (10 * fs, 12)
    assert np.array_equal(simulate_ecg(("AF",), seed=9), simulate_ecg(("AF",), seed=9))
    with pytest.raises(ValueError, match="rhythm"):
        simulate_ecg(("LBBB",))


def test_fast_ecgsyn_derivative_equals_neurokit2s_bit_for_bit():
    from neurokit2.ecg.ecg_simulate import _ecg_simulate_derivsecgsyn

    rng = np.random.default_rng(0)
    rr = rng.uniform(0.4, 1.4, 4096)
    ti = np.radians([-70.0, -15.0, 0.0, 15.0, 100.0]) * rng.uniform(0.8, 1.2, 5)
    for _ in range(20000):
        t, x = float(rng.uniform(0, 8.0)), rng.normal(0, 1, 3)
        ai, bi = rng.normal(0, 10, 5), rng.uniform(0.05, 0.6, 5)
        expected = _ecg_simulate_derivsecgsyn(t, x, rr, ti, 512, ai, bi)
        got = _ecgsyn_derivatives(t, x, rr, ti, 512, ai, bi)
        assert got.dtype == expected.dtype and got.tobytes() == expected.tobytes()


@pytest.mark.parametrize(
    ("dx", "fs_hz"), [(("NSR",), 500), (("AF", "LVH"), 250), (("STach", "LBBB", "STE"), 1000)]
)
def test_simulated_records_equal_the_reference_integration_byte_for_byte(dx, fs_hz):
    fast = simulate_ecg(dx, fs_hz=fs_hz, seed=21)
    with reference_ecgsyn():
        reference = simulate_ecg(dx, fs_hz=fs_hz, seed=21)
    assert fast.tobytes() == reference.tobytes()
