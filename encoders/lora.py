"""Per-tower tuning mode through peft: frozen, LoRA adapters (Hu et al. 2021) or full fine-tuning."""

from __future__ import annotations

from torch import nn
from transformers import PreTrainedModel

from encoders.config import LoraSettings

# Query/value projections per naming family, in order of preference. LoRA on q and v is the setting
# of the LoRA paper (Hu et al. 2021, Sec. 7.1). ViT and wav2vec2 in transformers 5 use q_proj/v_proj,
# BERT-family encoders query/value.
_QV_NAMES: list[tuple[str, str]] = [("q_proj", "v_proj"), ("query", "value"), ("q", "v")]


def default_target_modules(model: nn.Module) -> list[str]:
    """The attention query/value linears of ``model``, found by module name."""
    leaf_names = {
        name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, nn.Linear)
    }
    for query, value in _QV_NAMES:
        if query in leaf_names and value in leaf_names:
            return [query, value]
    raise ValueError(
        f"cannot find attention query/value linears in {type(model).__name__}; set lora.target_modules "
        f"(linear layers present: {sorted(leaf_names)[:20]})"
    )


def apply_tuning(model: PreTrainedModel, settings: LoraSettings) -> nn.Module:
    """Return ``model`` prepared for its mode: frozen (no grads), full (all grads) or wrapped by peft LoRA."""
    if settings.mode == "full":
        model.requires_grad_(True)
        return model
    model.requires_grad_(False)
    if settings.mode == "frozen":
        return model
    if settings.mode != "lora":
        raise ValueError(f"unknown tuning mode {settings.mode!r}; expected frozen, lora or full")
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules or default_target_modules(model)),
        bias="none",
    )
    return get_peft_model(model, config)


def is_peft(model: nn.Module) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def count_parameters(module: nn.Module) -> dict[str, int]:
    """``{"trainable": n, "total": n}``; shared tensors are counted once."""
    seen: set[int] = set()
    trainable = total = 0
    for param in module.parameters():
        if id(param) in seen:
            continue
        seen.add(id(param))
        total += param.numel()
        if param.requires_grad:
            trainable += param.numel()
    return {"trainable": trainable, "total": total}
