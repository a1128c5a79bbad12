"""Attaching LoRA adapters (PEFT) to a causal LM from ``LoraSettings``."""

from __future__ import annotations

from typing import Any

from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn

from less_core.config import LoraSettings


def peft_lora_config(settings: LoraSettings) -> LoraConfig:
    """The PEFT ``LoraConfig`` equivalent of our settings."""
    return LoraConfig(
        r=settings.rank,
        # PEFT annotates lora_alpha as int but only computes scaling = lora_alpha / r with it;
        # a fractional alpha is valid and is passed through unchanged.
        lora_alpha=settings.alpha,  # type: ignore[arg-type]
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        layers_to_transform=list(settings.layers) if settings.layers is not None else None,
        bias="none",
        task_type="CAUSAL_LM",
    )


def lora_settings_from_peft(config: Any) -> LoraSettings:
    """Our settings from a PEFT ``LoraConfig`` (e.g. read from ``adapter_config.json``)."""
    layers = config.layers_to_transform
    if isinstance(layers, int):
        layers = [layers]
    return LoraSettings(
        rank=int(config.r),
        alpha=float(config.lora_alpha),
        dropout=float(config.lora_dropout),
        target_modules=tuple(sorted(config.target_modules)),
        layers=tuple(layers) if layers is not None else None,
    )


def attach_lora(model: nn.Module, settings: LoraSettings) -> PeftModel:
    """Wrap ``model`` with fresh LoRA adapters; only LoRA weights stay trainable."""
    return get_peft_model(model, peft_lora_config(settings))
