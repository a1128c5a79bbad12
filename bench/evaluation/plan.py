"""The evaluation's scales (frozen dataclasses) and the work units they imply.

A :class:`Scale` fixes everything that decides a number in the results: the BIG-bench split, the
LoRA placement, the warmup that makes the datastores, the training every method's selection gets,
the seeds. :data:`SCALES` holds the two the command offers (``demo`` and ``full``);
:func:`count_units` says how many units of each kind a scale means, for the plan in the log and
the ETA.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from less_core.config import require

IN_POOL = "in_pool"
OUT_OF_POOL = "out_of_pool"
#: Setting (i): the target task's own pool rows are candidates; setting (ii), the paper's: the
#: pool without any target task, so selection has to find related data.
SETTINGS: tuple[str, ...] = (IN_POOL, OUT_OF_POOL)

#: Selection methods trained and compared, in table order. ``less_dense`` only exists where
#: ``Scale.dense_seeds`` / ``dense_settings`` built a dense-projector datastore.
RANDOM = "random"
WHOLE_POOL = "whole_pool"
SELECTION_METHODS: tuple[str, ...] = (
    "less",
    "less_last_ckpt",
    "less_dense",
    "bm25",
    "dsir",
    "rds_mean",
    "rds_last",
    RANDOM,
)
METHODS: tuple[str, ...] = (*SELECTION_METHODS, WHOLE_POOL)

SOURCE_BIGBENCH = "bigbench"
SOURCE_OPENAI_EVALS = "openai-evals"
#: Target tasks per scale and task source. BIG-bench: BBH source tasks with distinct wording,
#: short prompts and enough usable examples for targets + eval + pool rows. OpenAI evals
#: registry (where the bigbench sdist is not on the index): the demo's six defaults plus two,
#: most with a small closed answer set (so accuracy is measured).
TARGET_TASKS: dict[tuple[str, str], tuple[str, ...]] = {
    ("full", SOURCE_BIGBENCH): (
        "date_understanding",
        "logical_deduction",
        "sports_understanding",
        "word_sorting",
        "hyperbaton",
        "navigate",
        "disambiguation_qa",
        "ruin_names",
    ),
    ("demo", SOURCE_BIGBENCH): ("date_understanding", "sports_understanding", "word_sorting"),
    ("full", SOURCE_OPENAI_EVALS): (
        "born_first",
        "crepe",
        "imperial_date_to_string",
        "medmcqa",
        "partially_solved_crossword_clues",
        "syllables_long_words",
        "which_is_heavier",
        "sarcasm",
    ),
    ("demo", SOURCE_OPENAI_EVALS): ("born_first", "which_is_heavier", "syllables_long_words"),
}
SOURCES: tuple[str, ...] = (SOURCE_BIGBENCH, SOURCE_OPENAI_EVALS)


@dataclass(frozen=True)
class Scale:
    """One size of the whole evaluation. Every field enters the cache keys it affects."""

    name: str = field(metadata={"help": "demo or full"})
    target_tasks: tuple[str, ...] = field(metadata={"help": "BIG-bench tasks to select for"})
    n_pool_tasks: int = field(metadata={"help": "non-target tasks mixed into the pool"})
    per_task_pool: int = field(metadata={"help": "pool rows per task (target tasks too)"})
    n_targets_per_task: int = field(default=8, metadata={"help": "few-shot target examples"})
    n_eval_per_task: int = field(default=32, metadata={"help": "held-out rows per target task"})
    seeds: tuple[int, ...] = field(
        default=(0, 1, 2), metadata={"help": "warmup subset + warmup/training init per seed"}
    )
    max_length: int = field(default=256, metadata={"help": "tokens per example at most"})
    lora_rank: int = field(default=8, metadata={"help": "LoRA rank (alpha = 4 x rank)"})
    lora_top_layers: int = field(
        default=4,
        metadata={
            "help": "LoRA on q/k/v/o of the last N decoder layers only: the layers below are "
            "frozen, so their output is computed once per example and reused by every run"
        },
    )
    warmup_fraction: float = field(default=0.05, metadata={"help": "warmup share of the pool"})
    warmup_epochs: int = field(default=2, metadata={"help": "warmup epochs = checkpoints"})
    warmup_lr: float = field(default=2e-4, metadata={"help": "warmup peak learning rate"})
    proj_dim: int = field(default=8192, metadata={"help": "projection dimension P"})
    dense_seeds: tuple[int, ...] = field(
        default=(0,), metadata={"help": "seeds that also get a dense (rademacher) datastore"}
    )
    dense_settings: tuple[str, ...] = field(
        default=(IN_POOL,), metadata={"help": "settings that get a dense datastore"}
    )
    fraction: float = field(default=0.05, metadata={"help": "share of the pool each method picks"})
    train_epochs: int = field(default=3, metadata={"help": "epochs of every evaluation training"})
    train_batch: int = field(
        default=4, metadata={"help": "examples per optimizer step (one micro-batch)"}
    )
    train_lr: float = field(default=3e-4, metadata={"help": "peak lr (linear decay, 3 % warmup)"})
    fidelity_dims: tuple[int, ...] = field(
        default=(256, 1024, 4096, 8192), metadata={"help": "P values of the fidelity check"}
    )

    def __post_init__(self) -> None:
        require(len(self.target_tasks) >= 1, "a scale needs at least one target task")
        require(len(set(self.target_tasks)) == len(self.target_tasks), "duplicate target tasks")
        require(len(self.seeds) >= 1 and len(set(self.seeds)) == len(self.seeds), "bad seeds")
        require(set(self.dense_seeds) <= set(self.seeds), "dense_seeds must be among seeds")
        require(set(self.dense_settings) <= set(SETTINGS), f"dense_settings: {SETTINGS}")
        require(0 < self.fraction <= 1, "fraction must be in (0, 1]")
        require(self.lora_top_layers >= 1 and self.warmup_epochs >= 1, "counts must be >= 1")
        require(self.train_epochs >= 1 and self.train_batch >= 1, "counts must be >= 1")
        require(self.n_pool_tasks >= 1 and self.per_task_pool >= 1, "pool sizes must be >= 1")

    def with_targets(self, tasks: tuple[str, ...]) -> Scale:
        """The same scale selecting for other target tasks (e.g. in a local task directory)."""
        return dataclasses.replace(self, target_tasks=tuple(tasks))

    def pool_sizes(self) -> dict[str, int]:
        """Pool rows per setting, assuming every task gives ``per_task_pool`` rows."""
        n_targets = len(self.target_tasks)
        return {
            IN_POOL: (self.n_pool_tasks + n_targets) * self.per_task_pool,
            OUT_OF_POOL: self.n_pool_tasks * self.per_task_pool,
        }

    def k(self, n_pool: int) -> int:
        """Rows each method selects from a pool of ``n_pool``."""
        return max(1, round(self.fraction * n_pool))

    def steps(self, n_rows: int) -> int:
        """Optimizer steps of an evaluation training on ``n_rows`` rows."""
        return -(-n_rows // self.train_batch) * self.train_epochs

    def dense(self, setting: str, seed: int) -> bool:
        """Whether (setting, seed) also gets the dense-projector datastore and ``less_dense``."""
        return setting in self.dense_settings and seed in self.dense_seeds

    def to_json(self) -> dict[str, Any]:
        """Plain JSON (tuples as lists), for the results file and the cache keys."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }


DEMO = Scale(
    name="demo",
    target_tasks=TARGET_TASKS[("demo", SOURCE_BIGBENCH)],
    n_pool_tasks=9,
    per_task_pool=12,
    n_targets_per_task=8,
    n_eval_per_task=16,
    seeds=(0, 1),
    train_batch=1,  # 7 / 5 rows: one example per step, so the loss still takes >= 15 steps
)
FULL = Scale(
    name="full",
    target_tasks=TARGET_TASKS[("full", SOURCE_BIGBENCH)],
    n_pool_tasks=24,
    per_task_pool=30,
)
SCALES: dict[str, Scale] = {s.name: s for s in (DEMO, FULL)}


def scale_for(name: str, source: str = SOURCE_BIGBENCH) -> Scale:
    """The named scale with its target tasks for the task source."""
    return SCALES[name].with_targets(TARGET_TASKS[(name, source)])


@dataclass(frozen=True)
class CostModel:
    """Seconds per example of each kind of work, measured on the idle 2-core CPU machine with
    SmolLM2-135M, LoRA r8 on q/k/v/o of the last 4 of 30 layers, ~110-token examples, torch's
    default threads. A machine shared with other jobs runs 2-5x slower. Only the plan's
    prediction and the ETA (until a unit of the kind is timed) use them."""

    prefix: float = field(default=0.10, metadata={"help": "the 26 frozen layers, one sequence"})
    warmup: float = field(default=0.25, metadata={"help": "HF Trainer step share, full model"})
    featurize_sparse: float = field(default=0.145, metadata={"help": "per row and checkpoint"})
    featurize_dense: float = field(default=0.255, metadata={"help": "per row and checkpoint"})
    train: float = field(default=0.043, metadata={"help": "top-layer forward+backward, per row"})
    evaluate: float = field(default=0.017, metadata={"help": "top-layer forward, per sequence"})
    target_gradient: float = field(default=0.15, metadata={"help": "per target and checkpoint"})
    options_per_question: float = field(default=4.0, metadata={"help": "mean options scored"})


COSTS = CostModel()


def estimate_unit_s(scale: Scale, costs: CostModel = COSTS) -> dict[str, float]:
    """Predicted seconds of one unit of each kind (means over the scale's units)."""
    sizes = scale.pool_sizes()
    n_pool = sum(sizes.values()) / len(sizes)
    k = scale.k(int(n_pool))
    n_task = len(scale.target_tasks)
    per_task_eval = scale.n_eval_per_task * (1 + costs.options_per_question)
    ckpts = scale.warmup_epochs
    return {
        "prefix": costs.prefix
        * (sizes[IN_POOL] + n_task * (scale.n_targets_per_task + per_task_eval))
        / (1 + n_task),
        "warmup": costs.warmup * scale.warmup_fraction * n_pool * scale.warmup_epochs,
        "datastore": costs.featurize_sparse * n_pool * ckpts,
        "datastore_dense": costs.featurize_dense * sizes[IN_POOL] * ckpts,
        "selection": costs.target_gradient * scale.n_targets_per_task * (ckpts + 1) + 1.0,
        "training": costs.train * k * scale.train_epochs + costs.evaluate * per_task_eval,
        "base": costs.evaluate * per_task_eval,
        "whole_pool": costs.train * n_pool * scale.train_epochs
        + costs.evaluate * per_task_eval * n_task,
        "fidelity": costs.target_gradient * 56 + 60.0,
    }


def predict_s(scale: Scale, costs: CostModel = COSTS) -> dict[str, float]:
    """Predicted seconds per kind of unit for the whole scale (identical selections not
    deduplicated, so an upper bound on trainings)."""
    per = estimate_unit_s(scale, costs)
    units = count_units(scale)
    dense = units["datastore"] - len(SETTINGS) * len(scale.seeds)
    return {
        "prefix": per["prefix"] * (1 + len(scale.target_tasks)),
        "warmup": per["warmup"] * units["warmup"],
        "datastore": per["datastore"] * (units["datastore"] - dense)
        + per["datastore_dense"] * dense,
        "selection": per["selection"] * units["selection"],
        "training": per["training"] * units["training"],
        "base": per["base"] * len(scale.target_tasks),
        "whole_pool": per["whole_pool"] * len(SETTINGS) * len(scale.seeds),
        "fidelity": per["fidelity"],
    }


def count_units(scale: Scale) -> dict[str, int]:
    """How many units of each kind the scale runs (upper bounds: identical selections of two
    methods share one training)."""
    n_set, n_seed, n_task = len(SETTINGS), len(scale.seeds), len(scale.target_tasks)
    dense = sum(scale.dense(s, seed) for s in SETTINGS for seed in scale.seeds)
    per_task = len(SELECTION_METHODS) - 1  # less_dense is counted with ``dense``
    return {
        "warmup": n_set * n_seed,
        "datastore": n_set * n_seed + dense,
        "selection": n_set * n_seed * n_task,
        "training": n_set * n_seed * (n_task * per_task + 1) + dense * n_task,
    }
