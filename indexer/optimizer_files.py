"""Optimizer-state files next to a warmup checkpoint: finding and reading them.

HF Trainer writes ``optimizer.pt``; ``Accelerator.save_state`` (and accelerate's FSDP
full-state-dict saving) writes ``optimizer.bin``. Both are ``torch.save`` of a state dict that
:func:`less_core.optimizer_state.adam_state_from_state_dict` maps onto the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from less_core.optimizer_state import AdamState, adam_state_from_state_dict

# Looked for in this order: a directory holding both is a Trainer checkpoint (Trainer saves
# through accelerate only under FSDP, and then writes no optimizer.pt).
OPTIMIZER_STATE_FILES = ("optimizer.pt", "optimizer.bin")


def find_optimizer_state_file(checkpoint_dir: Path) -> Path | None:
    """The optimizer state file of a Trainer/accelerate checkpoint directory, if any.

    Args:
        checkpoint_dir: a ``checkpoint-<step>/`` (or ``save_state``) directory.

    Returns:
        The first of :data:`OPTIMIZER_STATE_FILES` present there, or None.
    """
    for name in OPTIMIZER_STATE_FILES:
        if (checkpoint_dir / name).is_file():
            return checkpoint_dir / name
    return None


def load_adam_state(
    path: Path, param_names: Sequence[str], param_shapes: Sequence[torch.Size]
) -> AdamState:
    """Load ``optimizer.pt``/``optimizer.bin`` and map it onto the given parameters.

    Args:
        path: the optimizer state file.
        param_names: the model's trainable parameter names in ``named_parameters`` order.
        param_shapes: their shapes.

    Returns:
        The Adam moments (float32, on CPU) keyed by ``param_names``.

    Raises:
        IndexMismatchError: the file's state does not line up with the parameters.
    """
    # weights_only: a checkpoint directory may come from elsewhere; never unpickle code.
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    return adam_state_from_state_dict(state_dict, param_names, param_shapes)
