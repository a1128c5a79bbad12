"""Normalisation, checkpoint weights, subtask queries and top-k selection (SPEC §2.6–2.7).

Two identities make serving exact and cheap:
- mean_{v in V_s} <f, q(v)> = <f, mean_v q(v)>: a subtask's query per checkpoint is one vector;
- sum_c w_c <f_c, q_c> = <concat_c f_c, concat_c w_c q_c>: a multi-checkpoint score is one
  inner product, so scoring is a single (blocked) matrix product.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import torch

from less_core.config import Aggregate
from less_core.errors import ConfigError, DataError


def l2_normalize(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Rows of ``x`` scaled to unit L2 norm; (B, P) -> (B, P). Zero rows stay zero."""
    norms: torch.Tensor = x.norm(dim=-1, keepdim=True).clamp_min(eps)  # (B, 1)
    return x / norms


def checkpoint_weights(learning_rates: Sequence[float]) -> npt.NDArray[np.float64]:
    """w_c = η_c / Σ η_c' for the checkpoints' learning rates; (C,) float64."""
    lrs = np.asarray(learning_rates, dtype=np.float64)  # (C,)
    if lrs.ndim != 1 or lrs.size == 0:
        raise ConfigError("need at least one checkpoint learning rate")
    total = float(lrs.sum())  # exact: a float64 scalar
    if np.any(lrs < 0) or not np.all(np.isfinite(lrs)) or total <= 0:
        raise ConfigError(
            f"checkpoint learning rates must be finite, >= 0, not all 0: {lrs.tolist()}"
        )
    return lrs / total


def subtask_queries(
    target_features: Sequence[torch.Tensor],
    subtask_of: Sequence[str],
    weights: Sequence[float],
) -> tuple[list[str], torch.Tensor]:
    """Weighted, concatenated mean target feature of each subtask.

    Args:
        target_features: per checkpoint c, (T, P) L2-normalized target features.
        subtask_of: length T, the subtask label of each target.
        weights: (C,) checkpoint weights w_c.

    Returns:
        (subtask names in first-seen order, (S, C·P) float32 queries concat_c w_c·q̄_{s,c}).
    """
    if len(target_features) != len(weights):
        raise ConfigError("one weight per checkpoint's target features is required")
    n = len(subtask_of)
    if n == 0:
        raise DataError("no targets given")
    names = list(dict.fromkeys(subtask_of))
    index = torch.tensor([names.index(s) for s in subtask_of])
    counts = torch.bincount(index, minlength=len(names)).to(torch.float32)
    parts = []
    for feats, w in zip(target_features, weights):
        if feats.shape[0] != n:
            raise ConfigError(f"expected {n} target features, got {feats.shape[0]}")
        sums = torch.zeros(len(names), feats.shape[1], dtype=torch.float32, device=feats.device)
        sums.index_add_(0, index.to(feats.device), feats.to(torch.float32))
        parts.append(sums / counts.to(feats.device)[:, None] * float(w))
    return names, torch.cat(parts, dim=1)


def aggregate_scores(per_subtask: torch.Tensor, aggregate: Aggregate) -> torch.Tensor:
    """(N, S) subtask scores -> (N,) by max (LESS) or mean over subtasks."""
    if aggregate == "max":
        return per_subtask.max(dim=1).values
    if aggregate == "mean":
        return per_subtask.mean(dim=1)
    raise ConfigError(f"unknown aggregate {aggregate!r}")


def top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Row indices of the k highest scores, best first; ties broken by the lower row index.

    Args:
        scores: (N,) scores.

    Returns:
        (k,) int64 row indices.
    """
    n = scores.shape[0]
    if not 1 <= k <= n:
        raise ConfigError(f"k must be in [1, {n}], got {k}")
    order = torch.sort(-scores.to(torch.float64), stable=True).indices
    return order[:k]
