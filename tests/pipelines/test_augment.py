"""Training-time augmentations: speech speed perturbation, frequency masks, and their determinism."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from pipelines.data.augment import (
    AugmentConfig,
    augment_speech,
    frequency_mask,
    speed_perturb,
    step_generator,
)

FS_HZ = 16000


def _tones(n: int, length: int, width: int, freq_hz: float = 440.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` zero-padded sine bursts of ``length`` samples in a batch ``width`` wide."""
    t = torch.arange(length, dtype=torch.float32) / FS_HZ
    waves = torch.zeros(n, width)
    waves[:, :length] = torch.sin(2 * torch.pi * freq_hz * t)
    return waves, torch.full((n,), length)


def _dominant_hz(wave: torch.Tensor) -> float:
    spectrum = torch.fft.rfft(wave).abs()
    return float(torch.argmax(spectrum)) * FS_HZ / wave.shape[0]


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_perturbation_divides_the_length_and_multiplies_the_pitch_by_the_factor(factor):
    waves, lengths = _tones(2, 8000, 16000)
    out, new_lengths = speed_perturb(waves, lengths, FS_HZ, [factor], step_generator(0, 0, 0))
    assert out.shape == waves.shape
    assert new_lengths.tolist() == [round(8000 / factor)] * 2
    # Padding stays zero after the new end of speech.
    assert torch.all(out[:, int(new_lengths[0]) :] == 0)
    # Playing faster by `factor` moves every frequency up by `factor` (within one FFT bin).
    assert _dominant_hz(out[0]) == pytest.approx(440.0 * factor, abs=FS_HZ / 16000)


def test_a_slowed_utterance_is_cropped_to_the_batch_width():
    waves, lengths = _tones(1, 16000, 16000)
    out, new_lengths = speed_perturb(waves, lengths, FS_HZ, [0.9], step_generator(0, 0, 0))
    assert out.shape == (1, 16000) and int(new_lengths[0]) == 16000


def test_speed_factors_of_one_are_the_identity_and_draw_nothing():
    waves, lengths = _tones(3, 4000, 6000)
    generator = step_generator(0, 0, 0)
    out, new_lengths = speed_perturb(waves, lengths, FS_HZ, [1.0], generator)
    assert out is waves and new_lengths is lengths
    # The generator was not advanced: later augmentations draw what they drew before this existed.
    assert torch.equal(torch.rand(4, generator=generator), torch.rand(4, generator=step_generator(0, 0, 0)))


def test_each_utterance_gets_one_of_the_configured_factors():
    waves, lengths = _tones(64, 8000, 16000)
    _, new_lengths = speed_perturb(waves, lengths, FS_HZ, [0.9, 1.0, 1.1], step_generator(3, 1, 2))
    expected = {round(8000 / f) for f in (0.9, 1.0, 1.1)}
    assert set(new_lengths.tolist()) == expected


def test_frequency_mask_removes_a_band_and_keeps_padding_zero():
    waves, lengths = _tones(1, 8000, 16000, freq_hz=1000.0)
    # One mask as wide as the whole spectrum removes the tone entirely.
    out = frequency_mask(waves, lengths, FS_HZ, 1, FS_HZ, step_generator(0, 0, 0))
    assert out.shape == waves.shape and torch.all(out[:, 8000:] == 0)
    assert float(out.abs().max()) < float(waves.abs().max())


def test_speech_augmentation_is_deterministic_given_the_step_seed():
    rng = np.random.default_rng(0)
    waves = torch.from_numpy(rng.standard_normal((4, 12000)).astype(np.float32))
    lengths = torch.tensor([12000, 9000, 6000, 3000])
    cfg = AugmentConfig(speech_speed_factors=[0.9, 1.0, 1.1], speech_freq_masks=2)
    a = augment_speech(waves, lengths, FS_HZ, cfg, step_generator(7, 2, 5))
    b = augment_speech(waves, lengths, FS_HZ, cfg, step_generator(7, 2, 5))
    c = augment_speech(waves, lengths, FS_HZ, cfg, step_generator(7, 2, 6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_speech_augmentation_with_every_option_off_is_the_identity():
    waves, lengths = _tones(2, 8000, 12000)
    off = AugmentConfig(speech_noise_snr_db=float("inf"), speech_time_masks=0)
    out, new_lengths = augment_speech(waves, lengths, FS_HZ, off, step_generator(0, 0, 0))
    assert torch.equal(out, waves) and torch.equal(new_lengths, lengths)


def test_speed_perturbation_and_frequency_masks_are_off_by_default():
    cfg = AugmentConfig()
    assert cfg.speech_speed_factors == [1.0] and cfg.speech_freq_masks == 0
    assert dataclasses.replace(cfg, speech_speed_factors=[0.9, 1.1]).speech_speed_factors == [0.9, 1.1]
