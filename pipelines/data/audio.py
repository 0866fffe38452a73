"""Speech reader: WAV/FLAC/OGG -> mono 16 kHz, silence-trimmed, loudness-normalised float16 waveform.

I/O is ``read_speech`` (soundfile, i.e. libsndfile); everything else is a pure function on float32
arrays with the sampling rate in the argument names. Order of operations and why:

1. downmix to mono (mean of channels: keeps the level of a centred voice),
2. reject silent/empty recordings before spending time on them,
3. resample to ``fs_hz`` with torchaudio's windowed-sinc resampler (anti-aliased, exact rational ratio),
4. trim leading/trailing silence by frame energy relative to the loudest frame (as librosa's ``trim``),
5. normalise loudness to ``target_lufs`` (ITU-R BS.1770-4 K-weighted loudness; EBU R128 uses -23 LUFS),
   then scale down if a peak would exceed ``peak_limit`` (no clipping).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import struct
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
import torchaudio
from numpy.lib.stride_tricks import sliding_window_view
from scipy import signal as sps

from pipelines.data.manifest import Decoded
from pipelines.errors import RejectedInput

# BS.1770-4: loudness is measured over 400 ms blocks overlapping by 75 %, gated at -70 LUFS
# (shorter clips are measured as one ungated block; a partial last block is not used).
_BS1770_BLOCK_S = 0.4
_BS1770_OVERLAP = 0.75
_BS1770_ABSOLUTE_GATE_LUFS = -70.0


@dataclasses.dataclass
class SpeechConfig:
    """How speech is decoded and normalised (also written to ``normalisation.json``)."""

    fs_hz: int = dataclasses.field(default=16000, metadata={"help": "output sampling rate"})
    trim_silence: bool = dataclasses.field(default=True, metadata={"help": "trim leading/trailing silence"})
    trim_top_db: float = dataclasses.field(
        default=40.0, metadata={"help": "frames this many dB below the loudest frame count as silence"}
    )
    trim_frame_s: float = dataclasses.field(default=0.025, metadata={"help": "frame length for trimming"})
    trim_keep_s: float = dataclasses.field(default=0.05, metadata={"help": "margin kept around the speech"})
    silence_dbfs: float = dataclasses.field(
        default=-60.0, metadata={"help": "a recording whose peak is below this is rejected as silent"}
    )
    target_lufs: float = dataclasses.field(default=-23.0, metadata={"help": "loudness target (EBU R128)"})
    peak_limit: float = dataclasses.field(default=0.99, metadata={"help": "max |sample| after normalisation"})
    min_duration_s: float = dataclasses.field(default=0.05, metadata={"help": "shorter speech is rejected"})
    max_duration_s: float = dataclasses.field(default=30.0, metadata={"help": "longer speech is rejected"})
    max_source_duration_s: float = dataclasses.field(
        default=60.0,
        metadata={
            "help": "recordings whose header declares more are rejected before decoding (room for "
            "silence around max_duration_s of speech; keeps a worker's peak RSS under 1 GB)"
        },
    )
    max_decoded_mb: float = dataclasses.field(
        default=24.0,
        metadata={
            "help": "frames x channels x 4 bytes (float32) above this is rejected before decoding "
            "(24 MB: 60 s of 48 kHz stereo; the resampler needs about 13x the mono input)"
        },
    )

    def __post_init__(self) -> None:
        if self.max_source_duration_s < self.max_duration_s:
            raise ValueError(
                f"max_source_duration_s={self.max_source_duration_s} is below max_duration_s={self.max_duration_s}"
            )
        if self.max_decoded_mb <= 0:
            raise ValueError(f"max_decoded_mb must be positive, got {self.max_decoded_mb}")


def speech_normalisation(cfg: SpeechConfig) -> dict[str, object]:
    """What the stored arrays mean, written by the stage to ``normalisation.json``."""
    return {
        "modality": "speech",
        "fs_hz": cfg.fs_hz,
        "dtype": "float16",
        "layout": "(N, max_samples) per shard, zero-padded at the end; n_samples = real length",
        "channels": "mono (mean of channels)",
        "resampling": "torchaudio.transforms.Resample (windowed sinc)",
        "trim": {"enabled": cfg.trim_silence, "top_db": cfg.trim_top_db, "keep_s": cfg.trim_keep_s},
        "loudness": f"ITU-R BS.1770-4 to {cfg.target_lufs} LUFS, peak <= {cfg.peak_limit}",
    }


# --------------------------------------------------------------------------- pure functions
def downmix(audio: np.ndarray) -> np.ndarray:
    """``(n_samples, channels)`` or ``(n_samples,)`` -> mono ``(n_samples,)`` float32 (channel mean)."""
    audio = np.asarray(audio, dtype=np.float32)
    return audio.mean(axis=1, dtype=np.float32) if audio.ndim == 2 else audio


def peak_dbfs(audio: np.ndarray) -> float:
    """Peak level in dB relative to full scale (1.0); ``-inf`` for an all-zero signal."""
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    return 20.0 * math.log10(peak) if peak > 0 else -math.inf


@functools.lru_cache(maxsize=16)
def cached_resampler(fs_in_hz: int, fs_out_hz: int) -> torchaudio.transforms.Resample:
    """torchaudio's band-limited resampler for one rate pair. The sinc kernel depends only on the
    pair, so it is built once per process (preprocessing workers, training-time speed perturbation)."""
    return torchaudio.transforms.Resample(orig_freq=fs_in_hz, new_freq=fs_out_hz)


def resample(audio: np.ndarray, fs_in_hz: int, fs_out_hz: int) -> np.ndarray:
    """Band-limited resampling (torchaudio, Hann-windowed sinc); length ``ceil(n * fs_out / fs_in)``."""
    if fs_in_hz == fs_out_hz:
        return np.asarray(audio, dtype=np.float32)
    with torch.no_grad():
        out = cached_resampler(int(fs_in_hz), int(fs_out_hz))(torch.from_numpy(np.ascontiguousarray(audio)))
    return out.numpy().astype(np.float32, copy=False)


def trim_silence(audio: np.ndarray, fs_hz: int, top_db: float, frame_s: float, keep_s: float) -> np.ndarray:
    """Drop leading/trailing frames whose RMS is more than ``top_db`` below the loudest frame.

    Frames are ``frame_s`` long with hop ``frame_s / 2``; ``keep_s`` of margin is kept on each side so
    that soft onsets (fricatives) survive.
    """
    frame = max(1, int(round(frame_s * fs_hz)))
    hop = max(1, frame // 2)
    if audio.size <= frame:
        return audio
    frames = sliding_window_view(audio, frame)[::hop]  # a view: no copy of the overlapping frames
    rms = np.sqrt(np.mean(np.square(frames, dtype=np.float64), axis=1))
    if rms.max() <= 0:
        return audio[:0]
    loud = np.flatnonzero(20 * np.log10(np.maximum(rms, 1e-12) / rms.max()) > -top_db)
    keep = int(round(keep_s * fs_hz))
    start = max(0, loud[0] * hop - keep)
    stop = min(audio.size, loud[-1] * hop + frame + keep)
    return audio[start:stop]


@functools.lru_cache(maxsize=16)
def _k_weighting(fs_hz: int) -> np.ndarray:
    """The K-weighting filter of ITU-R BS.1770-4 at ``fs_hz``, as second-order sections for ``sosfilt``.

    BS.1770-4 tabulates the two biquads (pre-filter shelf, Table 1; RLB high-pass, Table 2) at 48 kHz
    only. Both are bilinear transforms of analogue prototypes, which are redesigned here for the actual
    rate: a high shelf at 1681.97 Hz (+4.0 dB, Q 0.7072) and a 38.135 Hz high-pass (Q 0.5003) whose
    numerator stays ``[1, -2, 1]`` as Table 2 has it (the parameters of libebur128, and of pyloudnorm's
    ``filter_class="DeMan"``). At 48 kHz they reproduce the tabulated coefficients to 1e-14 and a
    997 Hz sine at 0 dBFS reads -3.010 LKFS, as the standard states; the bilinear warping moves that by
    at most 0.04 LU at 8-16 kHz. (The RBJ-cookbook shelf at 1500 Hz / 4 dB that torchaudio and
    pyloudnorm's default use reads it 0.04 LU low at 48 kHz, 0.07 at 16 kHz, 0.18 at 8 kHz.)
    """
    k = math.tan(math.pi * 1681.974450955533 / fs_hz)
    q = 0.7071752369554196
    v_high = 10 ** (3.999843853973347 / 20)
    v_band = v_high**0.4996667741545416
    a0 = 1 + k / q + k * k
    shelf = [
        (v_high + v_band * k / q + k * k) / a0,
        2 * (k * k - v_high) / a0,
        (v_high - v_band * k / q + k * k) / a0,
        1.0,
        2 * (k * k - 1) / a0,
        (1 - k / q + k * k) / a0,
    ]
    k = math.tan(math.pi * 38.13547087602444 / fs_hz)
    q = 0.5003270373238773
    a0 = 1 + k / q + k * k
    high_pass = [1.0, -2.0, 1.0, 1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0]
    return np.array([shelf, high_pass])


def loudness_lufs(audio: np.ndarray, fs_hz: int) -> float:
    """Integrated loudness of a mono signal per ITU-R BS.1770-4, in LUFS (LKFS).

    K-weighting (``_k_weighting``, designed for ``fs_hz``; no clipping of the weighted signal, whose
    shelf may lift it above full scale), then 400 ms blocks with 75 % overlap. Only complete blocks are
    measured ("incomplete gating blocks at the end of the measurement interval are not used"), so a
    steady tone reads the same whatever its length; blocks are gated at -70 LUFS, then 10 LU below the
    mean of the blocks that passed (Annex 1, eqs. 3-7).
    A clip shorter than one block has no gating block, so the standard defines no integrated value
    (pyloudnorm refuses it, libebur128 returns -inf); it is measured here as one ungated block over
    its whole length, ``-0.691 + 10 log10(mean(y_k^2))`` (eq. 2), so that short utterances still get a
    gain.
    """
    weighted = sps.sosfilt(_k_weighting(int(fs_hz)), np.asarray(audio, dtype=np.float64))
    square = np.square(weighted)
    block = int(round(_BS1770_BLOCK_S * fs_hz))
    if square.size < block:
        mean_square = float(np.mean(square)) if square.size else 0.0
        return -0.691 + 10 * math.log10(mean_square) if mean_square > 0 else -math.inf
    step = int(round(block * (1 - _BS1770_OVERLAP)))
    energy = sliding_window_view(square, block)[::step].mean(axis=1)
    with np.errstate(divide="ignore"):
        block_lufs = -0.691 + 10 * np.log10(energy)
    gated = block_lufs > _BS1770_ABSOLUTE_GATE_LUFS
    if not gated.any():
        return -math.inf
    relative_gate = -0.691 + 10 * math.log10(float(energy[gated].mean())) - 10
    gated &= block_lufs > relative_gate
    return -0.691 + 10 * math.log10(float(energy[gated].mean()))


def normalise_loudness(
    audio: np.ndarray, fs_hz: int, target_lufs: float, peak_limit: float
) -> tuple[np.ndarray, float, float]:
    """Gain to ``target_lufs`` then, if needed, down to ``peak_limit``; returns (audio, input LUFS, gain dB)."""
    measured = loudness_lufs(audio, fs_hz)
    if not math.isfinite(measured):
        return audio, measured, 0.0
    gain = 10 ** ((target_lufs - measured) / 20)
    peak = float(np.max(np.abs(audio))) * gain
    if peak > peak_limit:
        gain *= peak_limit / peak
    return (audio * gain).astype(np.float32), measured, 20 * math.log10(gain)


# --------------------------------------------------------------------------- I/O
def wav_truncation(path: Path) -> str | None:
    """A reason if a RIFF/WAVE file's ``data`` chunk declares more bytes than the file holds.

    libsndfile silently clamps such files, so a cut-off upload would otherwise pass as a shorter one.
    Streaming writers that leave the size 0 or 0xFFFFFFFF are not flagged.
    """
    size = path.stat().st_size
    with open(path, "rb") as handle:
        header = handle.read(12)
        if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
            return None
        offset = 12
        while offset + 8 <= size:
            handle.seek(offset)
            chunk_id, chunk_bytes = struct.unpack("<4sI", handle.read(8))
            if chunk_id == b"data":
                present = size - offset - 8
                if chunk_bytes not in (0, 0xFFFFFFFF) and chunk_bytes > present:
                    return f"truncated file: WAV data chunk declares {chunk_bytes} bytes, {present} present"
                return None
            offset += 8 + chunk_bytes + (chunk_bytes & 1)
    return None


def _check_declared_size(info: Any, cfg: SpeechConfig) -> int:
    """Frames to read at most, after rejecting from the header alone a recording that is too long or
    too large to decode (a header can declare hours that a worker would otherwise hold in memory).
    ``info`` is the open ``sf.SoundFile`` (or an ``sf.info``): both carry the header's fields."""
    if info.samplerate <= 0 or info.channels <= 0:
        raise RejectedInput(
            f"invalid header ({info.samplerate} Hz, {info.channels} channels): not decoded", "decode"
        )
    duration_s = info.frames / info.samplerate
    if duration_s > cfg.max_source_duration_s:
        raise RejectedInput(
            f"header declares {info.frames} frames at {info.samplerate} Hz = {duration_s:.1f} s "
            f"> max_source_duration_s={cfg.max_source_duration_s:g}: not decoded",
            "decode",
        )
    decoded_mb = info.frames * info.channels * 4 / 2**20
    if decoded_mb > cfg.max_decoded_mb:
        raise RejectedInput(
            f"header declares {info.frames} frames x {info.channels} channels = {decoded_mb:.0f} MB as float32 "
            f"> max_decoded_mb={cfg.max_decoded_mb:g}: not decoded",
            "decode",
        )
    return info.frames


def read_speech(path: Path, cfg: SpeechConfig) -> list[Decoded]:
    """Decode one recording; raises ``RejectedInput`` with a reason for anything unusable.

    Audio files carry no subject IDs, so ``raw_subject``/``raw_study`` are left to the source.
    """
    path = Path(path)
    if path.stat().st_size == 0:
        raise RejectedInput("empty file (0 bytes)", "decode")
    if path.suffix.lower() == ".wav" and (reason := wav_truncation(path)):
        raise RejectedInput(reason, "decode")
    try:
        # One open: the header is checked on the open file, then the same handle decodes.
        with sf.SoundFile(path) as handle:
            max_frames = _check_declared_size(handle, cfg)
            # Read one frame past the bound: a stream longer than its header said is caught, not decoded.
            audio = handle.read(frames=max_frames + 1, dtype="float32", always_2d=True)
            fs_in_hz = handle.samplerate
    except (sf.LibsndfileError, RuntimeError, ValueError) as err:
        detail = getattr(err, "error_string", None) or type(err).__name__
        raise RejectedInput(f"undecodable audio (libsndfile: {detail})", "decode") from None
    if audio.shape[0] > max_frames:
        raise RejectedInput(
            f"audio holds more than its header's {max_frames} frames (read stopped at {max_frames}): "
            "inconsistent file, not decoded further",
            "decode",
        )
    channels = audio.shape[1]
    if audio.shape[0] == 0:
        raise RejectedInput("empty audio (0 samples)", "decode")
    if not np.isfinite(audio).all():
        raise RejectedInput("audio contains NaN or infinite samples", "decode")
    mono = downmix(audio)
    del audio  # each array is released as soon as the next stage has its input: peak RSS is per file
    level = peak_dbfs(mono)
    if level < cfg.silence_dbfs:
        raise RejectedInput(f"silent audio (peak {level:.1f} dBFS < {cfg.silence_dbfs:g} dBFS)", "clean")
    wave = resample(mono, int(fs_in_hz), cfg.fs_hz)
    del mono
    if cfg.trim_silence:
        wave = trim_silence(wave, cfg.fs_hz, cfg.trim_top_db, cfg.trim_frame_s, cfg.trim_keep_s)
    duration_s = wave.size / cfg.fs_hz
    if duration_s < cfg.min_duration_s:
        raise RejectedInput(
            f"too short after trimming ({duration_s:.3f} s < {cfg.min_duration_s:g} s)", "clean"
        )
    if duration_s > cfg.max_duration_s:
        raise RejectedInput(f"too long ({duration_s:.1f} s > max_duration_s={cfg.max_duration_s:g})", "clean")
    wave, input_lufs, gain_db = normalise_loudness(wave, cfg.fs_hz, cfg.target_lufs, cfg.peak_limit)
    meta: dict[str, object] = {
        "n_samples": int(wave.size),
        "duration_s": round(duration_s, 4),
        "source_fs_hz": int(fs_in_hz),
        "source_channels": int(channels),
        "input_lufs": round(input_lufs, 2),
        "gain_db": round(gain_db, 2),
    }
    return [Decoded(array=wave.astype(np.float16), meta=meta)]
