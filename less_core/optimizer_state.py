"""Readers for the Adam state that HF Trainer and accelerate write next to a checkpoint.

Both save ``torch.optim.Optimizer.state_dict()`` (``optimizer.pt`` for Trainer, ``optimizer.bin``
for ``accelerator.save_state``): parameters are integer ids numbered through the param groups in
order, and each group lists them in the order the model's trainable parameters were given. When
torch recorded ``param_names`` in the groups they are used; otherwise ids are matched to the
model's trainable parameters in ``named_parameters`` order and every shape is checked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from less_core.errors import IndexMismatchError

OPTIMIZER_STATE_FILES = ("optimizer.pt", "optimizer.bin")


@dataclass(frozen=True)
class AdamState:
    """Adam moments per parameter name, with the optimizer's hyper-parameters.

    Attributes:
        exp_avg: name -> first moment m, flattened (d_m,).
        exp_avg_sq: name -> second moment v, flattened (d_m,).
        betas: (β1, β2) of the optimizer.
        eps: its epsilon.
        step: the optimizer step count, if recorded.
    """

    exp_avg: dict[str, torch.Tensor]
    exp_avg_sq: dict[str, torch.Tensor]
    betas: tuple[float, float]
    eps: float
    step: int | None

    def moments(self, names: Sequence[str]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(m, v) for each name, in the given order."""
        missing = [n for n in names if n not in self.exp_avg]
        if missing:
            raise IndexMismatchError(f"optimizer state has no moments for {missing[:3]}")
        return [(self.exp_avg[n], self.exp_avg_sq[n]) for n in names]


def adam_state_from_state_dict(
    state_dict: dict[str, Any], param_names: Sequence[str], param_shapes: Sequence[torch.Size]
) -> AdamState:
    """Map an optimizer ``state_dict`` onto the model's trainable parameters.

    Args:
        state_dict: ``{"state": {id: {"exp_avg", "exp_avg_sq", "step"}}, "param_groups": [...]}``.
        param_names: trainable parameter names in ``named_parameters`` order.
        param_shapes: their shapes.

    Raises:
        IndexMismatchError: counts, names or shapes do not line up, or moments are missing.
    """
    groups = state_dict.get("param_groups")
    state = state_dict.get("state")
    if not isinstance(groups, list) or not isinstance(state, dict) or not groups:
        raise IndexMismatchError("not an optimizer state_dict (no 'state'/'param_groups')")
    ids = [pid for g in groups for pid in g["params"]]
    if all("param_names" in g for g in groups):
        names = [n for g in groups for n in g["param_names"]]
    else:
        names = list(param_names)
    if len(ids) != len(param_names):
        raise IndexMismatchError(
            f"optimizer state covers {len(ids)} parameters, the model has {len(param_names)} trainable"
        )
    shape_of = dict(zip(param_names, param_shapes))
    exp_avg, exp_avg_sq, steps = {}, {}, set()
    for pid, name in zip(ids, names):
        if name not in shape_of:
            raise IndexMismatchError(f"optimizer state names unknown parameter {name!r}")
        entry = state.get(pid)
        if entry is None or "exp_avg" not in entry or "exp_avg_sq" not in entry:
            raise IndexMismatchError(f"no Adam moments for parameter {name!r} (id {pid})")
        if entry["exp_avg"].shape != shape_of[name]:
            raise IndexMismatchError(
                f"{name}: optimizer moment shape {tuple(entry['exp_avg'].shape)} "
                f"!= parameter shape {tuple(shape_of[name])}"
            )
        exp_avg[name] = entry["exp_avg"].reshape(-1)
        exp_avg_sq[name] = entry["exp_avg_sq"].reshape(-1)
        if "step" in entry:
            steps.add(int(torch.as_tensor(entry["step"]).item()))
    group = groups[0]
    betas = tuple(float(b) for b in group.get("betas", (0.9, 0.999)))
    return AdamState(
        exp_avg, exp_avg_sq, betas, float(group.get("eps", 1e-8)), max(steps, default=None)
    )


def find_optimizer_state_file(checkpoint_dir: Path) -> Path | None:
    """The optimizer state file of a Trainer/accelerate checkpoint directory, if any."""
    for name in OPTIMIZER_STATE_FILES:
        if (checkpoint_dir / name).is_file():
            return checkpoint_dir / name
    return None


def load_adam_state(
    path: Path, param_names: Sequence[str], param_shapes: Sequence[torch.Size]
) -> AdamState:
    """Load ``optimizer.pt``/``optimizer.bin`` and map it onto the given parameters."""
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    return adam_state_from_state_dict(state_dict, param_names, param_shapes)
