"""The settings of the BIG-bench pool / targets / eval splits (one frozen dataclass).

Its fields are also the flags of ``python -m demo.sources.cli`` (generated from the
dataclass by :func:`indexer.cli_args.add_dataclass_args`), so defaults and help live here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from less_core.errors import ConfigError

#: BBH source tasks with distinct wording, short prompts and >= 300 usable examples in 1.0.0
#: (three multiple-choice, one free-form answer).
DEFAULT_TARGET_TASKS: tuple[str, ...] = (
    "date_understanding",
    "logical_deduction",
    "sports_understanding",
    "word_sorting",
)


@dataclass(frozen=True)
class BigBenchConfig:
    """How to build the pool / target / eval splits. Same config and files → same bytes."""

    pool_tasks: tuple[str, ...] | None = field(
        default=None,
        metadata={
            "help": "non-target tasks mixed into the pool; None picks n_pool_tasks automatically "
            "(deterministically from seed) among tasks with enough short, plain-text "
            "examples"
        },
    )
    n_pool_tasks: int = field(
        default=24,
        metadata={"help": "how many non-target tasks to auto-pick when pool_tasks is None"},
    )
    per_task_pool: int = field(
        default=40,
        metadata={"help": "examples each task contributes to the pool (fewer if it has fewer)"},
    )
    target_tasks: tuple[str, ...] = field(
        default=DEFAULT_TARGET_TASKS,
        metadata={
            "help": "tasks that get few-shot targets and held-out eval rows; their remaining "
            "examples also feed the pool (per_task_pool of them)"
        },
    )
    n_targets_per_task: int = field(
        default=8, metadata={"help": "target (few-shot query) examples per target task"}
    )
    n_eval_per_task: int = field(
        default=32, metadata={"help": "held-out evaluation examples per target task"}
    )
    max_chars: int = field(
        default=1500,
        metadata={"help": "drop examples whose user prompt + answer exceed this many characters"},
    )
    seed: int = field(
        default=0, metadata={"help": "seed of every random choice (task pick, per-task sampling)"}
    )
    shuffle_choices: bool = field(
        default=True,
        metadata={
            "help": "list multiple-choice options in an order hashed from the example id, not "
            "file order (BIG-bench files often list the right answer first)"
        },
    )

    def __post_init__(self) -> None:
        for name in (
            "n_pool_tasks",
            "per_task_pool",
            "n_targets_per_task",
            "n_eval_per_task",
            "max_chars",
        ):
            low = 0 if name == "n_pool_tasks" else 1
            if getattr(self, name) < low:
                raise ConfigError(f"{name} must be >= {low}, got {getattr(self, name)}")
        # Accept lists for convenience, store tuples so the config stays hashable.
        object.__setattr__(self, "target_tasks", tuple(self.target_tasks))
        if self.pool_tasks is not None:
            object.__setattr__(self, "pool_tasks", tuple(self.pool_tasks))
        if not self.target_tasks:
            raise ConfigError("target_tasks must name at least one task")
        for label, names in (
            ("target_tasks", self.target_tasks),
            ("pool_tasks", self.pool_tasks or ()),
        ):
            if len(set(names)) != len(names):
                raise ConfigError(f"{label} has duplicates: {list(names)}")
        overlap = sorted(set(self.target_tasks) & set(self.pool_tasks or ()))
        if overlap:
            raise ConfigError(
                f"pool_tasks must not repeat target tasks (they join the pool "
                f"automatically): {overlap}"
            )

    def to_json(self) -> dict[str, Any]:
        """The config as plain JSON types (tuples become lists)."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }
