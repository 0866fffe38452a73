"""What every tower shares: a Hugging Face backbone, its tuning mode, pooling, saving and loading."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import logging as hf_logging

from encoders.config import TowerConfig
from encoders.lora import apply_tuning, count_parameters, is_peft

BASE_DIR = "base"
ADAPTER_DIR = "adapter"


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """Silence transformers' per-load progress bars and load reports (e.g. the unused BERT pooler) for one load."""
    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden`` [B, N, H] over tokens where ``mask`` [B, N] is true (sentence-transformers' mean pooling).

    A row without any valid token gives zeros rather than NaN.
    """
    weights = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1e-9)


class Tower(nn.Module):
    """A backbone (optionally wrapped by peft) that maps one modality's batch to pooled features [B, H].

    Subclasses implement :meth:`build_backbone` (from a source directory / hub id, or from the config's
    sizes when ``source`` is None) and :meth:`forward`.
    """

    def __init__(
        self, config: TowerConfig, source: str | Path | None = None, adapter: str | Path | None = None
    ):
        super().__init__()
        self.config = config
        self.merged = False
        with quiet_loading():
            base = self.build_backbone(source)
        self.hidden_size: int = int(base.config.hidden_size)
        if config.gradient_checkpointing:
            enable = (
                getattr(base, "activation_checkpointing_enable", None) or base.gradient_checkpointing_enable
            )
            # Non-reentrant checkpointing works when the frozen base's inputs do not require grad (LoRA).
            enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if adapter is not None and config.lora.mode == "lora":
            from peft import PeftModel

            base.requires_grad_(False)
            with quiet_loading():
                self.backbone: nn.Module = PeftModel.from_pretrained(base, str(adapter), is_trainable=True)
        else:
            self.backbone = apply_tuning(base, config.lora)

    # -- to implement ---------------------------------------------------------------------------
    def build_backbone(self, source: str | Path | None) -> PreTrainedModel:
        raise NotImplementedError

    def forward(self, inputs: Any, **kwargs: Any) -> torch.Tensor:
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------------
    @property
    def base_model(self) -> PreTrainedModel:
        """The Hugging Face model under any peft wrapper (with LoRA layers injected when present)."""
        return self.backbone.get_base_model() if is_peft(self.backbone) else self.backbone

    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    def parameter_counts(self) -> dict[str, int]:
        return count_parameters(self)

    def saves_base(self) -> bool:
        """Whether :meth:`save` writes the base weights (everything but the packaged default text model)."""
        return True

    def save(self, directory: str | Path) -> None:
        """Write ``base/`` (Hugging Face ``save_pretrained`` of the untuned base) and, with LoRA, ``adapter/``.

        The adapter is the peft artefact (``adapter_config.json`` + ``adapter_model.safetensors``) and
        loads on its own onto the same base with ``PeftModel.from_pretrained``.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with quiet_loading():
            if is_peft(self.backbone):
                self.backbone.save_pretrained(directory / ADAPTER_DIR)
                if self.saves_base():
                    # unload() strips the LoRA layers in place, so work on a copy: the base stays as trained.
                    clean = copy.deepcopy(self.backbone).unload()
                    clean.save_pretrained(directory / BASE_DIR)
            elif self.saves_base():
                self.backbone.save_pretrained(directory / BASE_DIR)
        self.save_extras(directory / BASE_DIR)

    def save_extras(self, base_dir: Path) -> None:
        """Hook for files that travel with the base (the text tokenizer)."""

    def merge_lora(self) -> None:
        """Fold LoRA adapters into the base weights (for export); the tower is then a plain model."""
        if is_peft(self.backbone):
            self.backbone = self.backbone.merge_and_unload()
            self.merged = True
            self.backbone.requires_grad_(False)
            self.config = copy.deepcopy(self.config)
            self.config.lora.mode = "frozen"


def resolve_source(directory: Path, config: TowerConfig) -> tuple[str | None, str | None]:
    """Base source and adapter directory of a tower saved by :meth:`Tower.save` (None where absent)."""
    base = directory / BASE_DIR
    adapter = directory / ADAPTER_DIR
    source = str(base) if (base / "config.json").is_file() else config.pretrained
    return source, (str(adapter) if (adapter / "adapter_config.json").is_file() else None)
