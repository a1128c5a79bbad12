"""The settings of the pool / targets / eval splits (one frozen dataclass) and the data sources.

Its fields are also the flags of ``python -m demo.sources.cli`` (generated from the
dataclass by :func:`indexer.cli_args.add_dataclass_args`), so defaults and help live here.
The splits are built from task folders in BIG-bench's format, which come from one of two
sources: BIG-bench itself, or the OpenAI evals registry converted to that format
(:mod:`demo.sources.evals_registry`); each source has its own default target tasks.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from less_core.errors import ConfigError

SOURCE_AUTO: Final = "auto"
SOURCE_BIGBENCH: Final = "bigbench"
SOURCE_OPENAI_EVALS: Final = "openai-evals"
#: The real task sources, in the order ``auto`` prefers them.
SOURCES: tuple[str, ...] = (SOURCE_BIGBENCH, SOURCE_OPENAI_EVALS)
SOURCE_CHOICES: tuple[str, ...] = (SOURCE_AUTO, *SOURCES)
#: ``auto``: BIG-bench 1.0.0 when the package index lists it, else the OpenAI evals registry.
SourceChoice = Literal["auto", "bigbench", "openai-evals"]

#: BBH source tasks with distinct wording, short prompts and >= 300 usable examples in 1.0.0
#: (three multiple-choice, one free-form answer).
DEFAULT_TARGET_TASKS: tuple[str, ...] = (
    "date_understanding",
    "logical_deduction",
    "sports_understanding",
    "word_sorting",
)

#: OpenAI evals registry tasks: English, >= 100 usable examples under max_chars (targets + eval +
#: a 40-row pool share fit), short prompts (median 55-135 SmolLM2 tokens; every example of
#: all but crepe, whose longest is 257, fits the demo's 256-token limit, so any of them works
#: as ``--target-task``), and worded unlike each other: each has its own instruction, none
#: shares another's template. A mix like BIG-bench's: three pick-an-option tasks (crepe: more /
#: less / equally likely; quartz: lettered options A / B; born_first: Y or N) and three
#: free-form answers (syllables_long_words: a number; partially_solved_crossword_clues: a
#: word; imperial_date_to_string: a sentence). Passed over: a second yes/no template
#: (which_is_heavier), prompts that can pass 256 tokens (medmcqa, fcc_amateur_extra,
#: event_categories), answers that are lookups of a fixed label set (soc_codes).
EVALS_DEFAULT_TARGET_TASKS: tuple[str, ...] = (
    "born_first",
    "crepe",
    "imperial_date_to_string",
    "partially_solved_crossword_clues",
    "quartz",
    "syllables_long_words",
)
DEFAULT_TARGET_TASKS_BY_SOURCE: dict[str, tuple[str, ...]] = {
    SOURCE_BIGBENCH: DEFAULT_TARGET_TASKS,
    SOURCE_OPENAI_EVALS: EVALS_DEFAULT_TARGET_TASKS,
}


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
            "examples also feed the pool (per_task_pool of them). The CLI and the demo default "
            "to the source's own: these BIG-bench tasks, or "
            + ",".join(EVALS_DEFAULT_TARGET_TASKS)
            + " on the OpenAI evals registry"
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
