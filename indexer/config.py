"""Settings of the offline jobs: warmup training and datastore build (FAISS index included).

Same conventions as ``less_core.config``: frozen, self-validating, ``to_dict()`` for manifests,
one ``help`` string per field (it becomes the CLI's ``--help``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from less_core.config import Config, require


@dataclass(frozen=True)
class WarmupConfig(Config):
    """Warmup LoRA training on a random fraction of the pool (paper: 5 %, 4 epochs)."""

    fraction: float = field(default=0.05, metadata={"help": "fraction of the pool to train on"})
    seed: int = field(default=0, metadata={"help": "seed for the subset draw and training"})
    epochs: int = field(default=4, metadata={"help": "epochs; one checkpoint is saved per epoch"})
    learning_rate: float = field(default=2e-5, metadata={"help": "peak learning rate"})
    warmup_ratio: float = field(default=0.03, metadata={"help": "linear warmup share of steps"})
    lr_scheduler: str = field(default="linear", metadata={"help": "HF scheduler name"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    batch_size: int = field(default=1, metadata={"help": "per-device micro batch"})
    gradient_accumulation: int = field(default=32, metadata={"help": "micro batches per step"})
    bf16: bool = field(default=False, metadata={"help": "train in bf16 (GPU)"})

    def __post_init__(self) -> None:
        require(
            0.0 < self.fraction <= 1.0, f"warmup fraction must be in (0, 1], got {self.fraction}"
        )
        require(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        require(self.learning_rate > 0, "learning_rate must be > 0")
        require(0.0 <= self.warmup_ratio < 1.0, "warmup_ratio must be in [0, 1)")
        require(
            self.batch_size >= 1 and self.gradient_accumulation >= 1, "batch sizes must be >= 1"
        )


@dataclass(frozen=True)
class BuildConfig(Config):
    """Datastore build: batching, dtypes and the FAISS index."""

    batch_size: int = field(default=16, metadata={"help": "examples per forward/backward"})
    feature_dtype: Literal["float16", "float32"] = field(
        default="float16", metadata={"help": "on-disk dtype of the normalized features"}
    )
    index_factory: str = field(
        default="Flat",
        metadata={"help": "faiss index_factory string; anything but Flat is approximate (opt-in)"},
    )
    sort_by_length: bool = field(
        default=True, metadata={"help": "batch similar lengths together to cut padding"}
    )

    def __post_init__(self) -> None:
        require(self.batch_size >= 1, "batch_size must be >= 1")
        require(self.feature_dtype in ("float16", "float32"), "feature_dtype: float16|float32")
