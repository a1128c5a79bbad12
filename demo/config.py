"""The demo's settings: sized to finish in minutes on a 2-core CPU, all overridable by flags."""

from __future__ import annotations

from dataclasses import dataclass, field

from demo.sources.config import (
    SOURCE_AUTO,
    SOURCE_BIGBENCH,
    SOURCE_CHOICES,
    SOURCE_OPENAI_EVALS,
    SourceChoice,
)
from less_core.config import require

#: The task the demo selects for when none is named: one of the source's target tasks whose
#: rows share a clear, fixed wording, so selection should find the task's own pool rows.
#: imperial_date_to_string: one instruction ("Convert the user's date ... to a sentance with
#: Weekday, month day, Year") over a bare date, answered by a sentence of one shape.
DEMO_TARGET_TASK_BY_SOURCE = {
    SOURCE_BIGBENCH: "sports_understanding",
    SOURCE_OPENAI_EVALS: "imperial_date_to_string",
}


@dataclass(frozen=True)
class DemoConfig:
    """What the demo builds and asks. Paper-scale runs raise these numbers (see README)."""

    data_dir: str = field(
        default="data", metadata={"help": "cache for model, task files and datastores"}
    )
    source: SourceChoice = field(
        default=SOURCE_AUTO,
        metadata={
            "help": "real tasks: bigbench, openai-evals, or auto (BIG-bench 1.0.0 when the "
            "package index lists it, else the OpenAI evals registry)"
        },
    )
    target_task: str | None = field(
        default=None,
        metadata={
            "help": "task to select for (None: "
            + ", ".join(f"{v} on {k}" for k, v in DEMO_TARGET_TASK_BY_SOURCE.items())
            + ")"
        },
    )
    per_task_pool: int = field(default=12, metadata={"help": "pool examples per task"})
    n_pool_tasks: int = field(default=24, metadata={"help": "non-target tasks mixed into the pool"})
    max_length: int = field(default=256, metadata={"help": "tokens per example at most"})
    lora_rank: int = field(default=8, metadata={"help": "LoRA rank (paper, 7B: 128)"})
    lora_alpha: float = field(default=32.0, metadata={"help": "LoRA alpha (paper: 4 x rank)"})
    lora_top_layers: int = field(
        default=8,
        metadata={"help": "adapters on the last N decoder layers only: backward stops there"},
    )
    warmup_fraction: float = field(
        default=0.05, metadata={"help": "warmup share of the pool (paper: 0.05)"}
    )
    warmup_epochs: int = field(
        default=2, metadata={"help": "warmup epochs = checkpoints (paper: 4)"}
    )
    warmup_lr: float = field(default=2e-4, metadata={"help": "warmup peak lr"})
    projector: str = field(default="sjlt", metadata={"help": "rademacher or sjlt"})
    proj_dim: int = field(default=8192, metadata={"help": "projection dimension P"})
    batch_size: int = field(default=16, metadata={"help": "featurization batch size"})
    fraction: float = field(default=0.05, metadata={"help": "share of the pool to select"})
    show: int = field(default=15, metadata={"help": "rows of the result table to print"})
    explain_top: int = field(
        default=3, metadata={"help": "rows whose explanation is printed under the table"}
    )
    result_json: str = field(
        default="",
        metadata={
            "help": "also write the selection's summary (share from the target task, chance, "
            "the command) as JSON to this path, e.g. bench/results/demo.json"
        },
    )
    serve: bool = field(
        default=False,
        metadata={"help": "keep the service (and its web page at /ui) running until Ctrl-C"},
    )

    def __post_init__(self) -> None:
        require(self.source in SOURCE_CHOICES, f"source must be one of {list(SOURCE_CHOICES)}")
        require(self.per_task_pool >= 1 and self.n_pool_tasks >= 1, "pool sizes must be >= 1")
        require(self.lora_top_layers >= 1, "lora_top_layers must be >= 1")
        require(0 < self.fraction <= 1, "fraction must be in (0, 1]")
        require(self.show >= 1, "show must be >= 1")
        require(self.explain_top >= 0, "explain_top must be >= 0")
