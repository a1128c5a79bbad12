"""Frozen bottom layers computed once per example, reused by every training and evaluation.

With LoRA on the last N decoder layers only, the hidden states entering the first adapted layer
do not depend on the adapters: they are the base model's, for every method, seed and checkpoint.
:func:`compute_prefix` computes them once per example (``PrefixStore``, saved to disk);
:func:`from_prefix` then runs the model from those states through the adapted layers alone, by
swapping the decoder's embedding for the stored states and its layer list for the top layers, so
``less_core.lora_grads.response_losses`` and the decoder's own forward run unchanged. Right
padding and the causal mask make each example's states independent of its batch, so the result
equals the full forward (tests check losses and gradients against it).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from less_core.config import LoraSettings
from less_core.data import Batch, TokenizedExample, collate
from less_core.errors import ConfigError

PREFIX_BATCH = 8
HIDDEN_FILE = "hidden.npy"
META_FILE = "prefix.json"


def decoder_of(model: nn.Module) -> nn.Module:
    """The transformer decoder (embeddings, layers, final norm) inside a causal LM or PEFT model."""
    get_base = getattr(model, "get_base_model", None)
    base = get_base() if get_base is not None else model
    return base.get_decoder()


def first_adapted_layer(lora: LoraSettings, n_layers: int) -> int:
    """The index of the first LoRA layer, which must start a block running to the top.

    Raises:
        ConfigError: the adapted layers are not the last ones (the prefix would not be frozen).
    """
    layers = sorted(lora.layers) if lora.layers is not None else list(range(n_layers))
    if layers != list(range(layers[0], n_layers)):
        raise ConfigError(f"LoRA layers {layers} are not the last layers of {n_layers}")
    return layers[0]


class _Given(nn.Module):
    """Stands in for the embedding: returns the stored prefix states for the batch."""

    def __init__(self, hidden: torch.Tensor):
        super().__init__()
        self.hidden = hidden

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.hidden


@contextmanager
def _swapped(decoder: nn.Module, **modules: nn.Module) -> Iterator[None]:
    saved = {name: getattr(decoder, name) for name in modules}
    try:
        for name, module in modules.items():
            setattr(decoder, name, module)
        yield
    finally:
        for name, module in saved.items():
            setattr(decoder, name, module)


@contextmanager
def from_prefix(model: nn.Module, start: int, hidden: torch.Tensor) -> Iterator[None]:
    """Within the block, the model's forward starts at layer ``start`` from ``hidden`` (B, T, H):
    the ``input_ids`` it is given only set shapes (and the loss mask's targets)."""
    decoder = decoder_of(model)
    top = nn.ModuleList(list(decoder.layers)[start:])
    with _swapped(decoder, layers=top, embed_tokens=_Given(hidden)):
        yield


@dataclass
class PrefixStore:
    """Hidden states entering layer ``start`` for tokenized examples, concatenated over tokens.

    Attributes:
        ids: example ids, in row order.
        tokens: the tokenized examples (their loss masks are needed with the states).
        hidden: (sum of lengths, H) float32, possibly memory-mapped.
        offsets: (n + 1,) row starts in ``hidden``.
    """

    ids: list[str]
    tokens: list[TokenizedExample]
    hidden: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def batch(self, rows: Sequence[int], pad_token_id: int) -> tuple[Batch, torch.Tensor]:
        """The rows as a right-padded batch and their (B, T, H) states (zeros on padding)."""
        batch = collate([self.tokens[r] for r in rows], pad_token_id)
        states = torch.zeros(len(rows), batch.input_ids.shape[1], self.hidden.shape[1])
        for i, r in enumerate(rows):
            a, b = int(self.offsets[r]), int(self.offsets[r + 1])
            # A copy: a memory-mapped store is read-only.
            states[i, : b - a] = torch.from_numpy(np.array(self.hidden[a:b]))
        return batch, states


@torch.no_grad()
def compute_prefix(
    model: nn.Module, start: int, tokens: Sequence[TokenizedExample], pad_token_id: int
) -> tuple[np.ndarray, np.ndarray]:
    """The states entering layer ``start`` of each example; returns (hidden, offsets)."""
    decoder = decoder_of(model)
    lengths = np.array([len(t.input_ids) for t in tokens], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    hidden = np.empty((int(offsets[-1]), decoder.config.hidden_size), dtype=np.float32)
    # Shortest first: batches of similar lengths waste little on padding.
    order = np.argsort(lengths, kind="stable")
    bottom = nn.ModuleList(list(decoder.layers)[:start])
    with _swapped(decoder, layers=bottom, norm=nn.Identity()):
        for i in range(0, len(order), PREFIX_BATCH):
            rows = order[i : i + PREFIX_BATCH]
            b = collate([tokens[r] for r in rows], pad_token_id)
            out = decoder(input_ids=b.input_ids, attention_mask=b.attention_mask, use_cache=False)
            for j, r in enumerate(rows):
                hidden[offsets[r] : offsets[r + 1]] = out.last_hidden_state[j, : lengths[r]].numpy()
    return hidden, offsets


def save_prefix(
    directory: Path,
    ids: Sequence[str],
    hidden: np.ndarray,
    offsets: np.ndarray,
    meta: dict[str, Any],
) -> None:
    """Write a store into ``directory``, published by rename (a kill leaves no half store)."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        np.save(staged / HIDDEN_FILE, hidden)
        (staged / META_FILE).write_text(
            json.dumps({**meta, "ids": list(ids), "offsets": offsets.tolist()})
        )
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(staged, directory)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise


def load_prefix(directory: Path, tokens: Sequence[TokenizedExample]) -> PrefixStore | None:
    """A saved store (memory-mapped), or None when absent or made for other tokens."""
    try:
        meta = json.loads((directory / META_FILE).read_text())
        hidden = np.load(directory / HIDDEN_FILE, mmap_mode="r")
    except (OSError, ValueError):
        return None
    offsets = np.asarray(meta["offsets"], dtype=np.int64)
    lengths = [len(t.input_ids) for t in tokens]
    if len(lengths) != len(offsets) - 1 or list(np.diff(offsets)) != lengths:
        return None
    return PrefixStore(list(meta["ids"]), list(tokens), hidden, offsets)
