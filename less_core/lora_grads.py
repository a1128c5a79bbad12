"""Per-example LoRA gradients for a whole padded batch in one forward and backward pass.

A LoRA weight is an ``nn.Linear`` without bias, so the gradient of example b with respect to it
is sum_t grad_out[b, t] ⊗ input[b, t]. Forward hooks keep each LoRA module's input and output;
one ``torch.autograd.grad`` call returns the gradients of the summed per-example losses with
respect to those outputs (examples do not interact, so each row is that example's own), and an
einsum per module gives (B, out, in) per-example gradients. Nothing is flattened into one
full-model vector and no per-example Python loop runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol, cast

import torch
import torch.nn.functional as F
from torch import nn

from less_core.data import IGNORE_INDEX, Batch
from less_core.errors import ConfigError
from less_core.projectors import ModuleLayout

# A forward hook: (module, positional inputs, output) -> None.
_ForwardHook = Callable[[nn.Module, tuple[torch.Tensor, ...], torch.Tensor], None]


class _CausalLM(Protocol):
    """What ``response_losses`` uses of a transformers causal LM."""

    def get_decoder(self) -> nn.Module: ...

    def get_output_embeddings(self) -> nn.Module: ...


def _unwrapped_lm(model: nn.Module) -> _CausalLM:
    """The transformers causal LM inside ``model``, or ``model`` itself when not PEFT-wrapped.

    torch types attribute access on an ``nn.Module`` as ``Tensor | Module``, so the causal-LM
    methods this module calls are invisible to the checker; the cast states what the caller
    must pass (a ``PreTrainedModel`` for causal LM, optionally inside a ``PeftModel``).
    """
    get_base_model = getattr(model, "get_base_model", None)
    base = get_base_model() if get_base_model is not None else model
    return cast(_CausalLM, base)


def response_losses(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Mean token cross-entropy over each example's response tokens.

    The LM head is applied only at positions whose next token is a response token: the loss
    needs nothing else, and prompt positions are most of a sequence.

    Args:
        model: a causal LM (optionally wrapped by PEFT).
        batch: right-padded batch, (B, T) tensors.

    Returns:
        (B,) float32 losses; NaN for an example without response tokens.
    """
    base = _unwrapped_lm(model)
    hidden: torch.Tensor = base.get_decoder()(
        input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False
    ).last_hidden_state  # (B, T, H)
    targets = batch.labels[:, 1:]
    rows, cols = torch.nonzero(targets != IGNORE_INDEX, as_tuple=True)
    logits: torch.Tensor = base.get_output_embeddings()(hidden[rows, cols])  # (n_tokens, V)
    token_loss = F.cross_entropy(logits.float(), targets[rows, cols], reduction="none")
    n = batch.input_ids.shape[0]
    sums = torch.zeros(n, dtype=torch.float32, device=token_loss.device).index_add_(
        0, rows, token_loss
    )
    counts = torch.bincount(rows, minlength=n).to(sums.dtype)
    return sums / counts


@dataclass(frozen=True)
class _LoraParam:
    name: str  # parameter name, as in model.named_parameters()
    module: nn.Linear  # the lora_A or lora_B Linear holding it


def lora_parameters(model: nn.Module) -> list[_LoraParam]:
    """The trainable LoRA weights of a PEFT model, in ``named_parameters`` order."""
    modules = dict(model.named_modules())
    out: list[_LoraParam] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        parts = name.split(".")
        if len(parts) < 4 or parts[-1] != "weight" or parts[-3] not in ("lora_A", "lora_B"):
            raise ConfigError(f"trainable parameter {name!r} is not a LoRA A/B weight")
        module = modules[".".join(parts[:-1])]
        # torch annotates Linear.bias as Parameter, but it is None for Linear(..., bias=False).
        if (
            not isinstance(module, nn.Linear)
            or cast("torch.Tensor | None", module.bias) is not None
        ):
            raise ConfigError(f"{name!r}: only bias-free linear LoRA weights are supported")
        out.append(_LoraParam(name, module))
    if not out:
        raise ConfigError("the model has no trainable LoRA parameters")
    return out


def lora_layout(model: nn.Module) -> ModuleLayout:
    """The gradient layout (names, numel) of the model's LoRA weights."""
    params = lora_parameters(model)
    return ModuleLayout(
        tuple(p.name for p in params), tuple(p.module.weight.numel() for p in params)
    )


class PerExampleGradients:
    """Computes per-example gradients of the response loss w.r.t. every LoRA weight.

    Args:
        model: a PEFT-wrapped causal LM with LoRA adapters.
        autocast: run the forward and backward under ``torch.autocast`` with this dtype
            (bf16 / fp16 on a GPU; bf16 also works on a CPU), or None for full precision. The
            loss, the per-example einsum and everything after it stay float32: only the
            model's matmuls lose precision, which keeps feature cosines near 1 (tested).
    """

    def __init__(self, model: nn.Module, autocast: torch.dtype | None = None):
        self.model = model
        self.autocast = autocast
        self.params = lora_parameters(model)
        self.layout = ModuleLayout(
            tuple(p.name for p in self.params), tuple(p.module.weight.numel() for p in self.params)
        )

    @contextmanager
    def _capture(self) -> Iterator[tuple[list[torch.Tensor], list[torch.Tensor]]]:
        # Placeholders: the forward pass inside the ``with`` block fills every slot (one hook
        # per LoRA module) before the caller reads them.
        inputs: list[torch.Tensor] = [None] * len(self.params)  # type: ignore[list-item]
        outputs: list[torch.Tensor] = [None] * len(self.params)  # type: ignore[list-item]

        def make_hook(i: int) -> _ForwardHook:
            def hook(
                _module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor
            ) -> None:
                inputs[i] = args[0].detach()
                outputs[i] = output

            return hook

        handles = [p.module.register_forward_hook(make_hook(i)) for i, p in enumerate(self.params)]
        try:
            yield inputs, outputs
        finally:
            for h in handles:
                h.remove()

    def compute(self, batch: Batch) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Per-example gradients for a batch.

        Args:
            batch: right-padded batch on the model's device; every example needs at least one
                response token.

        Returns:
            (blocks, losses): blocks[m] is (B, d_m) float32, the gradient of each example's
            loss w.r.t. LoRA weight m flattened row-major (as ``weight.view(-1)``); losses (B,).
        """
        device_type = batch.input_ids.device.type
        with torch.autocast(device_type, self.autocast, enabled=self.autocast is not None):
            with self._capture() as (inputs, outputs):
                losses = response_losses(self.model, batch)
            if torch.isnan(losses).any():
                raise ConfigError("an example in the batch has no response tokens")
            grads_out = torch.autograd.grad(losses.sum(), outputs)
        # Padding positions get zero output gradients; masking also guards against NaNs there.
        mask = batch.attention_mask.unsqueeze(-1).to(torch.bool)
        blocks = []
        for x, g in zip(inputs, grads_out):
            g = torch.where(mask, g, 0.0).to(torch.float32)
            per_example = torch.einsum("bto,bti->boi", g, x.to(torch.float32))
            blocks.append(per_example.reshape(per_example.shape[0], -1))
        return blocks, losses.detach()
