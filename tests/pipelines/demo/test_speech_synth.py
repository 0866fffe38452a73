"""espeak-ng utterances: non-silent, at the stated rate, resampled exactly."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from pipelines.demo import speech

pytestmark = pytest.mark.skipif(not speech.espeak_available(), reason="espeak-ng not installed")


def test_utterances_are_non_silent_wavs_at_their_rate(tmp_path):
    plans = speech.plan_utterances(seed=3, n_utterances=4, n_speakers=4)
    plans = [plans[0], *(p for p in plans if p.sample_rate_hz != plans[0].sample_rate_hz)][:2]
    plans.append(speech.Utterance(**{**plans[0].__dict__, "sample_rate_hz": 8000, "path": "x/eight.wav"}))
    for plan in plans:
        path = speech.write_utterance(tmp_path, plan)
        audio, fs_hz = sf.read(path)
        assert fs_hz == plan.sample_rate_hz
        assert 0.3 < len(audio) / fs_hz < 5.0
        assert np.sqrt(np.mean(audio**2)) > 0.02


def test_resample_keeps_duration_and_noise_sets_snr():
    fs = 22050
    tone = np.sin(2 * np.pi * 440 * np.arange(fs) / fs).astype(np.float32)
    out = speech.resample(tone, fs, 8000)
    assert len(out) == 8000
    noisy = speech.add_noise(tone, 20.0, np.random.default_rng(0))
    scale = np.dot(noisy, tone) / np.dot(tone, tone)
    snr = 10 * np.log10(np.mean((scale * tone) ** 2) / np.mean((noisy - scale * tone) ** 2))
    assert 19.0 < snr < 21.0


def test_intents_have_several_phrasings():
    assert 8 <= len(speech.INTENTS) <= 12
    assert all(len(set(p)) >= 3 for p in speech.INTENTS.values())
