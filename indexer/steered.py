"""Steered selections over a datastore: filter, token budget, balance, duplicate guard, avoid,
explanations — the one implementation behind the API, the SDK, both CLIs and the web page.

A request's options are a ``Steering``. ``resolve_eligible`` turns its filter into a row mask
(``indexer.pool_metadata``: stored columns, no JSON parsed per row) and fixes how many rows it
may take. ``SteeredPlan`` holds one request's queries (avoid direction folded in, see
``less_core.steering``), says which rankings to search (one by the aggregate score, or one per
subtask for ``balance="subtask"``) and how deep, walks them (budget, guard, round robin) and,
when a ranking ran out before the walk finished, asks for a deeper search — so the answer
equals walking the full rankings. Explanations are computed for the taken rows only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from indexer.datastore import Datastore
from indexer.pool_metadata import Condition, PoolMetadata
from less_core.config import Aggregate, SelectionConfig
from less_core.errors import ConfigError, DataError
from less_core.scoring import subtask_queries
from less_core.search import QuerySet, SearchResult
from less_core.steering import (
    NearDuplicateGuard,
    Ranking,
    Walk,
    explain_rows,
    fold_avoid,
    scoring_queries,
    walk_rankings,
    weighted_concat,
)

Balance = Literal["none", "subtask"]

GUARD_MAX_WORK = 2e10
"""Most multiply-adds the near-duplicate guard may spend on one request: it compares each
offered row with every row taken so far (about k²/2 · C·P for k rows, more when rows are
refused), one matrix-vector product at a time in the single worker thread. 2e10 is some 10-20 s
of a CPU core; a request that needs more is refused (up front when its k alone needs more)."""

EXPLAIN_BLOCK_ROWS = 512
"""Rows whose stored features are read at once to explain them: (rows, C·P) float32 blocks,
64 MiB at C·P = 32,768."""


@dataclass(frozen=True)
class Steering:
    """How a selection is shaped beyond top-k (see ``less_wire.SelectRequest``).

    Attributes:
        explain: compute an explanation for every returned row.
        filter: per metadata field, a condition; only rows meeting all are ranked.
        token_budget: take rows best first while their tokens stay within this.
        balance: "subtask": round robin over each subtask's own ranking.
        max_similarity: skip rows more similar than this to a row already taken.
        avoid_weight: λ in score = sim(targets) - λ·sim(avoid).
    """

    explain: bool = False
    filter: Mapping[str, Condition] | None = None
    token_budget: int | None = None
    balance: Balance = "none"
    max_similarity: float | None = None
    avoid_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.token_budget is not None and self.token_budget < 1:
            raise ConfigError(f"token_budget must be >= 1, got {self.token_budget}")
        if self.balance not in ("none", "subtask"):
            raise ConfigError(f"balance must be none or subtask, got {self.balance!r}")
        if self.max_similarity is not None and not -1 < self.max_similarity <= 1:
            raise ConfigError(f"max_similarity must be in (-1, 1], got {self.max_similarity}")
        if not self.avoid_weight >= 0 or not math.isfinite(self.avoid_weight):
            raise ConfigError(f"avoid_weight must be finite and >= 0, got {self.avoid_weight}")

    @property
    def walks(self) -> bool:
        """True when the rankings are walked (budget, balance or guard), not just cut at k."""
        return (
            self.token_budget is not None
            or self.balance != "none"
            or self.max_similarity is not None
        )


@dataclass(frozen=True)
class Eligible:
    """Which rows a request may take, and how many (resolved once, when it is prepared).

    Attributes:
        k: most rows to return (after the filter; capped by the token budget's bound).
        mask: (N,) bool rows passing the filter, or None (every row).
        n_candidates: rows that pass.
    """

    k: int
    mask: torch.Tensor | None
    n_candidates: int


def _metadata_for(store: Datastore, what: str) -> PoolMetadata:
    metadata = store.metadata
    if metadata is None:
        raise DataError(
            f"datastore version {store.version} stores no pool metadata (built before metadata "
            f"was stored); rebuild it to use {what}"
        )
    return metadata


def resolve_eligible(store: Datastore, config: SelectionConfig, steering: Steering) -> Eligible:
    """The rows a request may select and its row cap.

    ``fraction`` is a share of the rows that pass the filter. With ``token_budget`` and neither
    ``k`` nor ``fraction`` the rows are capped by the budget alone; the cap is never above
    budget // (fewest tokens of an eligible row), since no more rows can fit.

    Raises:
        DataError: a filter on a datastore without metadata, an unknown field or a value of the
            wrong kind, a filter no row passes, a budget below every eligible row's tokens.
        ConfigError: k above the eligible rows, a fraction selecting none, a guarded selection
            whose k alone needs more than ``GUARD_MAX_WORK`` comparisons.
    """
    mask = None
    n_pass = store.n
    if steering.filter:
        flags = _metadata_for(store, "filter").mask(steering.filter)
        n_pass = int(flags.sum())
        if n_pass == 0:
            fields = ", ".join(sorted(steering.filter))
            raise DataError(f"the filter (on {fields}) matches none of the {store.n} rows")
        mask = torch.from_numpy(np.ascontiguousarray(flags, dtype=np.bool_))
    if steering.token_budget is not None and config.k is None and config.fraction is None:
        k = n_pass
    else:
        if mask is not None and config.k is not None and config.k > n_pass:
            raise ConfigError(f"k={config.k} exceeds the {n_pass} rows that pass the filter")
        k = config.resolve_k(n_pass)
    if steering.token_budget is not None:
        tokens = _metadata_for(store, "token_budget").n_tokens
        eligible_tokens = tokens if mask is None else tokens[mask.numpy()]
        fewest = int(eligible_tokens.min())
        if fewest > steering.token_budget:
            raise DataError(
                f"token_budget={steering.token_budget} is below the smallest eligible row "
                f"({fewest} tokens)"
            )
        k = min(k, steering.token_budget // fewest)
    explicit_size = config.k is not None or config.fraction is not None
    if steering.max_similarity is not None and explicit_size:
        n_ckpt = len(config.checkpoints) if config.checkpoints else len(store.checkpoint_names)
        work = guard_work(k, n_ckpt * store.manifest.features.dim)
        if work > GUARD_MAX_WORK:
            raise ConfigError(
                f"max_similarity over {k} rows needs about {work:.2g} comparisons, more than "
                f"this service's {GUARD_MAX_WORK:.2g}: ask for fewer rows or drop max_similarity"
            )
    return Eligible(k=k, mask=mask, n_candidates=n_pass)


@dataclass(frozen=True)
class ResolvedSelection:
    """What a request's config resolves to against one datastore version, once, when it is
    prepared: the checkpoints it scores with (manifest order), their renormalised weights and
    the rows it may take."""

    checkpoints: tuple[str, ...]
    weights: tuple[float, ...]
    eligible: Eligible


def resolve_selection(
    store: Datastore, config: SelectionConfig, steering: Steering
) -> ResolvedSelection:
    """Checkpoints, weights and eligible rows of a request (the engine's and the service's one
    path).

    Raises:
        CheckpointNotFoundError: an unknown checkpoint name.
        DataError / ConfigError: see ``resolve_eligible``.
    """
    names, weights = store.manifest.weights(list(config.checkpoints or ()) or None)
    return ResolvedSelection(
        tuple(names),
        tuple(float(w) for w in weights),
        resolve_eligible(store, config, steering),
    )


def guard_work(k: int, dim: int) -> float:
    """Multiply-adds the near-duplicate guard needs at least to take k rows of ``dim`` values."""
    return k * (k - 1) / 2 * dim


@dataclass(frozen=True)
class RowExplanation:
    """Why one row was selected (the engine's side of ``less_wire.Explanation``)."""

    checkpoints: list[tuple[str, float, float]]  # (name, weight, contribution)
    subtasks: list[tuple[str, float]]
    closest_target: int
    closest_target_id: str | None
    closest_subtask: str
    closest_similarity: float
    avoid_similarity: float | None
    n_tokens: int | None
    metadata: dict[str, str | int | float | bool | None]
    preview: str | None


@dataclass(frozen=True)
class SteeredResult:
    """One request's rows, best (or first taken) first."""

    rows: list[int]
    scores: list[float]
    subtasks: list[str]
    n_tokens: int | None
    explanations: list[RowExplanation] | None = None


@dataclass
class SteeredPlan:
    """One request's search and walk (see the module docstring).

    Attributes:
        subtasks: subtask names in first-seen order.
        queries: (S, C·P) over the request's own checkpoints, avoid folded in.
        avoid: (C·P,) concat_c w_c·ā_c, or None.
        target_features: per own checkpoint, (T, P) target features.
        checkpoints, weights: the request's own checkpoints and weights.
        aggregate: max or mean (ignored with balance).
        steering, eligible: the request's options, resolved.
        n_total: rows in the datastore.
        depth: how many rows each ranking is searched for.
    """

    subtasks: list[str]
    queries: torch.Tensor
    avoid: torch.Tensor | None
    target_features: list[torch.Tensor]
    checkpoints: tuple[str, ...]
    weights: tuple[float, ...]
    aggregate: Aggregate
    steering: Steering
    eligible: Eligible
    n_total: int
    depth: int = field(init=False)

    def __post_init__(self) -> None:
        self.depth = self._first_depth()

    def _first_depth(self) -> int:
        # Without the guard no ranking is read deeper than the rows taken (each skipped row
        # was taken by another ranking), so k is enough; with it, start at twice k.
        k, n = self.eligible.k, self.eligible.n_candidates
        return min(n, 2 * k if self.steering.max_similarity is not None else k)

    @property
    def balanced(self) -> bool:
        return self.steering.balance == "subtask"

    def query_sets(self, span: Sequence[str]) -> list[QuerySet]:
        """The rankings to search, with columns over ``span`` (zeros at other checkpoints)."""
        full = _widen(self.queries, self.checkpoints, span)
        if self.balanced:
            return [
                QuerySet(full[s : s + 1], self.depth, "max", self.eligible.mask)
                for s in range(len(self.subtasks))
            ]
        return [QuerySet(full, self.depth, self.aggregate, self.eligible.mask)]

    def deepen(self) -> bool:
        """Searches deeper next time; False when the rankings already hold every row."""
        if self.depth >= self.eligible.n_candidates:
            return False
        self.depth = min(self.eligible.n_candidates, 2 * self.depth)
        return True

    def walk(
        self, results: Sequence[SearchResult], store: Datastore
    ) -> tuple[Walk, dict[int, int]]:
        """Walks the searched rankings; returns the walk and each ranked row's best subtask."""
        complete = self.depth >= self.eligible.n_candidates
        rankings = [
            Ranking(r.rows.numpy(), r.scores.to(torch.float64).numpy(), complete) for r in results
        ]
        best = {}
        if not self.balanced:
            best = dict(zip(results[0].rows.tolist(), results[0].best_subtask.tolist()))
        metadata = store.metadata
        tokens = None if metadata is None else metadata.n_tokens
        accept = None
        if self.steering.max_similarity is not None:
            guard = NearDuplicateGuard(
                self.steering.max_similarity, self.queries.shape[1], GUARD_MAX_WORK
            )
            features = [store.features(name) for name in self.checkpoints]

            def accept(row: int) -> bool:
                parts = [torch.from_numpy(np.asarray(f[[row]], dtype=np.float32)) for f in features]
                return guard.offer(weighted_concat(parts, self.weights)[0])

        if not self.steering.walks:
            # Top-k cut: the ranking's first k rows, no per-row Python loop.
            rows = rankings[0].rows[: self.eligible.k]
            total = None if tokens is None else int(tokens[rows].sum())
            walk = Walk(
                rows.tolist(),
                rankings[0].scores[: self.eligible.k].tolist(),
                [0] * len(rows),
                total or 0,
                needs_more=False,
            )
            return walk, best
        walk = walk_rankings(
            rankings,
            self.eligible.k,
            tokens=tokens,
            token_budget=self.steering.token_budget,
            accept=accept,
        )
        return walk, best

    def result(
        self,
        walk: Walk,
        best: Mapping[int, int],
        store: Datastore,
        target_ids: Sequence[str | None],
        target_subtasks: Sequence[str],
    ) -> SteeredResult:
        """The request's answer from a finished walk (explanations if asked for)."""
        if self.balanced:
            subtask_index = list(walk.source)
        else:
            subtask_index = [best[r] for r in walk.rows]
        metadata = store.metadata
        n_tokens = None if metadata is None else int(walk.n_tokens)
        explanations = None
        if self.steering.explain:
            explanations = self._explain(
                walk.rows, subtask_index, store, target_ids, target_subtasks
            )
        return SteeredResult(
            rows=list(walk.rows),
            scores=list(walk.scores),
            subtasks=[self.subtasks[s] for s in subtask_index],
            n_tokens=n_tokens,
            explanations=explanations,
        )

    def _explain(
        self,
        rows: Sequence[int],
        subtask_index: Sequence[int],
        store: Datastore,
        target_ids: Sequence[str | None],
        target_subtasks: Sequence[str],
    ) -> list[RowExplanation]:
        metadata = store.metadata
        features = [store.features(name) for name in self.checkpoints]
        out: list[RowExplanation] = []
        for b in range(0, len(rows), EXPLAIN_BLOCK_ROWS):
            block = np.asarray(rows[b : b + EXPLAIN_BLOCK_ROWS], dtype=np.int64)
            which = torch.as_tensor(list(subtask_index[b : b + len(block)]), dtype=torch.int64)
            # Sorted reads are kinder to a memmap; results go back to the block's order.
            order = np.argsort(block, kind="stable")
            back = np.argsort(order, kind="stable")
            row_feats = [
                torch.from_numpy(np.asarray(f[block[order]], dtype=np.float32)[back])
                for f in features
            ]
            terms = explain_rows(
                row_feats,
                self.queries,
                scoring_queries(self.queries, which, self.aggregate, self.balanced),
                self.target_features,
                self.weights,
                self.avoid,
            )
            values = metadata.values(block.tolist()) if metadata is not None else None
            previews = metadata.previews(block.tolist()) if metadata is not None else None
            for i, row in enumerate(block.tolist()):
                t = int(terms.closest_target[i])
                out.append(
                    RowExplanation(
                        checkpoints=[
                            (name, float(w), float(terms.contributions[i, c]))
                            for c, (name, w) in enumerate(zip(self.checkpoints, self.weights))
                        ],
                        subtasks=[
                            (name, float(terms.subtask_scores[i, s]))
                            for s, name in enumerate(self.subtasks)
                        ],
                        closest_target=t,
                        closest_target_id=target_ids[t] or None,
                        closest_subtask=target_subtasks[t],
                        closest_similarity=float(terms.closest_similarity[i]),
                        avoid_similarity=None
                        if terms.avoid_similarity is None
                        else float(terms.avoid_similarity[i]),
                        n_tokens=None if metadata is None else int(metadata.n_tokens[row]),
                        metadata={} if values is None else values[i],
                        preview=None if previews is None else previews[i],
                    )
                )
        return out


def plan_query(
    target_features: Sequence[torch.Tensor],
    n_targets: int,
    subtask_of: Sequence[str],
    checkpoints: tuple[str, ...],
    weights: tuple[float, ...],
    aggregate: Aggregate,
    steering: Steering,
    eligible: Eligible,
    n_total: int,
) -> SteeredPlan:
    """A request's plan from its features (per own checkpoint, (T + A, P): targets first, then
    the avoid examples)."""
    targets = [f[:n_targets] for f in target_features]
    subtasks, queries = subtask_queries(targets, list(subtask_of), list(weights))
    avoid = None
    n_avoid = target_features[0].shape[0] - n_targets
    if n_avoid > 0:
        avoid_parts = [f[n_targets:] for f in target_features]
        _, avoid_q = subtask_queries(avoid_parts, ["avoid"] * n_avoid, list(weights))
        avoid = avoid_q[0]
    return SteeredPlan(
        subtasks=subtasks,
        queries=fold_avoid(queries, avoid, steering.avoid_weight),
        avoid=avoid,
        target_features=targets,
        checkpoints=checkpoints,
        weights=weights,
        aggregate=aggregate,
        steering=steering,
        eligible=eligible,
        n_total=n_total,
    )


def _widen(queries: torch.Tensor, own: Sequence[str], span: Sequence[str]) -> torch.Tensor:
    """(S, len(own)·P) -> (S, len(span)·P): the query's blocks at its checkpoints' places."""
    if list(own) == list(span):
        return queries
    p = queries.shape[1] // len(own)
    out = torch.zeros(queries.shape[0], len(span) * p, dtype=queries.dtype)
    for j, name in enumerate(own):
        c = list(span).index(name)
        out[:, c * p : (c + 1) * p] = queries[:, j * p : (j + 1) * p]
    return out
