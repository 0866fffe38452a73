"""Spoken clinical commands synthesised with espeak-ng, with noise, at 16 kHz or 8 kHz.

espeak-ng writes 22.05 kHz mono WAV; we resample with a polyphase filter (``scipy.signal.resample_poly``),
add white noise at a chosen SNR and return float32 audio. 8 kHz mimics telephone/radio channels.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

INTENTS: dict[str, tuple[str, ...]] = {
    "start_compressions": ("start chest compressions", "begin CPR now", "start compressions"),
    "check_blood_pressure": ("check blood pressure", "get me a blood pressure", "take a BP please"),
    "call_rapid_response": (
        "call the rapid response team",
        "page rapid response",
        "get the rapid response team",
    ),
    "give_oxygen": ("give oxygen", "start oxygen at two litres", "put the patient on oxygen"),
    "get_ecg": ("get a twelve lead ECG", "do an ECG", "run a twelve lead"),
    "order_chest_xray": ("order a chest x-ray", "get a portable chest film", "we need a chest x-ray"),
    "charge_defibrillator": (
        "charge the defibrillator",
        "charge to two hundred joules",
        "charge the paddles",
    ),
    "check_glucose": ("check blood glucose", "get a finger stick glucose", "check the sugar"),
    "give_epinephrine": ("give one milligram of epinephrine", "push epi", "epinephrine one milligram now"),
    "check_pulse": ("check for a pulse", "pulse check", "does the patient have a pulse"),
}
VOICES = (
    "en",
    "en-us",
    "en-gb",
    "en+f3",
    "en+m2",
    "en-us+f2",
    "en-gb+m3",
    "en+f4",
    "en-us+m4",
    "en-gb-scotland",
)
SAMPLE_RATES_HZ = (16000, 8000)


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def synthesize(text: str, voice: str, rate_wpm: int, pitch: int) -> tuple[np.ndarray, int]:
    """Run ``espeak-ng -w out.wav -v voice -s rate -p pitch text``; returns (float32 audio, fs_hz)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "utterance.wav"
        subprocess.run(
            ["espeak-ng", "-w", str(path), "-v", voice, "-s", str(rate_wpm), "-p", str(pitch), text],
            check=True,
            capture_output=True,
            timeout=60,
        )
        audio, fs_hz = sf.read(path, dtype="float32")
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    return audio, int(fs_hz)


def resample(audio: np.ndarray, fs_in_hz: int, fs_out_hz: int) -> np.ndarray:
    """Polyphase resampling by the exact rational factor fs_out/fs_in (anti-aliased)."""
    if fs_in_hz == fs_out_hz:
        return audio.astype(np.float32)
    ratio = Fraction(fs_out_hz, fs_in_hz)
    return resample_poly(audio, ratio.numerator, ratio.denominator).astype(np.float32)


def add_noise(audio: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """White Gaussian noise at ``snr_db`` relative to the signal's mean power; peak kept below 1."""
    power = float(np.mean(audio.astype(np.float64) ** 2)) or 1e-8
    noisy = audio + rng.standard_normal(audio.shape) * np.sqrt(power / 10 ** (snr_db / 10))
    peak = float(np.max(np.abs(noisy))) or 1.0
    return (noisy * min(1.0, 0.95 / peak)).astype(np.float32)


def trim_silence(audio: np.ndarray, fs_hz: int, threshold: float = 0.01, keep_s: float = 0.1) -> np.ndarray:
    """Drop leading/trailing silence beyond ``keep_s`` (espeak pads utterances)."""
    loud = np.flatnonzero(np.abs(audio) > threshold)
    if loud.size == 0:
        return audio
    keep = int(keep_s * fs_hz)
    return audio[max(loud[0] - keep, 0) : loud[-1] + keep]


@dataclasses.dataclass(frozen=True)
class Utterance:
    path: str  # relative to speech/
    speaker: str
    voice: str
    transcript: str
    intent: str
    rate_wpm: int
    pitch: int
    sample_rate_hz: int
    snr_db: float
    seed: int


def plan_utterances(seed: int, n_utterances: int, n_speakers: int = 12) -> list[Utterance]:
    """``n_utterances`` commands spread over ``n_speakers`` synthetic speakers (voice + pitch)."""
    rng = np.random.default_rng(seed)
    speakers = [
        (
            f"spk{k:02d}",
            VOICES[k % len(VOICES)],
            int(rng.integers(25, 75)),
            int(rng.choice(SAMPLE_RATES_HZ, p=[0.7, 0.3])),
        )
        for k in range(n_speakers)
    ]
    intents = sorted(INTENTS)
    out = []
    for i in range(n_utterances):
        speaker, voice, pitch, fs_hz = speakers[int(rng.integers(n_speakers))]
        intent = intents[i % len(intents)]
        out.append(
            Utterance(
                path=f"{speaker}/{intent}-{i:04d}.wav",
                speaker=speaker,
                voice=voice,
                transcript=str(rng.choice(INTENTS[intent])),
                intent=intent,
                rate_wpm=int(rng.integers(130, 200)),
                pitch=int(np.clip(pitch + rng.integers(-8, 9), 0, 99)),
                sample_rate_hz=fs_hz,
                snr_db=float(rng.uniform(10.0, 30.0)),
                seed=int(rng.integers(2**31)),
            )
        )
    return out


def write_utterance(speech_root: Path, utterance: Utterance) -> Path:
    """Synthesise, trim, resample, add noise and write one 16-bit PCM WAV."""
    audio, fs_hz = synthesize(utterance.transcript, utterance.voice, utterance.rate_wpm, utterance.pitch)
    audio = resample(trim_silence(audio, fs_hz), fs_hz, utterance.sample_rate_hz)
    audio = add_noise(audio, utterance.snr_db, np.random.default_rng(utterance.seed))
    path = speech_root / utterance.path
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio, utterance.sample_rate_hz, subtype="PCM_16")
    return path
