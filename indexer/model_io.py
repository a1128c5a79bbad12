"""Loading the base model, its tokenizer and LoRA checkpoints from disk."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, set_peft_model_state_dict
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from less_core.config import LoraSettings
from less_core.data import ensure_chat_template
from less_core.errors import ConfigError, IndexNotFoundError
from less_core.lora import attach_lora, lora_settings_from_peft

log = logging.getLogger(__name__)

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


def resolve_device(device: str | None) -> torch.device:
    """``None``/"auto" picks CUDA when present, else CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"bad device {device!r}: {exc}") from None


def load_tokenizer(model_dir: str | Path) -> PreTrainedTokenizerBase:
    """The model's tokenizer with a pad token and a chat template."""
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    ensure_chat_template(tokenizer)
    return tokenizer


def load_base_model(
    model_dir: str | Path, device: torch.device, dtype: torch.dtype = torch.float32
):
    """A causal LM from a local checkpoint directory (no hub access), in eval mode."""
    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise IndexNotFoundError(f"no model checkpoint (config.json) in {path}")
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    return model.to(device).eval()


def model_fingerprint(model_dir: str | Path) -> str:
    """sha256 over the model's config and weight files, to pin a datastore to its model."""
    digest = hashlib.sha256()
    path = Path(model_dir)
    for f in sorted(path.glob("*.json")) + sorted(path.glob("*.safetensors")):
        if f.name.startswith("tokenizer") or f.name == "generation_config.json":
            continue
        digest.update(f.name.encode())
        with f.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def read_lora_settings(checkpoint_dir: Path) -> LoraSettings:
    """LoRA settings recorded in a PEFT checkpoint's ``adapter_config.json``."""
    config_path = checkpoint_dir / ADAPTER_CONFIG
    if not config_path.is_file():
        raise IndexNotFoundError(f"no {ADAPTER_CONFIG} in {checkpoint_dir}")
    return lora_settings_from_peft(LoraConfig.from_pretrained(str(checkpoint_dir)))


def load_adapter_weights(model: PeftModel, checkpoint_dir: Path) -> None:
    """Load a checkpoint's LoRA weights into an already-wrapped model (in place)."""
    weights_path = checkpoint_dir / ADAPTER_WEIGHTS
    if not weights_path.is_file():
        raise IndexNotFoundError(f"no {ADAPTER_WEIGHTS} in {checkpoint_dir}")
    state = load_file(str(weights_path), device=str(next(model.parameters()).device))
    result = set_peft_model_state_dict(model, state)
    unexpected = [k for k in getattr(result, "unexpected_keys", []) if "lora_" in k]
    if unexpected:
        raise ConfigError(
            f"{weights_path}: weights do not fit the model's LoRA layout: {unexpected[:3]}"
        )


def load_lora_model(
    model_dir: str | Path, settings: LoraSettings, device: torch.device
) -> PeftModel:
    """Base model wrapped with (not yet loaded) LoRA adapters of ``settings``, eval mode."""
    model = attach_lora(load_base_model(model_dir, device), settings)
    return model.eval()
