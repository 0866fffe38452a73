"""ECG transformer: a ViT-style encoder over 1-D time patches of the 12-lead signal.

Each lead is cut into patches of ``patch_len`` samples; every lead has its own linear patch
projection plus a learned lead embedding, and the per-lead tokens of one time step are fused by a
mean over the *present* leads only (the preprocessing lead mask). A lead that is missing or flat is
therefore zeroed and excluded, not averaged in as silence, and the fused token still carries which
leads were present through the mean of their lead embeddings. The fused sequence gets a CLS token
and learned position embeddings and goes through pre-norm transformer layers whose attention
linears are named ``q_proj``/``k_proj``/``v_proj``/``o_proj`` so peft LoRA can target them.

One token per time patch (not per lead x patch) keeps a 10 s, 500 Hz record at 100 tokens, which
matters on CPU; the lead-specific projections keep it lead-aware.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling

from encoders.towers.base import Tower


class EcgTransformerConfig(PretrainedConfig):
    """Sizes of :class:`EcgTransformerModel`; ``max_len`` in samples, ``patch_len`` in samples."""

    model_type = "ecg_transformer"

    def __init__(
        self,
        n_leads: int = 12,
        patch_len: int = 50,
        max_len: int = 5000,
        hidden_size: int = 128,
        num_hidden_layers: int = 4,
        num_attention_heads: int = 4,
        intermediate_size: int = 512,
        hidden_dropout_prob: float = 0.0,
        attention_probs_dropout_prob: float = 0.0,
        layer_norm_eps: float = 1e-6,
        initializer_range: float = 0.02,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if hidden_size % num_attention_heads:
            raise ValueError(
                f"hidden_size {hidden_size} is not divisible by num_attention_heads {num_attention_heads}"
            )
        self.n_leads = n_leads
        self.patch_len = patch_len
        self.max_len = max_len
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.layer_norm_eps = layer_norm_eps
        self.initializer_range = initializer_range

    @property
    def num_patches(self) -> int:
        return -(-self.max_len // self.patch_len)


class EcgAttention(nn.Module):
    def __init__(self, config: EcgTransformerConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.dropout = config.attention_probs_dropout_prob
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.k_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.v_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.o_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        batch, length, _ = hidden.shape

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

        out = F.scaled_dot_product_attention(
            heads(self.q_proj(hidden)),
            heads(self.k_proj(hidden)),
            heads(self.v_proj(hidden)),
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.o_proj(out.transpose(1, 2).reshape(batch, length, -1))


class EcgLayer(GradientCheckpointingLayer):
    """Pre-norm transformer block (as ViT): x + attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, config: EcgTransformerConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = EcgAttention(config)
        self.norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = hidden + self.dropout(self.attention(self.norm1(hidden)))
        return hidden + self.dropout(self.fc2(F.gelu(self.fc1(self.norm2(hidden)))))


class EcgPatchEmbedding(nn.Module):
    """Per-lead patch projection + lead embedding, fused over present leads; CLS + positions."""

    def __init__(self, config: EcgTransformerConfig) -> None:
        super().__init__()
        self.patch_len = config.patch_len
        self.max_len = config.max_len
        hidden = config.hidden_size
        self.lead_projection = nn.Parameter(torch.empty(config.n_leads, config.patch_len, hidden))
        self.lead_bias = nn.Parameter(torch.zeros(config.n_leads, hidden))
        self.lead_embeddings = nn.Parameter(torch.zeros(config.n_leads, hidden))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, hidden))
        self.position_embeddings = nn.Parameter(torch.zeros(1, config.num_patches + 1, hidden))
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, signal: torch.Tensor, lead_mask: torch.Tensor) -> torch.Tensor:
        batch, n_leads, n_samples = signal.shape
        if n_samples > self.max_len:
            raise ValueError(f"ECG has {n_samples} samples, more than the tower's max_len {self.max_len}")
        if n_samples % self.patch_len:
            # Zero-pad the last partial patch: a zero tail is what the recorder would show after the end.
            signal = F.pad(signal, (0, self.patch_len - n_samples % self.patch_len))
        mask = lead_mask.to(signal.dtype)
        patches = (signal * mask[:, :, None]).unflatten(2, (-1, self.patch_len))  # [B, L, N, P]
        tokens = torch.einsum("blnp,lph->blnh", patches, self.lead_projection)
        tokens = tokens + (self.lead_bias + self.lead_embeddings)[None, :, None, :]
        # Mean over present leads; a record with no present lead gives zero tokens (no NaN).
        weights = mask / mask.sum(dim=1, keepdim=True).clamp_min(1.0)
        fused = torch.einsum("blnh,bl->bnh", tokens, weights)
        fused = torch.cat([self.cls_token.expand(batch, -1, -1), fused], dim=1)
        return self.dropout(fused + self.position_embeddings[:, : fused.shape[1]])


class EcgTransformerPreTrainedModel(PreTrainedModel):
    config_class = EcgTransformerConfig
    base_model_prefix = "ecg"
    main_input_name = "signal"
    supports_gradient_checkpointing = True
    _supports_sdpa = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, EcgPatchEmbedding):
            # Same scale as a Linear(patch_len, hidden) under trunc-normal init.
            nn.init.trunc_normal_(module.lead_projection, std=std)
            nn.init.zeros_(module.lead_bias)
            nn.init.trunc_normal_(module.lead_embeddings, std=std)
            nn.init.trunc_normal_(module.cls_token, std=std)
            nn.init.trunc_normal_(module.position_embeddings, std=std)


class EcgTransformerModel(EcgTransformerPreTrainedModel):
    """Encodes ``signal`` FloatTensor[B, n_leads, T] (T <= max_len samples) with ``lead_mask`` BoolTensor[B, n_leads].

    Returns ``last_hidden_state`` [B, 1 + ceil(T / patch_len), H] (CLS first) and ``pooler_output``
    (the final-norm CLS token).
    """

    def __init__(self, config: EcgTransformerConfig) -> None:
        super().__init__(config)
        self.embeddings = EcgPatchEmbedding(config)
        self.layers = nn.ModuleList([EcgLayer(config) for _ in range(config.num_hidden_layers)])
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.gradient_checkpointing = False
        self.post_init()

    def forward(
        self, signal: torch.Tensor, lead_mask: torch.Tensor | None = None, **kwargs
    ) -> BaseModelOutputWithPooling:
        if signal.ndim != 3 or signal.shape[1] != self.config.n_leads:
            raise ValueError(
                f"expected an ECG of shape [B, {self.config.n_leads}, T], got {tuple(signal.shape)}"
            )
        if lead_mask is None:
            lead_mask = torch.ones(signal.shape[:2], dtype=torch.bool, device=signal.device)
        hidden = self.embeddings(signal, lead_mask)
        for layer in self.layers:
            hidden = layer(hidden)
        hidden = self.layernorm(hidden)
        return BaseModelOutputWithPooling(last_hidden_state=hidden, pooler_output=hidden[:, 0])


# Let AutoConfig / AutoModel open saved ECG towers like any other Hugging Face model.
AutoConfig.register(EcgTransformerConfig.model_type, EcgTransformerConfig, exist_ok=True)
AutoModel.register(EcgTransformerConfig, EcgTransformerModel, exist_ok=True)


class EcgTower(Tower):
    """Encodes ``signal`` FloatTensor[B, 12, T] (preprocessed, per-lead normalised) with ``lead_mask`` BoolTensor[B, 12]."""

    def build_backbone(self, source: str | Path | None) -> PreTrainedModel:
        if source is not None:
            return EcgTransformerModel.from_pretrained(str(source))
        cfg = self.config
        return EcgTransformerModel(
            EcgTransformerConfig(
                n_leads=cfg.n_leads,
                patch_len=cfg.patch_len,
                max_len=cfg.max_len,
                hidden_size=cfg.hidden_size,
                num_hidden_layers=cfg.num_layers,
                num_attention_heads=cfg.num_heads,
                intermediate_size=cfg.intermediate_size,
                hidden_dropout_prob=cfg.dropout,
                attention_probs_dropout_prob=cfg.dropout,
            )
        )

    def forward(
        self, signal: torch.Tensor, lead_mask: torch.Tensor | None = None, **_: object
    ) -> torch.Tensor:
        hidden = self.backbone(signal=signal, lead_mask=lead_mask).last_hidden_state
        if self.config.pooling == "cls":
            return hidden[:, 0]
        return hidden[:, 1:].mean(dim=1)
