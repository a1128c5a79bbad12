"""Typed, self-checking configuration of the method, with the paper's defaults.

Settings of the offline jobs only (warmup training, datastore build, FAISS) live in
``indexer.config``; the service's in ``service.settings``.

Each dataclass is frozen, validates itself in ``__post_init__`` (raising ``ConfigError``) and
serialises with ``to_dict()`` so that it can be written into a datastore manifest verbatim.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from typing_extensions import Self

from less_core.errors import ConfigError

# The paper's 5 %: one constant for the library and the API (the wire contract is pydantic-only).
from less_wire import DEFAULT_FRACTION

ProjectorKind = Literal["rademacher", "sjlt"]
ProjectionScope = Literal["whole", "per_module"]
FeatureKind = Literal["adam", "sgd"]
EpsPlacement = Literal["inside", "outside"]
Aggregate = Literal["max", "mean"]


def require(condition: bool, message: str) -> None:
    """Raise ConfigError(message) unless condition holds."""
    if not condition:
        raise ConfigError(message)


@dataclass(frozen=True)
class Config:
    def to_dict(self) -> dict[str, Any]:
        return {
            k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(data) - set(names)
        if unknown:
            raise ConfigError(f"{cls.__name__}: unknown field(s) {sorted(unknown)}")
        kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()}
        return cls(**kwargs)


@dataclass(frozen=True)
class LoraSettings(Config):
    """LoRA placement. Paper (7B): rank 128, alpha 512, dropout 0.1 on q/k/v/o."""

    rank: int = field(default=128, metadata={"help": "LoRA rank r"})
    alpha: float = field(default=512.0, metadata={"help": "LoRA alpha; scaling is alpha / rank"})
    dropout: float = field(
        default=0.1, metadata={"help": "dropout on the LoRA input during warmup"}
    )
    target_modules: tuple[str, ...] = field(
        default=("q_proj", "k_proj", "v_proj", "o_proj"),
        metadata={"help": "names of the linear layers that get adapters"},
    )
    layers: tuple[int, ...] | None = field(
        default=None, metadata={"help": "only these decoder layers get adapters (None: all)"}
    )

    def __post_init__(self) -> None:
        require(self.rank >= 1, f"LoRA rank must be >= 1, got {self.rank}")
        require(self.alpha > 0, f"LoRA alpha must be > 0, got {self.alpha}")
        require(0.0 <= self.dropout < 1.0, f"LoRA dropout must be in [0, 1), got {self.dropout}")
        require(len(self.target_modules) > 0, "LoRA target_modules must not be empty")
        if self.layers is not None:
            require(all(i >= 0 for i in self.layers), "LoRA layers must be non-negative indices")


@dataclass(frozen=True)
class TokenizationConfig(Config):
    """How examples become token ids and loss masks."""

    max_length: int = field(
        default=2048, metadata={"help": "truncate sequences to this many tokens"}
    )

    def __post_init__(self) -> None:
        require(self.max_length >= 2, f"max_length must be >= 2, got {self.max_length}")


@dataclass(frozen=True)
class ProjectionConfig(Config):
    """Random projection Π (P x d). The matrix is a pure function of (seed, kind, P, d)."""

    kind: ProjectorKind = field(
        default="rademacher",
        metadata={"help": "rademacher (dense ±1, LESS/TRAK) or sjlt (sparse JL)"},
    )
    dim: int = field(default=8192, metadata={"help": "projected dimension P"})
    seed: int = field(default=0, metadata={"help": "projector seed; stored in the manifest"})
    scope: ProjectionScope = field(
        default="whole",
        metadata={
            "help": "whole: one projection of the full LoRA gradient (computed block by block); "
            "per_module: each LoRA module projected on its own, results concatenated"
        },
    )
    sjlt_nnz: int = field(default=4, metadata={"help": "non-zeros per input coordinate (sjlt)"})
    dense_cache_mb: int = field(
        default=1024,
        metadata={
            "help": "memory for keeping generated dense blocks; beyond it they are regenerated"
        },
    )

    def __post_init__(self) -> None:
        require(self.kind in ("rademacher", "sjlt"), f"unknown projector kind {self.kind!r}")
        require(self.scope in ("whole", "per_module"), f"unknown projection scope {self.scope!r}")
        require(self.dim >= 1, f"projection dim must be >= 1, got {self.dim}")
        require(0 <= self.seed < 2**32, f"projector seed must be in [0, 2**32), got {self.seed}")
        require(self.sjlt_nnz >= 1, "sjlt_nnz must be >= 1")
        if self.kind == "sjlt":
            require(self.dim % self.sjlt_nnz == 0, "sjlt needs dim divisible by sjlt_nnz")
        require(self.dense_cache_mb >= 0, "dense_cache_mb must be >= 0")


@dataclass(frozen=True)
class AdamFeatureConfig(Config):
    """The virtual Adam step applied to training gradients (SPEC §2.3).

    The default reproduces the LESS reference: eps inside the square root, no bias correction.
    Betas and eps are read from the checkpoint's optimizer state unless overridden here.
    """

    eps_placement: EpsPlacement = field(
        default="inside",
        metadata={"help": "inside: m/sqrt(v+eps) (LESS); outside: m/(sqrt(v)+eps)"},
    )
    bias_correction: bool = field(default=False, metadata={"help": "apply Adam bias correction"})
    betas: tuple[float, float] | None = field(
        default=None, metadata={"help": "override the optimizer state's betas"}
    )
    eps: float | None = field(default=None, metadata={"help": "override the optimizer state's eps"})

    def __post_init__(self) -> None:
        require(self.eps_placement in ("inside", "outside"), "eps_placement: inside|outside")
        if self.betas is not None:
            require(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "betas in [0,1)")
        if self.eps is not None:
            require(self.eps > 0, "eps must be > 0")


@dataclass(frozen=True)
class SelectionConfig(Config):
    """Top-k or top-fraction selection over a datastore (SPEC §2.7)."""

    k: int | None = field(default=None, metadata={"help": "select this many examples"})
    fraction: float | None = field(default=None, metadata={"help": "or this fraction of the pool"})
    aggregate: Aggregate = field(default="max", metadata={"help": "over subtasks: max or mean"})
    checkpoints: tuple[str, ...] | None = field(
        default=None, metadata={"help": "restrict to these checkpoints (weights renormalised)"}
    )

    def __post_init__(self) -> None:
        require(
            not (self.k is not None and self.fraction is not None), "give k or fraction, not both"
        )
        if self.k is not None:
            require(self.k >= 1, f"k must be >= 1, got {self.k}")
        if self.fraction is not None:
            require(0.0 < self.fraction <= 1.0, f"fraction must be in (0, 1], got {self.fraction}")
        require(
            self.aggregate in ("max", "mean"),
            f"aggregate must be max or mean, got {self.aggregate!r}",
        )

    def resolve_k(self, n: int) -> int:
        """Number of examples to return from a pool of ``n``.

        The default (neither ``k`` nor ``fraction``) is 5 %, at least one row. A ``fraction``
        given explicitly that rounds to no row at all is an error rather than a silent 1: the
        caller asked for a share, and should ask for ``k`` instead.

        Raises:
            ConfigError: ``k`` exceeds ``n``, or ``fraction`` of ``n`` rounds to zero rows.
        """
        if self.k is not None:
            if self.k > n:
                raise ConfigError(f"k={self.k} exceeds the pool size {n}")
            return self.k
        if self.fraction is None:
            return max(1, min(n, round(DEFAULT_FRACTION * n)))
        k = min(n, round(self.fraction * n))
        if k == 0:
            raise ConfigError(
                f"fraction={self.fraction} of {n} examples selects none; give k instead"
            )
        return k
