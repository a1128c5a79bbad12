"""Steering a selection beyond top-k: negative targets, budgets, balance, a duplicate guard,
and explanations of the rows picked (pure functions over tensors and arrays).

- **Avoid** (negative targets): score_s(z) = <F(z), Q_s> - λ <F(z), A> with A the weighted,
  concatenated mean feature of the avoid examples. Folding -λA into every subtask query keeps
  the whole score one inner product, so exact search, FAISS and batching need no change.
- **Walk**: the ranking(s) the search returned are consumed best first: one ranking (the
  aggregate score) or one per subtask taken in turn (``balance="subtask"``), skipping rows
  already taken or too similar to a taken row, until k rows are taken or the next row would
  overrun the token budget. ``walk_rankings`` says when a ranking ran out before the walk was
  done, so the caller can search deeper: the result is the same as walking the full rankings.
- **Explain**: for chosen rows, each checkpoint's share of the score, the score against each
  subtask, the single closest target and the similarity to the avoid set.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from less_core.config import Aggregate
from less_core.errors import ConfigError


def fold_avoid(queries: torch.Tensor, avoid: torch.Tensor | None, weight: float) -> torch.Tensor:
    """Subtask queries with the avoid direction subtracted: Q_s - weight·A.

    Args:
        queries: (S, C·P) concat_c w_c·q̄_{s,c}.
        avoid: (C·P,) concat_c w_c·ā_c of the avoid examples, or None (returned unchanged).
        weight: λ >= 0.

    Returns:
        (S, C·P) float32.
    """
    if avoid is None:
        return queries
    if weight < 0:
        raise ConfigError(f"avoid weight must be >= 0, got {weight}")
    if avoid.shape != (queries.shape[1],):
        raise ConfigError(f"avoid vector must be ({queries.shape[1]},), got {tuple(avoid.shape)}")
    return queries - float(weight) * avoid.to(queries.dtype)[None, :]


def weighted_concat(features: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """concat_c sqrt(w_c)·f_c: rows whose inner products are Σ_c w_c <f_c(a), f_c(b)>.

    Args:
        features: per checkpoint, (R, P).
        weights: (C,) checkpoint weights.

    Returns:
        (R, C·P) float32.
    """
    return torch.cat(
        [f.to(torch.float32) * float(np.sqrt(w)) for f, w in zip(features, weights)], dim=1
    )


class NearDuplicateGuard:
    """Refuses a row whose similarity to an accepted row exceeds ``max_similarity``.

    Similarity is the checkpoint-weighted cosine Σ_c w_c <f_c(a), f_c(b)> (1 for identical
    rows, since every f_c is unit norm and the weights sum to 1). Every offer is compared with
    every row accepted so far, so the work grows with (offers × accepted × dim); past
    ``max_work`` multiply-adds the guard stops with a ``GuardBudgetError`` instead of holding
    the caller for minutes.
    """

    def __init__(self, max_similarity: float, dim: int, max_work: float = float("inf")):
        self.max_similarity = max_similarity
        self.max_work = max_work
        self.work = 0.0
        self._kept = torch.empty(64, dim, dtype=torch.float32)
        self._n = 0

    @property
    def n_accepted(self) -> int:
        return self._n

    def offer(self, vector: torch.Tensor) -> bool:
        """True (and remembered) unless ``vector`` (C·P,) from ``weighted_concat`` is too close
        to one accepted before.

        Raises:
            GuardBudgetError: the comparisons so far exceed ``max_work``.
        """
        if self._n:
            self.work += self._n * vector.numel()
            if self.work > self.max_work:
                raise GuardBudgetError(
                    f"max_similarity={self.max_similarity}: the near-duplicate guard needed more "
                    f"than {self.max_work:.3g} comparisons ({self._n} rows taken so far); ask "
                    "for fewer rows or a higher max_similarity"
                )
            sims = self._kept[: self._n] @ vector
            if float(sims.max()) > self.max_similarity:
                return False
        if self._n == self._kept.shape[0]:  # grow by doubling: accepted rows are not known ahead
            grown = torch.empty(2 * self._n, self._kept.shape[1], dtype=torch.float32)
            grown[: self._n] = self._kept
            self._kept = grown
        self._kept[self._n] = vector
        self._n += 1
        return True


class GuardBudgetError(ConfigError):
    """The near-duplicate guard would need more comparisons than it is allowed."""


@dataclass(frozen=True)
class Ranking:
    """One ranking the walk consumes: global rows best first, and their scores.

    ``complete`` is True when it holds every eligible row (no deeper search can add any).
    """

    rows: npt.NDArray[np.int64]
    scores: npt.NDArray[np.float64]
    complete: bool


@dataclass(frozen=True)
class Walk:
    """Rows taken, in the order taken, with the ranking (e.g. subtask) that took each.

    ``needs_more`` is True when an incomplete ranking ran out before the walk finished: search
    that ranking deeper and walk again.
    """

    rows: list[int]
    scores: list[float]
    source: list[int]
    n_tokens: int
    needs_more: bool


def walk_rankings(
    rankings: Sequence[Ranking],
    k: int,
    *,
    tokens: npt.NDArray[np.integer] | None = None,
    token_budget: int | None = None,
    accept: Callable[[int], bool] | None = None,
) -> Walk:
    """Takes rows from the rankings in turn (round robin), best first, no row twice.

    Each turn, ranking r offers its best row not yet taken or refused; ``accept`` (the
    near-duplicate guard) may refuse it, and the ranking offers its next one. A ranking with
    nothing left is passed over. The walk stops after k rows, or at the first row whose tokens
    would take the total over ``token_budget`` (best first: a shorter row further down does not
    jump the queue), or when every ranking is spent.

    Args:
        rankings: one per stream (one for a plain selection, one per subtask for balance).
        k: most rows to take.
        tokens: (N,) tokens per global row; needed with ``token_budget``.
        token_budget: most tokens the taken rows may add up to (None: no budget).
        accept: called once per offered row not yet taken; False skips it for good.

    Returns:
        The walk; see ``Walk``.
    """
    if token_budget is not None and tokens is None:
        raise ConfigError("a token budget needs the rows' token counts")
    taken: set[int] = set()
    refused: set[int] = set()
    rows: list[int] = []
    scores: list[float] = []
    source: list[int] = []
    cursor = [0] * len(rankings)
    spent = [False] * len(rankings)
    total = 0
    while len(rows) < k and not all(spent):
        for r, ranking in enumerate(rankings):
            if spent[r] or len(rows) >= k:
                continue
            pick = None
            while cursor[r] < len(ranking.rows):
                row = int(ranking.rows[cursor[r]])
                score = float(ranking.scores[cursor[r]])
                cursor[r] += 1
                if row in taken or row in refused:
                    continue
                if accept is not None and not accept(row):
                    refused.add(row)
                    continue
                pick = (row, score)
                break
            if pick is None:
                if not ranking.complete:
                    return Walk(rows, scores, source, total, needs_more=True)
                spent[r] = True
                continue
            row, score = pick
            if token_budget is not None and tokens is not None:
                cost = int(tokens[row])
                if total + cost > token_budget:
                    return Walk(rows, scores, source, total, needs_more=False)
                total += cost
            elif tokens is not None:
                total += int(tokens[row])
            taken.add(row)
            rows.append(row)
            scores.append(score)
            source.append(r)
    return Walk(rows, scores, source, total, needs_more=False)


@dataclass(frozen=True)
class RowExplanations:
    """Explanations of R rows (see ``explain_rows``).

    Attributes:
        contributions: (R, C) per checkpoint: <f_c(z), Q_c> of the query that scored the row;
            rows sum to its score.
        subtask_scores: (R, S) the row's score against each subtask (avoid term included).
        closest_target: (R,) index of the most similar single target (lowest on ties).
        closest_similarity: (R,) its similarity Σ_c w_c <f_c(z), q_c(v)>.
        avoid_similarity: (R,) Σ_c w_c <f_c(z), ā_c> before the avoid weight, or None.
    """

    contributions: torch.Tensor
    subtask_scores: torch.Tensor
    closest_target: torch.Tensor
    closest_similarity: torch.Tensor
    avoid_similarity: torch.Tensor | None


def explain_rows(
    row_features: Sequence[torch.Tensor],
    queries: torch.Tensor,
    scored_by: torch.Tensor,
    target_features: Sequence[torch.Tensor],
    weights: Sequence[float],
    avoid: torch.Tensor | None = None,
) -> RowExplanations:
    """Per-checkpoint, per-subtask and per-target terms of the rows' scores.

    Args:
        row_features: per checkpoint c, (R, P) stored features f_c of the rows.
        queries: (S, C·P) the subtask queries as searched (weights and avoid folded in).
        scored_by: (R, C·P) the query each row's score came from (its subtask's row of
            ``queries`` for max or balance, their mean for aggregate=mean).
        target_features: per checkpoint, (T, P) unit target features q_c(v).
        weights: (C,) checkpoint weights w_c.
        avoid: (C·P,) concat_c w_c·ā_c (before the avoid weight), or None.

    Returns:
        RowExplanations; every (R, ·) tensor float32 on the CPU.
    """
    n_ckpt = len(row_features)
    if not (len(target_features) == len(weights) == n_ckpt):
        raise ConfigError("one weight and one target feature matrix per checkpoint")
    p = row_features[0].shape[1]
    rows = [f.to(torch.float32) for f in row_features]
    contributions = torch.stack(
        [(rows[c] * scored_by[:, c * p : (c + 1) * p]).sum(dim=1) for c in range(n_ckpt)], dim=1
    )
    n_rows = rows[0].shape[0]
    subtask_scores = torch.zeros(n_rows, queries.shape[0])
    per_target = torch.zeros(n_rows, target_features[0].shape[0])
    for c, w in enumerate(weights):
        subtask_scores += rows[c] @ queries[:, c * p : (c + 1) * p].T.to(torch.float32)
        per_target += float(w) * (rows[c] @ target_features[c].to(torch.float32).T)
    best = per_target.max(dim=1)
    # argmax of the first maximum: the lowest target index on ties.
    first = (per_target == best.values[:, None]).to(torch.int64).argmax(dim=1)
    avoid_sim = None
    if avoid is not None:
        flat = torch.cat(rows, dim=1)
        avoid_sim = flat @ avoid.to(torch.float32)
    return RowExplanations(
        contributions=contributions,
        subtask_scores=subtask_scores,
        closest_target=first,
        closest_similarity=best.values,
        avoid_similarity=avoid_sim,
    )


def scoring_queries(
    queries: torch.Tensor, subtask_of_row: torch.Tensor, aggregate: Aggregate, balanced: bool
) -> torch.Tensor:
    """The query whose inner product is each row's reported score, (R, C·P).

    With max (or balance) a row's score is its subtask's; with mean it is the mean over
    subtasks, i.e. the inner product with the mean query.
    """
    if aggregate == "mean" and not balanced:
        return queries.mean(dim=0, keepdim=True).expand(len(subtask_of_row), -1)
    return queries[subtask_of_row]
