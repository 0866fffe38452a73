"""BS.1770-4 loudness (``loudness_lufs``) against the standard's own figures and pyloudnorm.

pyloudnorm is compared with ``filter_class="DeMan"``, its implementation of the standard's K-weighting
(the analogue prototypes behind BS.1770-4 Tables 1 and 2), and on whole 400 ms blocks: pyloudnorm
rounds the block count, so it also measures a partial last block divided by a full block length,
which BS.1770-4 excludes ("incomplete gating blocks ... are not used") and which makes a steady
tone's reading depend on its length (``test_a_steady_tone_reads_the_same_whatever_its_length``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf

from pipelines.data.audio import _k_weighting, loudness_lufs, resample

pyloudnorm = pytest.importorskip("pyloudnorm")


def _tone(duration_s: float, fs_hz: int, amplitude: float, freq_hz: float = 997.0) -> np.ndarray:
    return amplitude * np.sin(2 * np.pi * freq_hz * np.arange(int(round(duration_s * fs_hz))) / fs_hz)


def _bursts(fs_hz: int, amplitude: float, seed: int = 1) -> np.ndarray:
    """Tone bursts over a noise floor: some blocks fall under the relative gate."""
    n = int(1.7 * fs_hz)
    wave = _tone(1.7, fs_hz, amplitude, 440.0) * (np.arange(n) % fs_hz < fs_hz // 2)
    return wave + np.random.default_rng(seed).normal(0, amplitude / 100, n)


def _whole_blocks(audio: np.ndarray, fs_hz: int) -> np.ndarray:
    block = int(round(0.4 * fs_hz))
    return audio[: block + (audio.size - block) // (block // 4) * (block // 4)]


def _pyloudnorm(audio: np.ndarray, fs_hz: int) -> float:
    return float(
        pyloudnorm.Meter(fs_hz, filter_class="DeMan").integrated_loudness(_whole_blocks(audio, fs_hz))
    )


def test_k_weighting_at_48khz_is_the_standards_table():
    """BS.1770-4 Table 1 (pre-filter) and Table 2 (RLB high-pass), 48 kHz."""
    shelf, high_pass = _k_weighting(48000)
    np.testing.assert_allclose(
        shelf,
        [1.53512485958697, -2.69169618940638, 1.19839281085285, 1.0, -1.69065929318241, 0.73248077421585],
        atol=1e-13,
    )
    np.testing.assert_allclose(
        high_pass, [1.0, -2.0, 1.0, 1.0, -1.99004745483398, 0.99007225036621], atol=1e-13
    )


@pytest.mark.parametrize(("level_dbfs", "expected_lkfs"), [(0.0, -3.01), (-20.0, -23.01)])
def test_the_standards_reference_tone(level_dbfs, expected_lkfs):
    """BS.1770-4: a 0 dBFS 997 Hz sine on one channel reads -3.01 LKFS (10 log10(1/2) = -3.0103)."""
    wave = _tone(3.0, 48000, 10 ** (level_dbfs / 20))
    assert loudness_lufs(wave, 48000) == pytest.approx(expected_lkfs, abs=0.005)
    # Redesigned for lower rates the filters warp a little; the reading stays within 0.05 LU.
    for fs_hz in (8000, 16000, 44100):
        assert loudness_lufs(_tone(3.0, fs_hz, 10 ** (level_dbfs / 20)), fs_hz) == pytest.approx(
            expected_lkfs, abs=0.05
        )


@pytest.mark.parametrize("fs_hz", [8000, 16000, 22050, 44100, 48000])
@pytest.mark.parametrize("amplitude", [0.001, 0.3, 0.95])
def test_generated_signals_equal_pyloudnorm(fs_hz, amplitude):
    # 0.95 lifts the shelf's output above full scale: nothing may be clipped in the measurement.
    wave = _bursts(fs_hz, amplitude)
    assert loudness_lufs(wave, fs_hz) == pytest.approx(_pyloudnorm(wave, fs_hz), abs=1e-6)


def test_a_steady_tone_reads_the_same_whatever_its_length():
    fs_hz = 16000
    readings = [loudness_lufs(_tone(seconds, fs_hz, 0.1), fs_hz) for seconds in (0.4, 0.46, 0.55, 0.59, 2.0)]
    assert max(readings) - min(readings) < 0.01
    # A partial last block is not used: the tail after the last whole block changes nothing.
    wave = _bursts(fs_hz, 0.3)[: int(0.987 * fs_hz)]
    assert loudness_lufs(wave, fs_hz) == loudness_lufs(_whole_blocks(wave, fs_hz), fs_hz)


def test_a_clip_shorter_than_one_block_is_one_block_over_its_length():
    fs_hz = 16000
    for seconds in (0.12, 0.3, 0.399):
        wave = _bursts(fs_hz, 0.3)[int(0.2 * fs_hz) : int((0.2 + seconds) * fs_hz)]
        meter = pyloudnorm.Meter(fs_hz, filter_class="DeMan", block_size=wave.size / fs_hz)
        assert loudness_lufs(wave, fs_hz) == pytest.approx(meter.integrated_loudness(wave), abs=1e-3)
    assert loudness_lufs(np.zeros(100), fs_hz) == -math.inf


def test_real_fsdd_recordings_equal_pyloudnorm_at_native_rate_and_16khz(shared_data):
    files = sorted((shared_data / "fsdd" / "recordings").glob("*.wav"))[::40]
    assert files, "FSDD recordings missing"
    compared = 0
    for path in files:
        native, fs_hz = sf.read(path, dtype="float32")
        for wave, rate in ((native, fs_hz), (resample(native, fs_hz, 16000), 16000)):
            if wave.size < 0.4 * rate:
                continue  # pyloudnorm refuses clips shorter than one block
            assert loudness_lufs(wave, rate) == pytest.approx(
                _pyloudnorm(wave.astype(np.float64), rate), abs=1e-6
            )
            compared += 1
    assert compared >= 40
