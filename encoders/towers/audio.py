"""Speech tower: a transformers self-supervised audio encoder (wav2vec 2.0, HuBERT or WavLM) on 16 kHz waveforms."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    AutoModel,
    HubertConfig,
    HubertModel,
    PreTrainedModel,
    Wav2Vec2Config,
    Wav2Vec2Model,
    WavLMConfig,
    WavLMModel,
)

from encoders.towers.base import Tower, masked_mean

SAMPLE_RATE_HZ = 16000
_ARCHITECTURES = {
    "wav2vec2": (Wav2Vec2Config, Wav2Vec2Model),
    "hubert": (HubertConfig, HubertModel),
    "wavlm": (WavLMConfig, WavLMModel),
}


def normalise_waveform(waveform: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance per utterance over its valid samples, padding set to 0.

    The input normalisation wav2vec 2.0 models are trained with (``Wav2Vec2FeatureExtractor(do_normalize=True)``).
    """
    weights = valid.to(waveform.dtype)
    count = weights.sum(dim=1, keepdim=True).clamp_min(1.0)
    mean = (waveform * weights).sum(dim=1, keepdim=True) / count
    var = (((waveform - mean) * weights) ** 2).sum(dim=1, keepdim=True) / count
    return (waveform - mean) / torch.sqrt(var + 1e-7) * weights


class AudioTower(Tower):
    """Encodes ``waveform`` FloatTensor[B, T] at 16 kHz; ``lengths`` (samples) or ``attention_mask`` mark padding.

    Pooling is the mean over the valid 20 ms frames (these models have no CLS token).
    """

    def build_backbone(self, source: str | Path | None) -> PreTrainedModel:
        cfg = self.config
        if cfg.pooling != "mean":
            raise ValueError("audio towers pool by mean over frames: set pooling: mean")
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
        waveform = normalise_waveform(waveform, attention_mask)
        base = self.base_model
        # Base-size wav2vec2 checkpoints (group-normed conv) were trained on zero padding without a mask.
        model_mask = attention_mask.long() if base.config.feat_extract_norm == "layer" else None
        hidden = self.backbone(input_values=waveform, attention_mask=model_mask).last_hidden_state
        frame_lengths = base._get_feat_extract_output_lengths(attention_mask.sum(dim=1))
        frames = torch.arange(hidden.shape[1], device=hidden.device)[None, :] < frame_lengths[:, None]
        return masked_mean(hidden, frames)
