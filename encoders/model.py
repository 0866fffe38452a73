"""The multimodal model: named towers, projection heads to a shared space and a learnable logit scale."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from encoders.config import MultimodalConfig
from encoders.heads import ProjectionHead
from encoders.lora import count_parameters
from encoders.towers import Tower, build_tower, load_tower
from encoders.towers.text import TextTower

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT = "clinical-encoders/multimodal"

# Parameters that are embeddings tables / learned tokens: no weight decay (with biases, norms and the
# logit scale, all 1-D), as in BERT and ViT fine-tuning recipes.
_NO_DECAY_NAMES = (
    "logit_scale",
    "position_embeddings",
    "cls_token",
    "word_embeddings",
    "token_type_embeddings",
    "lead_embeddings",
    "mask_token",
    "masked_spec_embed",
)


class MultimodalModel(nn.Module):
    """Any subset of towers (image, ecg, audio, text), each with a projection head, and a shared logit scale.

    ``logit_scale`` holds log(1 / temperature) (CLIP's parametrisation) and exists from construction,
    so an optimizer built afterwards sees it.
    """

    def __init__(self, config: MultimodalConfig, tower_dirs: dict[str, str | Path] | None = None) -> None:
        super().__init__()
        if not config.towers:
            raise ValueError("MultimodalConfig.towers is empty: name at least one tower")
        self.config = copy.deepcopy(config)
        towers: dict[str, Tower] = {}
        for name, tower_cfg in self.config.towers.items():
            if tower_dirs and name in tower_dirs:
                towers[name] = load_tower(tower_cfg, tower_dirs[name])
            else:
                towers[name] = build_tower(tower_cfg)
        self.towers = nn.ModuleDict(towers)
        self.heads = nn.ModuleDict(
            {
                name: ProjectionHead(t.hidden_size, config.embed_dim, config.projection)
                for name, t in towers.items()
            }
        )
        self.logit_scale = nn.Parameter(torch.tensor(float(config.init_logit_scale)))
        # A fully tuned text tower drifts from its pretrained self; CWCL's targets need the latter, so keep
        # a frozen copy of the *original* source. Held in a plain dict: not a submodule, never saved or
        # optimised (it is rebuilt from the config's source on load).
        self._frozen_text: dict[str, nn.Module] = {}
        for name, tower_cfg in self.config.towers.items():
            if tower_cfg.kind == "text" and tower_cfg.lora.mode == "full":
                frozen_cfg = dataclasses.replace(
                    tower_cfg, lora=dataclasses.replace(tower_cfg.lora, mode="frozen")
                )
                self._frozen_text[name] = build_tower(frozen_cfg).backbone.eval()

    # ------------------------------------------------------------------ encoding
    def encode(
        self,
        tower: str,
        inputs: Any,
        *,
        lead_mask: torch.Tensor | None = None,
        normalize: bool = True,
        **kwargs: Any,
    ) -> torch.Tensor:
        """Embed one modality's batch: ``[B, embed_dim]``, L2-normalised unless ``normalize=False``.

        image: FloatTensor[B, 1|3, H, W] in [0, 1]; ecg: FloatTensor[B, 12, T] + ``lead_mask``
        BoolTensor[B, 12]; audio: FloatTensor[B, T] at 16 kHz (+ ``lengths`` or ``attention_mask``);
        text: list[str].
        """
        if tower not in self.towers:
            raise KeyError(f"no tower {tower!r}; this model has {sorted(self.towers)}")
        if lead_mask is not None:
            kwargs["lead_mask"] = lead_mask
        pooled = self.towers[tower](inputs, **kwargs)
        embedded = self.heads[tower](pooled)
        return F.normalize(embedded, dim=-1) if normalize else embedded

    def _text_tower_name(self, tower: str | None) -> str:
        if tower is not None:
            return tower
        names = [n for n, t in self.towers.items() if isinstance(t, TextTower)]
        if len(names) != 1:
            raise ValueError(f"pass tower=...: the model has text towers {names}")
        return names[0]

    @torch.no_grad()
    def reference_text_features(self, texts: list[str], tower: str | None = None) -> torch.Tensor:
        """Pretrained-side text features for CWCL weights: [B, H], L2-normalised, no projection, no grad."""
        name = self._text_tower_name(tower)
        text_tower = self.towers[name]
        frozen = self._frozen_text.get(name)
        if frozen is not None:
            frozen.to(text_tower.device)
        return text_tower.pretrained_features(texts, frozen_copy=frozen)

    # ------------------------------------------------------------------ training helpers
    @torch.no_grad()
    def clamp_logit_scale(self) -> None:
        """Keep the scale in [1, 100] (log in [0, ln 100]); CLIP clips at 100 to keep training stable."""
        self.logit_scale.clamp_(0.0, self.config.max_logit_scale)

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """AdamW groups of trainable parameters: decay on matrices, none on biases, norms, embeddings, logit scale."""
        decay, no_decay = [], []
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            if param.ndim < 2 or any(key in name for key in _NO_DECAY_NAMES):
                no_decay.append(param)
            else:
                decay.append(param)
        groups = [
            {"name": "decay", "params": decay, "weight_decay": weight_decay},
            {"name": "no_decay", "params": no_decay, "weight_decay": 0.0},
        ]
        return [g for g in groups if g["params"]]

    def trainable_report(self) -> dict[str, dict[str, int]]:
        """Per tower (backbone + adapters + head): ``{"trainable": n, "total": n}``."""
        report = {}
        for name, tower in self.towers.items():
            tower_counts = count_parameters(tower)
            head_counts = count_parameters(self.heads[name])
            report[name] = {k: tower_counts[k] + head_counts[k] for k in tower_counts}
        return report

    # ------------------------------------------------------------------ export
    def merge_lora(self) -> None:
        """Fold every tower's LoRA adapters into its weights (for export); towers become frozen plain models."""
        for name, tower in self.towers.items():
            tower.merge_lora()
            self.config.towers[name] = tower.config

    def save_pretrained(self, path: str | Path) -> None:
        """``config.json`` + ``model.safetensors`` (heads, logit scale) + ``towers/<name>/{base,adapter}/``.

        Each tower's base is a Hugging Face ``save_pretrained`` directory and each LoRA adapter a peft
        one, so both open with the standard libraries; the packaged default text model is not copied.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        payload = {"format": FORMAT, "version": 1, "config": self.config.to_dict()}
        (path / CONFIG_FILE).write_text(json.dumps(payload, indent=2) + "\n")
        for name, tower in self.towers.items():
            tower.save(path / "towers" / name)
        own = {
            k: v.detach().contiguous().cpu()
            for k, v in self.state_dict().items()
            if not k.startswith("towers.")
        }
        save_file(own, str(path / WEIGHTS_FILE))

    @classmethod
    def from_pretrained(cls, path: str | Path) -> MultimodalModel:
        """Load a directory written by :meth:`save_pretrained` (adapters stay separate and trainable)."""
        path = Path(path)
        config_file = path / CONFIG_FILE
        if not config_file.is_file():
            raise FileNotFoundError(f"{path} is not a saved MultimodalModel: {CONFIG_FILE} is missing")
        payload = json.loads(config_file.read_text())
        if payload.get("format") != FORMAT:
            raise ValueError(f"{config_file}: not a {FORMAT} config (format={payload.get('format')!r})")
        config = MultimodalConfig.from_dict(payload["config"])
        model = cls(config, tower_dirs={name: path / "towers" / name for name in config.towers})
        missing, unexpected = model.load_state_dict(load_file(str(path / WEIGHTS_FILE)), strict=False)
        missing = [k for k in missing if not k.startswith("towers.")]
        if missing or unexpected:
            raise ValueError(f"{path / WEIGHTS_FILE}: missing {missing}, unexpected {unexpected}")
        return model
