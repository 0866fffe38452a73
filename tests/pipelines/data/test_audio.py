"""Speech reader: soundfile-written WAV/FLAC fixtures (stereo, 8 kHz, silence) and real FSDD recordings."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from pipelines.data import audio
from pipelines.data.audio import SpeechConfig, read_speech
from pipelines.errors import RejectedInput


def _tone(duration_s: float, fs_hz: int, amplitude: float = 0.3, freq_hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(duration_s * fs_hz)) / fs_hz
    return (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def test_stereo_is_downmixed_to_the_channel_mean(tmp_path):
    left = _tone(0.5, 16000)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, 0.5 * left], axis=1), 16000, subtype="FLOAT")
    np.testing.assert_allclose(audio.downmix(np.stack([left, 0.5 * left], axis=1)), 0.75 * left, atol=1e-7)
    (sample,) = read_speech(path, SpeechConfig(trim_silence=False))
    assert sample.array.ndim == 1 and sample.meta["source_channels"] == 2


def test_8khz_is_resampled_to_16khz_with_twice_the_samples(tmp_path):
    assert audio.resample(_tone(0.1, 8000), 8000, 16000).size == 1600
    path = tmp_path / "phone.wav"
    sf.write(path, _tone(0.75, 8000), 8000, subtype="PCM_16")
    (sample,) = read_speech(path, SpeechConfig(trim_silence=False))
    assert sample.array.size == 2 * 6000 == sample.meta["n_samples"]
    assert sample.meta["source_fs_hz"] == 8000 and sample.array.dtype == np.float16


def test_resampling_keeps_a_tone_below_nyquist():
    out = audio.resample(_tone(1.0, 8000, freq_hz=1000), 8000, 16000)
    spectrum = np.abs(np.fft.rfft(out))
    assert abs(np.argmax(spectrum) * 16000 / out.size - 1000) < 2


def test_leading_and_trailing_silence_is_trimmed(tmp_path):
    fs = 16000
    signal = np.concatenate([np.zeros(fs // 2), _tone(0.5, fs), np.zeros(fs // 2)]).astype(np.float32)
    path = tmp_path / "padded.flac"
    sf.write(path, signal, fs)
    cfg = SpeechConfig(trim_keep_s=0.05)
    (sample,) = read_speech(path, cfg)
    # 0.5 s of speech + the kept margin on both sides; frames straddling an edge add at most one frame each.
    assert 0.6 - 1e-6 <= sample.meta["duration_s"] <= 0.6 + 2 * cfg.trim_frame_s


@pytest.mark.parametrize(
    ("samples", "reason"),
    [(np.zeros(16000, np.float32), "silent audio"), (np.zeros(0, np.float32), "empty audio")],
)
def test_silent_or_empty_recordings_are_rejected(tmp_path, samples, reason):
    path = tmp_path / "quiet.wav"
    sf.write(path, samples, 16000, subtype="PCM_16")
    with pytest.raises(RejectedInput, match=reason):
        read_speech(path, SpeechConfig())


def test_truncated_wav_is_rejected_not_silently_shortened(tmp_path):
    path = tmp_path / "cut.wav"
    sf.write(path, _tone(0.5, 16000), 16000, subtype="PCM_16")
    path.write_bytes(path.read_bytes()[:4000])
    with pytest.raises(RejectedInput, match="truncated file"):
        read_speech(path, SpeechConfig())


def test_reasons_do_not_quote_the_file_path(tmp_path):
    path = tmp_path / "MRN12345.wav"
    path.write_bytes(b"\x00\x01garbage" * 50)
    with pytest.raises(RejectedInput) as caught:
        read_speech(path, SpeechConfig())
    assert "MRN12345" not in caught.value.reason and "undecodable audio" in caught.value.reason


@pytest.mark.parametrize("amplitude", [0.02, 0.5])
def test_loudness_is_normalised_to_the_target(tmp_path, amplitude):
    path = tmp_path / "level.wav"
    sf.write(path, _tone(1.0, 16000, amplitude=amplitude), 16000, subtype="FLOAT")
    cfg = SpeechConfig(target_lufs=-23.0)
    (sample,) = read_speech(path, cfg)
    assert audio.loudness_lufs(sample.array.astype(np.float32), 16000) == pytest.approx(-23.0, abs=0.3)


def test_normalisation_never_clips():
    spiky = np.zeros(8000, np.float32)
    spiky[::800] = 0.5  # very low loudness, high peaks: the loudness gain would clip
    out, _, _ = audio.normalise_loudness(spiky, 16000, target_lufs=-10.0, peak_limit=0.99)
    assert np.max(np.abs(out)) == pytest.approx(0.99, rel=1e-5)


def test_clips_shorter_than_one_bs1770_block_are_measured():
    short, long = _tone(0.2, 16000), _tone(1.0, 16000)
    assert audio.loudness_lufs(short, 16000) == pytest.approx(audio.loudness_lufs(long, 16000), abs=0.5)


def test_real_fsdd_recordings_decode_to_16khz(shared_data):
    files = sorted((shared_data / "fsdd" / "recordings").glob("*.wav"))[:6]
    assert files, "FSDD recordings missing"
    for path in files:
        info = sf.info(path)
        (sample,) = read_speech(path, SpeechConfig())
        assert sample.array.dtype == np.float16 and np.isfinite(sample.array.astype(np.float32)).all()
        assert float(np.max(np.abs(sample.array.astype(np.float32)))) <= 0.99 + 1e-3
        # trimming can only shorten; resampling doubles 8 kHz
        assert sample.meta["n_samples"] <= 2 * info.frames + 1


def _two_pass_reference(path, cfg: SpeechConfig) -> tuple[np.ndarray, dict]:
    """The reader as it was: ``sf.info`` for the header, then ``sf.read`` opening the file again."""
    info = sf.info(str(path))
    data, fs_in_hz = sf.read(path, frames=info.frames + 1, dtype="float32", always_2d=True)
    mono = audio.downmix(data)
    wave = audio.resample(mono, int(fs_in_hz), cfg.fs_hz)
    wave = audio.trim_silence(wave, cfg.fs_hz, cfg.trim_top_db, cfg.trim_frame_s, cfg.trim_keep_s)
    wave, lufs, gain_db = audio.normalise_loudness(wave, cfg.fs_hz, cfg.target_lufs, cfg.peak_limit)
    meta = {"source_fs_hz": fs_in_hz, "source_channels": data.shape[1], "input_lufs": round(lufs, 2)}
    return wave.astype(np.float16), {**meta, "gain_db": round(gain_db, 2)}


@pytest.mark.parametrize(
    ("fs_hz", "channels", "fmt", "subtype"),
    [
        (8000, 1, "WAV", "PCM_16"),
        (16000, 1, "FLAC", "PCM_24"),
        (44100, 2, "WAV", "FLOAT"),
        (22050, 2, "OGG", None),
    ],
)
def test_reading_the_file_once_gives_what_the_two_pass_read_gave(tmp_path, fs_hz, channels, fmt, subtype):
    rng = np.random.default_rng(fs_hz)
    speech = _tone(0.6, fs_hz, amplitude=0.25, freq_hz=310.0) + rng.normal(0, 0.01, int(0.6 * fs_hz))
    wave = np.concatenate([np.zeros(fs_hz // 5), speech, np.zeros(fs_hz // 5)]).astype(np.float32)
    path = tmp_path / f"rec.{fmt.lower()}"
    sf.write(
        path,
        np.stack([wave, 0.3 * wave], axis=1) if channels == 2 else wave,
        fs_hz,
        format=fmt,
        subtype=subtype,
    )
    cfg = SpeechConfig()
    (sample,) = read_speech(path, cfg)
    expected, meta = _two_pass_reference(path, cfg)
    assert sample.array.dtype == expected.dtype and sample.array.tobytes() == expected.tobytes()
    assert {k: sample.meta[k] for k in meta} == meta
