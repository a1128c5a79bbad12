"""Warmup checkpoints on disk: discovery, learning rates and Adam state.

A checkpoint is an HF-Trainer/PEFT directory ``checkpoint-<step>/`` holding the adapter
(``adapter_model.safetensors`` + ``adapter_config.json``) and the optimizer state
(``optimizer.pt`` from Trainer or ``optimizer.bin`` from accelerate). Our own warmup writes
exactly this layout, so checkpoints from a team's earlier warmup are indexed the same way.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from indexer.optimizer_files import find_optimizer_state_file
from less_core.errors import CheckpointNotFoundError, ConfigError, IndexNotFoundError

_CHECKPOINT_DIR = re.compile(r"^checkpoint-(\d+)$")


@dataclass(frozen=True)
class Checkpoint:
    """One warmup checkpoint.

    Attributes:
        name: directory name, e.g. ``checkpoint-12``.
        path: the directory.
        step: global optimizer step at which it was saved.
        lr: learning rate η_c used for its weight (mean lr over the steps since the previous one).
        lr_source: where ``lr`` came from (trainer log, scheduler state, or user override).
    """

    name: str
    path: Path
    step: int
    lr: float
    lr_source: str

    @property
    def optimizer_state_path(self) -> Path | None:
        return find_optimizer_state_file(self.path)


def _log_history(checkpoint_dirs: list[Path]) -> list[dict]:
    # The last checkpoint's trainer_state.json holds the whole log from step 1.
    for path in reversed(checkpoint_dirs):
        state_file = path / "trainer_state.json"
        if state_file.is_file():
            return json.loads(state_file.read_text()).get("log_history", [])
    return []


def _scheduler_lr(path: Path) -> float | None:
    sched = path / "scheduler.pt"
    if not sched.is_file():
        return None
    state = torch.load(sched, map_location="cpu", weights_only=True)
    last = state.get("_last_lr")
    return float(last[0]) if last else None


def discover_checkpoints(
    warmup_dir: str | Path, lr_overrides: dict[str, float] | None = None
) -> list[Checkpoint]:
    """All ``checkpoint-<step>`` directories under ``warmup_dir``, sorted by step.

    Each checkpoint's η_c is the mean learning rate over the optimizer steps it covers, read from
    the Trainer's log (``logging_steps=1`` logs every step; the LESS reference weights epochs by
    their average lr). Without a log, the scheduler's last lr is used; ``lr_overrides`` wins.

    Raises:
        IndexNotFoundError: no checkpoints there.
        ConfigError: a checkpoint lacks a learning rate and no override is given.
    """
    root = Path(warmup_dir)
    if not root.is_dir():
        raise IndexNotFoundError(f"warmup directory {root} does not exist")
    found = sorted(
        (int(m.group(1)), p)
        for p in root.iterdir()
        if p.is_dir() and (m := _CHECKPOINT_DIR.match(p.name))
    )
    if not found:
        raise IndexNotFoundError(f"no checkpoint-<step> directories in {root}")
    overrides = dict(lr_overrides or {})
    unknown = set(overrides) - {p.name for _, p in found}
    if unknown:
        raise CheckpointNotFoundError(f"lr override for unknown checkpoint(s) {sorted(unknown)}")
    history = [
        h for h in _log_history([p for _, p in found]) if "learning_rate" in h and "step" in h
    ]
    out, prev_step = [], 0
    for step, path in found:
        if path.name in overrides:
            lr, source = float(overrides[path.name]), "override"
        else:
            lrs = [float(h["learning_rate"]) for h in history if prev_step < h["step"] <= step]
            if lrs:
                lr, source = sum(lrs) / len(lrs), f"trainer log mean over {len(lrs)} steps"
            else:
                lr, source = _scheduler_lr(path), "scheduler _last_lr"
                if lr is None:
                    raise ConfigError(f"{path}: no learning rate found; pass an lr override")
        out.append(Checkpoint(path.name, path, step, lr, source))
        prev_step = step
    return out


def select_checkpoints(checkpoints: list[Checkpoint], names: list[str] | None) -> list[Checkpoint]:
    """The named subset (all when ``names`` is None); unknown names raise."""
    if names is None:
        return checkpoints
    by_name = {c.name: c for c in checkpoints}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise CheckpointNotFoundError(f"unknown checkpoint(s) {missing}; have {sorted(by_name)}")
    return [by_name[n] for n in names]
