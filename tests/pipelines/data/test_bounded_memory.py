"""Hostile headers: a file that declares hours of audio, billions of ECG samples or a 65535^2 image
is rejected from its header, with the declared numbers in the reason, before anything is decoded.

The hostile files are sparse (their declared bytes exist but occupy no disk) or simply short, so the
tests stay fast; the peak-RSS figures are measured by ``scripts/hostile_rss.py``, not asserted here.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pydicom
import pytest

from pipelines.data.audio import SpeechConfig, read_speech
from pipelines.data.ecg import EcgConfig, read_ecg
from pipelines.errors import RejectedInput
from tests.pipelines.data.test_ecg import tones, write_ecg_dicom, write_wfdb


def sparse_wav(path: Path, frames: int, fs_hz: int, channels: int = 1) -> Path:
    """A valid 16-bit PCM WAV header declaring ``frames``; the data is a hole of zeros on disk."""
    data_bytes = frames * channels * 2
    header = b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE"
    header += b"fmt " + struct.pack(
        "<IHHIIHH", 16, 1, channels, fs_hz, fs_hz * channels * 2, channels * 2, 16
    )
    header += b"data" + struct.pack("<I", data_bytes)
    with open(path, "wb") as handle:
        handle.write(header)
        handle.truncate(len(header) + data_bytes)
    return path


def test_wav_declaring_4_4_hours_is_rejected_from_its_header(tmp_path):
    frames = int(4.4 * 3600 * 16000)
    path = sparse_wav(tmp_path / "long.wav", frames, 16000)
    with pytest.raises(RejectedInput) as info:
        read_speech(path, SpeechConfig())
    assert f"header declares {frames} frames at 16000 Hz = 15840.0 s" in info.value.reason
    assert "not decoded" in info.value.reason


def test_wav_declaring_too_many_channels_is_rejected_by_its_decoded_size(tmp_path):
    path = sparse_wav(tmp_path / "wide.wav", 16000 * 30, 16000, channels=64)
    with pytest.raises(
        RejectedInput, match=r"480000 frames x 64 channels = 117 MB as float32 > max_decoded_mb=24"
    ):
        read_speech(path, SpeechConfig())


def test_wav_within_the_limits_still_decodes(tmp_path):
    import soundfile as sf

    t = np.arange(16000) / 16000
    sf.write(tmp_path / "ok.wav", (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000)
    (sample,) = read_speech(tmp_path / "ok.wav", SpeechConfig(trim_silence=False))
    assert sample.meta["n_samples"] == 16000


def test_wfdb_header_declaring_9e9_samples_is_rejected_before_reading_the_signal(tmp_path):
    good = write_wfdb(tmp_path, "huge", tones(5000, 500, ["I", "II"]), ["I", "II"], 500)
    lines = good.read_text().splitlines()
    lines[0] = "huge 2 500 9000000000"
    good.write_text("\n".join(lines) + "\n")
    with pytest.raises(RejectedInput) as info:
        read_ecg(good, EcgConfig())
    reason = info.value.reason
    assert "header declares 9000000000 samples x 2 signals (36000000000 bytes" in reason
    assert "the file has 20000 bytes" in reason and "not decoded" in reason


def test_long_wfdb_record_is_decoded_only_up_to_max_read_s(tmp_path):
    hea = write_wfdb(tmp_path, "holter", tones(500 * 60, 500, ["I", "II"]), ["I", "II"], 500)
    crops = read_ecg(hea, EcgConfig(max_read_s=25.0))
    assert crops[0].meta["source_declared_s"] == 60.0 and crops[0].meta["source_duration_s"] == 25.0
    assert max(c.meta["crop_start_s"] for c in crops) < 25.0


def test_ecg_dicom_declaring_a_huge_waveform_is_rejected_from_its_header(tmp_path):
    path = write_ecg_dicom(tmp_path / "ecg.dcm", np.zeros((5000, 2), np.int16), 500, ["Lead I", "Lead II"])
    ds = pydicom.dcmread(path)
    ds.WaveformSequence[0].NumberOfWaveformSamples = 4_000_000_000
    ds.save_as(path)
    with pytest.raises(RejectedInput, match=r"waveform declares 4000000000 samples x 2 channels"):
        read_ecg(path, EcgConfig())


def png_header(path: Path, width_px: int, height_px: int) -> Path:
    """A grey 8-bit PNG whose IHDR declares ``width_px`` x ``height_px`` over a few bytes of data."""
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width_px, height_px, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)))
    return path


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize(
    ("side_px", "expected"), [(10_000, "10000 x 10000 pixels x 1 bands"), (60_000, "too large")]
)
def test_png_declaring_a_huge_image_is_rejected_before_decoding(tmp_path, side_px, expected):
    from pipelines.data.xray import XrayConfig, read_xray

    with pytest.raises(RejectedInput, match=expected):
        read_xray(png_header(tmp_path / "huge.png", side_px, side_px), XrayConfig())


def test_oversized_wfdb_header_is_rejected_unparsed(tmp_path):
    hea = write_wfdb(tmp_path, "big", tones(5000, 500, ["I", "II"]), ["I", "II"], 500)
    with open(hea, "a") as handle:
        handle.write("# padding\n" * 200_000)  # 2 MB of comments
    with pytest.raises(RejectedInput, match=r"WFDB header of 2\d{6} bytes > max_header_bytes=1048576"):
        read_ecg(hea, EcgConfig())


def test_wfdb_header_without_a_length_is_read_only_when_its_signal_file_fits_the_bound(tmp_path):
    hea = write_wfdb(tmp_path, "nolen", tones(500 * 60, 500, ["I", "II"]), ["I", "II"], 500)
    lines = hea.read_text().splitlines()
    lines[0] = "nolen 2 500"
    hea.write_text("\n".join(lines) + "\n")
    assert len(read_ecg(hea, EcgConfig())) == 6  # wfdb infers the length; within the bound it is read
    with pytest.raises(RejectedInput, match="no length and its signal file holds 30000 samples x 2 signals"):
        read_ecg(hea, EcgConfig(max_read_s=25.0))
