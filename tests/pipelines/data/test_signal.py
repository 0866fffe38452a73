"""Pure ECG signal functions: lead names, limb-lead derivation, gap repair, resampling, filters, crops."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.data.signal import (
    CANONICAL_LEADS,
    bandpass,
    canonical_lead,
    crop_starts,
    derive_limb_leads,
    fit_length,
    notch,
    place_leads,
    repair_gaps,
    resample,
    zscore_leads,
)

FS_HZ = 500


@pytest.mark.parametrize(
    ("label", "name"),
    [("AVR", "aVR"), ("avr", "aVR"), ("Lead I (Einthoven)", "I"), ("Lead aVF", "aVF"), ("v5", "V5"),
     ("DIII", "III"), ("MLII", None), ("ECG 1", None), ("PLETH", None), ("vx", None)],
)  # fmt: skip
def test_lead_names_map_to_canonical_or_none(label, name):
    assert canonical_lead(label) == name


def test_place_leads_reorders_and_drops_other_channels():
    signals = np.arange(3 * 4, dtype=float).reshape(3, 4)
    placed, present = place_leads(signals, ["V2", "RESP", "avl", "I"])
    assert present.tolist() == [n in ("V2", "aVL", "I") for n in CANONICAL_LEADS]
    np.testing.assert_array_equal(placed[:, 0], signals[:, 3])
    np.testing.assert_array_equal(placed[:, CANONICAL_LEADS.index("aVL")], signals[:, 2])
    assert np.isnan(placed[:, 1]).all()


def _limb(rng: np.random.Generator, n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    lead_i, lead_ii = rng.standard_normal(n), rng.standard_normal(n)
    return lead_i, lead_ii


def test_derived_limb_leads_equal_einthoven_and_goldberger():
    lead_i, lead_ii = _limb(np.random.default_rng(0))
    leads = np.full((200, 12), np.nan)
    leads[:, 0], leads[:, 1] = lead_i, lead_ii
    present = np.zeros(12, dtype=bool)
    present[:2] = True
    derived, now = derive_limb_leads(leads, present)
    assert now[:6].all() and not now[6:].any()
    np.testing.assert_allclose(derived[:, 2], lead_ii - lead_i)
    np.testing.assert_allclose(derived[:, 3], -(lead_i + lead_ii) / 2)
    np.testing.assert_allclose(derived[:, 4], lead_i - lead_ii / 2)
    np.testing.assert_allclose(derived[:, 5], lead_ii - lead_i / 2)


@pytest.mark.parametrize("missing", [0, 1, 2])
def test_any_two_of_i_ii_iii_give_the_third(missing):
    lead_i, lead_ii = _limb(np.random.default_rng(1))
    truth = np.stack([lead_i, lead_ii, lead_ii - lead_i], axis=1)
    leads = np.full((200, 12), np.nan)
    present = np.zeros(12, dtype=bool)
    for k in {0, 1, 2} - {missing}:
        leads[:, k], present[k] = truth[:, k], True
    derived, now = derive_limb_leads(leads, present)
    assert now[missing]
    np.testing.assert_allclose(derived[:, missing], truth[:, missing])


def test_recorded_leads_are_never_overwritten():
    leads = np.random.default_rng(2).standard_normal((50, 12))
    present = np.ones(12, dtype=bool)
    derived, _ = derive_limb_leads(leads, present)
    np.testing.assert_array_equal(derived, leads)


def test_short_gap_is_interpolated_and_long_gap_reported():
    t = np.arange(1000) / FS_HZ
    leads = np.stack([t * 2.0, t * 3.0], axis=1)
    leads[100:110, 0] = np.nan  # 20 ms
    leads[300:500, 1] = np.inf  # 400 ms
    repaired, present, long_gaps = repair_gaps(leads, np.array([True, True]), FS_HZ, max_gap_s=0.1)
    np.testing.assert_allclose(repaired[100:110, 0], t[100:110] * 2.0)
    assert np.isfinite(repaired).all() and present.all()
    assert long_gaps == [(1, 300 / FS_HZ, 500 / FS_HZ)]


def test_lead_without_finite_samples_becomes_absent():
    leads = np.zeros((100, 2))
    leads[:, 1] = np.nan
    repaired, present, _ = repair_gaps(leads, np.array([True, True]), FS_HZ, max_gap_s=0.1)
    assert present.tolist() == [True, False] and np.all(repaired[:, 1] == 0)


@pytest.mark.parametrize(
    ("fs_in", "n_in", "n_out"), [(360, 3600, 5000), (1000, 10000, 5000), (250, 2500, 5000)]
)
def test_resampling_length_follows_the_rate_ratio(fs_in, n_in, n_out):
    t = np.arange(n_in) / fs_in
    sine = np.sin(2 * np.pi * 5 * t)[:, None]
    out = resample(sine, fs_in, FS_HZ)
    assert out.shape == (n_out, 1)
    expected = np.sin(2 * np.pi * 5 * np.arange(n_out) / FS_HZ)
    np.testing.assert_allclose(out[100:-100, 0], expected[100:-100], atol=0.02)


def _qrs_train(n: int) -> np.ndarray:
    """Narrow Gaussian 'QRS' spikes (sd 10 ms) once a second."""
    t = np.arange(n) / FS_HZ
    spikes = np.zeros(n)
    for beat_s in np.arange(0.5, n / FS_HZ, 1.0):
        spikes += np.exp(-0.5 * ((t - beat_s) / 0.01) ** 2)
    return spikes


def _band_energy(x: np.ndarray, low_hz: float, high_hz: float) -> float:
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / FS_HZ)
    return float(spectrum[(freqs >= low_hz) & (freqs < high_hz)].sum())


def test_bandpass_removes_baseline_wander_and_keeps_qrs():
    n = 10 * FS_HZ
    qrs = _qrs_train(n)
    wander = 2.0 * np.sin(2 * np.pi * 0.15 * np.arange(n) / FS_HZ)
    out = bandpass((qrs + wander)[:, None], FS_HZ, 0.5, 40.0)[:, 0]
    assert _band_energy(out, 0, 0.3) < 0.01 * _band_energy(qrs + wander, 0, 0.3)
    peaks = out[np.arange(250, n, FS_HZ)]
    assert peaks.min() > 0.6  # QRS amplitude (1.0) mostly kept, not delayed (zero phase)


def test_notch_removes_mains_and_keeps_ecg_band():
    t = np.arange(10 * FS_HZ) / FS_HZ
    ecg_band = np.sin(2 * np.pi * 10 * t)
    mains = 0.5 * np.sin(2 * np.pi * 50 * t)
    out = notch((ecg_band + mains)[:, None], FS_HZ, 50.0)[:, 0]
    assert _band_energy(out, 49, 51) < 0.01 * _band_energy(mains, 49, 51)
    assert _band_energy(out, 9, 11) > 0.95 * _band_energy(ecg_band, 9, 11)


def test_crop_policies():
    assert crop_starts(25_000, 5000, "windows") == [0, 5000, 10_000, 15_000, 20_000]
    assert crop_starts(27_000, 5000, "windows", max_crops=2) == [0, 5000]
    assert crop_starts(27_000, 5000, "first") == [0]
    assert crop_starts(27_000, 5000, "centre") == [11_000]
    assert crop_starts(3000, 5000, "windows") == [0]


def test_fit_length_pads_with_zeros_at_the_end():
    out = fit_length(np.ones((3, 2)), 5)
    np.testing.assert_array_equal(out, [[1, 1], [1, 1], [1, 1], [0, 0], [0, 0]])


def test_zscore_per_lead_returns_stats_and_zeroes_absent_leads():
    rng = np.random.default_rng(3)
    leads = rng.normal(2.0, 3.0, size=(1000, 3))
    out, mean, std = zscore_leads(leads, np.array([True, False, True]))
    np.testing.assert_allclose(out[:, [0, 2]].mean(axis=0), 0, atol=1e-9)
    np.testing.assert_allclose(out[:, [0, 2]].std(axis=0), 1, atol=1e-9)
    assert np.all(out[:, 1] == 0) and np.isnan(mean[1]) and np.isnan(std[1])
    np.testing.assert_allclose(out[:, 0] * std[0] + mean[0], leads[:, 0])
