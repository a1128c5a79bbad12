"""The demo's settings: sized to finish in minutes on a 2-core CPU, all overridable by flags."""

from __future__ import annotations

from dataclasses import dataclass, field

from less_core.config import require


@dataclass(frozen=True)
class DemoConfig:
    """What the demo builds and asks. Paper-scale runs raise these numbers (see README)."""

    data_dir: str = field(
        default="data", metadata={"help": "cache for model, BIG-bench and datastores"}
    )
    target_task: str = field(
        default="sports_understanding", metadata={"help": "BIG-bench task to select for"}
    )
    per_task_pool: int = field(default=12, metadata={"help": "pool examples per BIG-bench task"})
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

    def __post_init__(self) -> None:
        require(self.per_task_pool >= 1 and self.n_pool_tasks >= 1, "pool sizes must be >= 1")
        require(self.lora_top_layers >= 1, "lora_top_layers must be >= 1")
        require(0 < self.fraction <= 1, "fraction must be in (0, 1]")
        require(self.show >= 1, "show must be >= 1")
