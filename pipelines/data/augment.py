"""Training-time augmentations per modality (none at evaluation).

Each function takes a batch tensor and an explicit ``torch.Generator`` so that a resumed run
draws exactly the augmentations an uninterrupted run would (the generator is seeded from
``(seed, epoch, step)``), independent of data-loader workers. These are the array operations; a
collated batch is augmented view by view by ``dataset.augment_studies``, which looks each view's
operation up in the modality registry (``registry.view_kind(spec).augment``).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from pipelines.data.audio import cached_resampler


@dataclasses.dataclass
class AugmentConfig:
    enabled: bool = True
    xray_max_rotation_deg: float = 5.0
    xray_max_translation: float = 0.04
    xray_scale_range: float = 0.05
    xray_gamma_range: float = 0.2
    ecg_amplitude_range: float = 0.1
    ecg_max_shift_s: float = 0.5
    ecg_lead_dropout: float = 0.1
    speech_noise_snr_db: float = 30.0
    speech_time_masks: int = 2
    speech_max_mask_s: float = 0.1
    speech_speed_factors: list[float] = dataclasses.field(
        default_factory=lambda: [1.0],
        metadata={
            "help": "speed perturbation, one factor drawn per utterance (e.g. 0.9,1.0,1.1); [1.0] = off"
        },
    )
    speech_freq_masks: int = dataclasses.field(
        default=0, metadata={"help": "frequency bands removed per utterance (0 = off)"}
    )
    speech_max_freq_mask_hz: float = dataclasses.field(
        default=600.0, metadata={"help": "widest removed band, Hz"}
    )


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def augment_xray(images: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Small affine (rotation, translation, scale) and gamma contrast on ``[B, C, H, W]`` images in [0, 1].

    Chest radiographs vary a few degrees in rotation and a few percent in positioning and exposure; larger
    changes would move anatomy (e.g. the heart border) enough to alter the cardiothoracic ratio.
    """
    b = images.shape[0]
    angle = torch.deg2rad(_uniform(b, -cfg.xray_max_rotation_deg, cfg.xray_max_rotation_deg, generator))
    scale = 1.0 + _uniform(b, -cfg.xray_scale_range, cfg.xray_scale_range, generator)
    shift = _uniform(2 * b, -cfg.xray_max_translation, cfg.xray_max_translation, generator).view(b, 2)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    )
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    gamma = torch.exp(_uniform(b, -cfg.xray_gamma_range, cfg.xray_gamma_range, generator)).view(b, 1, 1, 1)
    return out.clamp(0, 1).pow(gamma.to(out.dtype))


def augment_ecg(
    signals: torch.Tensor,
    lead_mask: torch.Tensor,
    fs_hz: float,
    cfg: AugmentConfig,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Amplitude scaling, circular time shift and lead dropout on ``[B, 12, T]`` (at least one lead kept)."""
    b, leads, t = signals.shape
    scale = 1.0 + _uniform(b, -cfg.ecg_amplitude_range, cfg.ecg_amplitude_range, generator)
    max_shift = int(cfg.ecg_max_shift_s * fs_hz)
    shifts = (
        torch.randint(-max_shift, max_shift + 1, (b,), generator=generator) if max_shift else torch.zeros(b)
    )
    out = torch.stack([torch.roll(signals[i], int(shifts[i]), dims=-1) for i in range(b)]) * scale.view(
        b, 1, 1
    )
    drop = torch.rand(b, leads, generator=generator) < cfg.ecg_lead_dropout
    new_mask = lead_mask & ~drop
    keep_any = new_mask.any(dim=1, keepdim=True)
    new_mask = torch.where(keep_any, new_mask, lead_mask)
    return out * new_mask.unsqueeze(-1).to(out.dtype), new_mask


def speed_perturb(
    waves: torch.Tensor,
    lengths: torch.Tensor,
    fs_hz: float,
    factors: list[float],
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Speed perturbation (Ko et al. 2015, Kaldi's ``speed``) of ``[B, T]`` waveforms; returns waves and lengths.

    Each utterance gets one factor from ``factors``: its samples are read as if recorded at
    ``factor * fs_hz`` and resampled to ``fs_hz``, so it plays ``factor`` times faster, its length becomes
    ``length / factor`` and its pitch and formants move by ``factor`` -- the tempo and vocal-tract variation
    between speakers that a tower trained on a few voices has not heard. The batch keeps its width ``T``
    (a slowed utterance is cropped to it) and padding stays zero. Nothing is drawn when every factor is 1.
    """
    if all(f == 1.0 for f in factors):
        return waves, lengths
    b, t = waves.shape
    choice = torch.randint(len(factors), (b,), generator=generator)
    out, new_lengths = waves.clone(), lengths.clone()
    for k, factor in enumerate(factors):
        rows = (choice == k).nonzero().flatten()
        if factor == 1.0 or rows.numel() == 0:
            continue
        resampled = cached_resampler(int(round(fs_hz * factor)), int(fs_hz))(waves[rows])
        resampled = F.pad(resampled, (0, max(0, t - resampled.shape[1])))[:, :t]
        stretched = torch.round(lengths[rows].to(torch.float64) / factor).to(lengths.dtype).clamp(max=t)
        valid = torch.arange(t).view(1, t) < stretched.view(-1, 1)
        out[rows] = resampled * valid
        new_lengths[rows] = stretched
    return out, new_lengths


def frequency_mask(
    waves: torch.Tensor,
    lengths: torch.Tensor,
    fs_hz: float,
    n_masks: int,
    max_width_hz: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """SpecAugment's frequency masks (Park et al. 2019, Sec. 2) applied to ``[B, T]`` waveforms.

    Each mask removes a band of width U(0, ``max_width_hz``) at a uniform position from the utterance's
    spectrum (zeroed rFFT bins), so that the tower cannot rely on any one formant region. This is a
    band-stop on the signal, not SpecAugment's masking of the log-mel features with their mean: those
    features are computed inside the speech tower, where such a mask would have to live.
    """
    b, t = waves.shape
    spectrum = torch.fft.rfft(waves, dim=1)
    bins = spectrum.shape[1]
    hz_per_bin = fs_hz / t
    max_bins = int(max_width_hz / hz_per_bin)
    for i in range(b):
        for _ in range(n_masks):
            width = int(torch.randint(0, max_bins + 1, (1,), generator=generator))
            start = int(torch.randint(0, max(1, bins - width), (1,), generator=generator))
            spectrum[i, start : start + width] = 0
    out = torch.fft.irfft(spectrum, n=t, dim=1).to(waves.dtype)
    return out * (torch.arange(t).view(1, t) < lengths.view(b, 1))


def augment_speech(
    waves: torch.Tensor, lengths: torch.Tensor, fs_hz: float, cfg: AugmentConfig, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Speed perturbation, additive white noise at a fixed SNR, SpecAugment-style time masks (Park et al.
    2019) and optional frequency masks on ``[B, T]``; returns the waves and their (new) lengths."""
    waves, lengths = speed_perturb(waves, lengths, fs_hz, cfg.speech_speed_factors, generator)
    b, t = waves.shape
    power = waves.pow(2).sum(dim=1) / lengths.clamp(min=1).to(waves.dtype)
    noise_power = power / (10 ** (cfg.speech_noise_snr_db / 10))
    noise = torch.randn(b, t, generator=generator).to(waves.dtype) * noise_power.sqrt().view(b, 1)
    valid = torch.arange(t).view(1, t) < lengths.view(b, 1)
    out = waves + noise * valid
    max_mask = max(1, int(cfg.speech_max_mask_s * fs_hz))
    for i in range(b):
        for _ in range(cfg.speech_time_masks):
            width = int(torch.randint(0, max_mask + 1, (1,), generator=generator))
            start_max = max(1, int(lengths[i]) - width)
            start = int(torch.randint(0, start_max, (1,), generator=generator))
            out[i, start : start + width] = 0
    if cfg.speech_freq_masks:
        out = frequency_mask(
            out, lengths, fs_hz, cfg.speech_freq_masks, cfg.speech_max_freq_mask_hz, generator
        )
    return out, lengths


def step_generator(seed: int, epoch: int, step: int) -> torch.Generator:
    """A generator that depends only on (seed, epoch, step): resumed runs re-draw identical augmentations."""
    generator = torch.Generator()
    generator.manual_seed((seed * 1_000_003 + epoch * 10_007 + step) % (2**63 - 1))
    return generator
