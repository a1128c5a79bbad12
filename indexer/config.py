"""Settings of the offline jobs: warmup training and datastore build (FAISS index included).

Same conventions as ``less_core.config``: frozen, self-validating, ``to_dict()`` for manifests,
one ``help`` string per field (it becomes the CLI's ``--help``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from less_core.config import Config, require

EXACT_FACTORY = "Flat"
"""The exact index: the stored (N, C·P) features themselves, scanned block by block."""


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
        metadata={
            "help": "search index: Flat = exact search over the stored features (no extra file); "
            "any other faiss index_factory string (e.g. IVF1024,SQ8 or HNSW32) builds an "
            "approximate inner-product index per shard (opt-in; `verify` measures its recall)"
        },
    )
    sort_by_length: bool = field(
        default=True, metadata={"help": "batch similar lengths together to cut padding"}
    )
    autocast: Literal["none", "bf16", "fp16"] = field(
        default="none",
        metadata={
            "help": "mixed precision for the forward/backward (bf16/fp16 on GPUs; features stay "
            "float32 after the gradient); none: full precision"
        },
    )
    shard_rows: int | None = field(
        default=None,
        metadata={
            "help": "rows per shard (contiguous, in pool order); None: one shard. Shards are "
            "featurized and searched independently and merged exactly; ranks of a distributed "
            "build take whole shards"
        },
    )

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The torch dtype of ``autocast``, or None for full precision."""
        return {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[self.autocast]

    @property
    def exact(self) -> bool:
        """True when search runs exactly over the stored features (no approximate index)."""
        # "none" is how format-1 builds asked for no index file: the same exact search.
        return self.index_factory.strip().lower() in (EXACT_FACTORY.lower(), "none")

    def __post_init__(self) -> None:
        require(self.batch_size >= 1, "batch_size must be >= 1")
        require(self.shard_rows is None or self.shard_rows >= 1, "shard_rows must be >= 1")
        require(self.autocast in ("none", "bf16", "fp16"), "autocast: none|bf16|fp16")
        require(bool(self.index_factory.strip()), "index_factory must not be empty")
        require(self.feature_dtype in ("float16", "float32"), "feature_dtype: float16|float32")
