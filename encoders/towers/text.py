"""Text tower: any BERT-family encoder via AutoModel + AutoTokenizer; default the offline packaged all-MiniLM-L6-v2."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoTokenizer, PreTrainedModel

from encoders.config import default_text_model_dir
from encoders.lora import is_peft
from encoders.towers.base import Tower, masked_mean


class TextTower(Tower):
    """Encodes ``texts`` list[str]; tokenised inside (truncated to ``max_text_tokens``).

    ``pretrained`` None means the packaged all-MiniLM-L6-v2; any local directory with a BERT-family
    config, weights and tokenizer (e.g. a clinical BERT) works. Pooling "mean" is the masked token
    mean that sentence-transformers uses for MiniLM; "cls" takes the [CLS] token.
    """

    def build_backbone(self, source: str | Path | None) -> PreTrainedModel:
        source = str(source if source is not None else default_text_model_dir())
        self.tokenizer = AutoTokenizer.from_pretrained(source)
        self.source = source
        return AutoModel.from_pretrained(
            source, add_pooling_layer=False, attn_implementation=self.config.attn_implementation
        )

    def saves_base(self) -> bool:
        # The packaged MiniLM ships with the environment; store it only once it has changed.
        return self.config.pretrained is not None or self.config.lora.mode == "full" or self.merged

    def save_extras(self, base_dir: Path) -> None:
        if base_dir.is_dir():
            self.tokenizer.save_pretrained(base_dir)

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError("the text tower takes a list of strings")
        batch = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.config.max_text_tokens,
            return_tensors="pt",
        )
        return {k: v.to(self.device) for k, v in batch.items()}

    def pool(self, backbone: torch.nn.Module, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = backbone(**tokens).last_hidden_state
        if self.config.pooling == "cls":
            return hidden[:, 0]
        return masked_mean(hidden, tokens["attention_mask"])

    def forward(self, texts: list[str], **_: object) -> torch.Tensor:
        return self.pool(self.backbone, self.tokenize(texts))

    @torch.no_grad()
    def pretrained_features(
        self, texts: list[str], frozen_copy: torch.nn.Module | None = None
    ) -> torch.Tensor:
        """L2-normalised pooled features of the *pretrained* model (CWCL's reference side), without grad.

        With LoRA the adapters are switched off (peft ``disable_adapter``); a frozen tower is its own
        pretrained self; a fully tuned tower needs ``frozen_copy`` of its starting weights.
        """
        tokens = self.tokenize(texts)
        was_training = self.training
        self.eval()  # dropout off: the targets must not be noisy
        try:
            if is_peft(self.backbone):
                with self.backbone.disable_adapter():
                    pooled = self.pool(self.backbone, tokens)
            elif frozen_copy is not None:
                pooled = self.pool(frozen_copy, tokens)
            else:
                pooled = self.pool(self.backbone, tokens)
        finally:
            self.train(was_training)
        return F.normalize(pooled.float(), dim=-1)
