"""Exact top-k selection over stored features, scanned block by block (SPEC §2.7).

Features of each checkpoint are (N, P) row-major matrices (numpy memmaps in practice). The score
of row z for subtask s is sum_c <F_c[z], Q_{s,c}> with Q the weighted mean target features, i.e.
one inner product against the concatenation. Rows are scanned in blocks so memory stays bounded
whatever N is, and any number of query sets (several requests) share one pass over the data.
Ties are broken by the lower row index, so results are deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from less_core.config import Aggregate
from less_core.errors import ConfigError
from less_core.scoring import aggregate_scores

MIN_GEMM_COLUMNS = 16
DEFAULT_BLOCK_ROWS = 8192  # a float32 block of P = 8192 columns is 256 MiB


@dataclass(frozen=True)
class QuerySet:
    """One selection request over a datastore.

    Attributes:
        queries: (S, C·P) float32 concat_c w_c·q̄_{s,c}, one row per subtask.
        k: number of rows to return.
        aggregate: how subtask scores combine (max or mean).
        mask: (N,) bool over the datastore's global rows, or None: only rows where it is True
            are ranked (a metadata filter applied inside the search, so the k returned rows
            are the best k among the rows that pass).
    """

    queries: torch.Tensor
    k: int
    aggregate: Aggregate = "max"
    mask: torch.Tensor | None = None


@dataclass(frozen=True)
class SearchResult:
    """Top rows of one QuerySet, best first.

    Attributes:
        rows: (k,) int64 row indices into the datastore.
        scores: (k,) float32 aggregated scores.
        best_subtask: (k,) int64 index of the subtask with the highest score of each row.
    """

    rows: torch.Tensor
    scores: torch.Tensor
    best_subtask: torch.Tensor


def _ordered_top(scores: torch.Tensor, rows: torch.Tensor, k: int) -> torch.Tensor:
    """Positions of the k best (score desc, row asc) among candidates."""
    if scores.numel() > k:
        threshold = torch.topk(scores, k).values[-1]
        keep = torch.nonzero(scores >= threshold, as_tuple=True)[0]
    else:
        keep = torch.arange(scores.numel(), device=scores.device)
    by_row = keep[torch.argsort(rows[keep], stable=True)]
    return by_row[torch.argsort(-scores[by_row].to(torch.float64), stable=True)][:k]


def _rows_on(
    matrix: np.ndarray | torch.Tensor, r0: int, r1: int, out: torch.Tensor
) -> torch.Tensor:
    """Rows [r0, r1) widened to float32 into ``out[: r1 - r0]`` (on the search device).

    ``out`` is one buffer reused for every block: a fresh (block_rows, P) float32 tensor per
    block costs page faults that, on a CPU, take longer than the matmul itself (measured in
    bench/results/scale_search.json). ``copy_`` widens and moves in one pass, so the stored
    dtype is what crosses to a GPU. Read-only memmaps are copied (torch needs writable memory);
    open them copy-on-write (``mmap_mode="c"``) to avoid that.
    """
    if isinstance(matrix, torch.Tensor):
        block = matrix[r0:r1]
    else:
        rows = np.asarray(matrix[r0:r1])
        block = torch.from_numpy(rows if rows.flags.writeable else rows.copy())
    target = out[: r1 - r0]
    target.copy_(block)
    return target


FeatureMatrix = np.ndarray | torch.Tensor
"""(N, P) features of one checkpoint: a numpy memmap (read block by block) or a tensor."""


def scan_select(
    features: Sequence[FeatureMatrix],
    query_sets: Sequence[QuerySet],
    *,
    block_rows: int = DEFAULT_BLOCK_ROWS,
    device: torch.device | str = "cpu",
) -> list[SearchResult]:
    """Exact top-k of every query set in one blocked pass over one shard's features.

    Args:
        features: per checkpoint c, an (N, P) matrix (float16/float32; memmaps are read
            block by block and never loaded whole).
        query_sets: requests; each ``queries`` has C·P columns matching ``features``.
        block_rows: rows per block.
        device: where the block matmuls run.

    Returns:
        One SearchResult per query set, in order.
    """
    return scan_select_shards([features], query_sets, block_rows=block_rows, device=device)


def scan_select_shards(
    shards: Sequence[Sequence[FeatureMatrix]],
    query_sets: Sequence[QuerySet],
    *,
    block_rows: int = DEFAULT_BLOCK_ROWS,
    device: torch.device | str = "cpu",
) -> list[SearchResult]:
    """Exact top-k over row shards, as if they were one matrix: rows are numbered globally.

    Each shard is scanned block by block and every block's candidates are merged into the
    running top-k (score desc, row asc), so the result equals one scan over the concatenation.

    Args:
        shards: per shard, per checkpoint, an (n_shard, P) matrix; shards in row order.
        query_sets: requests; each ``queries`` has C·P columns.
        block_rows: rows per block.
        device: where the block matmuls run.

    Returns:
        One SearchResult per query set, rows global (shard start + local row).
    """
    if not shards or not shards[0]:
        raise ConfigError("no feature matrices to search")
    if not query_sets:
        return []
    n_ckpt = len(shards[0])
    p = shards[0][0].shape[1]
    n_total = 0
    for features in shards:
        n_shard = features[0].shape[0]
        if len(features) != n_ckpt or any(f.shape != (n_shard, p) for f in features):
            raise ConfigError("all checkpoints' feature matrices must have the same shape")
        n_total += n_shard
    for qs in query_sets:
        if qs.queries.ndim != 2 or qs.queries.shape[1] != n_ckpt * p:
            raise ConfigError(f"queries must be (S, {n_ckpt * p}), got {tuple(qs.queries.shape)}")
        if not 1 <= qs.k <= n_total:
            raise ConfigError(f"k must be in [1, {n_total}], got {qs.k}")
        if qs.mask is not None and qs.mask.shape != (n_total,):
            raise ConfigError(f"mask must be ({n_total},), got {tuple(qs.mask.shape)}")
    masks = [None if qs.mask is None else qs.mask.to(device, torch.bool) for qs in query_sets]
    # One matmul per block and checkpoint scores every query of every set: the block is read
    # from memory once. BLAS switches to matrix-vector kernels (other rounding) below a few
    # columns, so queries are zero-padded to MIN_GEMM_COLUMNS: then each column's result is
    # bit-identical whatever the other columns are, and a request gets the same answer alone or
    # batched (tests/indexer/test_selection.py checks this on the CPU BLAS).
    all_q = torch.cat([qs.queries for qs in query_sets]).to(device, torch.float32)
    spans, start = [], 0
    for qs in query_sets:
        spans.append((start, start + qs.queries.shape[0]))
        start += qs.queries.shape[0]
    if all_q.shape[0] < MIN_GEMM_COLUMNS:
        all_q = torch.cat(
            [all_q, all_q.new_zeros(MIN_GEMM_COLUMNS - all_q.shape[0], all_q.shape[1])]
        )
    q_parts = [all_q[:, c * p : (c + 1) * p].T.contiguous() for c in range(n_ckpt)]  # (P, Q)
    # The running top-k stays on the device with the scores: on a GPU, moving every block's
    # (rows, Q) scores to the host to merge there costs more than the matmul itself.
    pools = [_CandidatePool(qs.k, device) for qs in query_sets]
    offset = 0
    buffer = torch.empty(min(block_rows, n_total), p, dtype=torch.float32, device=device)
    for features in shards:
        n = features[0].shape[0]
        for r0 in range(0, n, block_rows):
            r1 = min(n, r0 + block_rows)
            # (rows, Q): the first checkpoint's product, then the others added in place.
            block_scores = _rows_on(features[0], r0, r1, buffer) @ q_parts[0]
            for c in range(1, n_ckpt):
                block_scores.add_(_rows_on(features[c], r0, r1, buffer) @ q_parts[c])
            rows = torch.arange(offset + r0, offset + r1, dtype=torch.int64, device=device)
            for pool, (a, b), qs, mask in zip(pools, spans, query_sets, masks):
                per_subtask = block_scores[:, a:b]
                passing = None if mask is None else mask[offset + r0 : offset + r1]
                pool.add(aggregate_scores(per_subtask, qs.aggregate), rows, per_subtask, passing)
        offset += n
    return [pool.result() for pool in pools]


class _CandidatePool:
    """The running top-k of one query set, merged lazily.

    Rows scoring below the current k-th best can never enter the top k, so each block only
    contributes the rows at or above that threshold (ties kept: they are ordered by row at the
    end). Kept candidates are compacted to the k best once they reach twice k, and ordered once
    at the end: the result equals ordering all rows, at a cost of a few sorts of ~2k elements
    instead of one per block.
    """

    def __init__(self, k: int, device: torch.device | str):
        self.k = k
        self.threshold = float("-inf")
        self.size = 0
        self.parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.device = device

    def add(
        self,
        scores: torch.Tensor,
        rows: torch.Tensor,
        per_subtask: torch.Tensor,
        passing: torch.Tensor | None = None,
    ) -> None:
        """Offers a block: (rows,) aggregated scores, (rows,) global rows, (rows, S) scores,
        and optionally (rows,) bool: only rows passing the filter are candidates."""
        keep = scores >= self.threshold
        if passing is not None:
            keep &= passing
        if not bool(keep.all()):
            scores, rows, per_subtask = scores[keep], rows[keep], per_subtask[keep]
        if scores.numel() == 0:
            return
        self.parts.append((scores, rows, per_subtask.argmax(dim=1)))
        self.size += scores.numel()
        if self.size >= 2 * self.k:
            self._compact()

    def _compact(self) -> None:
        scores = torch.cat([p[0] for p in self.parts])
        rows = torch.cat([p[1] for p in self.parts])
        best = torch.cat([p[2] for p in self.parts])
        top = _ordered_top(scores, rows, self.k)
        self.parts = [(scores[top], rows[top], best[top])]
        self.size = int(top.numel())
        if self.size == self.k:
            self.threshold = float(scores[top[-1]])

    def result(self) -> SearchResult:
        if not self.parts:
            empty = torch.empty(0, dtype=torch.int64)
            return SearchResult(rows=empty, scores=torch.empty(0), best_subtask=empty)
        self._compact()
        scores, rows, best = self.parts[0]
        return SearchResult(rows=rows.cpu(), scores=scores.cpu(), best_subtask=best.cpu())


def rescore_rows(
    features: Sequence[FeatureMatrix],
    rows: np.ndarray,
    query_set: QuerySet,
    *,
    offset: int = 0,
    device: torch.device | str = "cpu",
) -> SearchResult:
    """Exact top-k of one query set among candidate rows of one shard.

    Used after an approximate index proposed candidates: the returned scores are then exact
    (equal to a full scan's for the same rows); only which rows were considered is approximate.

    Args:
        features: per checkpoint, the shard's (n, P) matrix.
        rows: (m,) distinct local row indices of candidates, any order.
        query_set: the request; ``queries`` has C·P columns.
        offset: the shard's first global row, added to the returned rows.
        device: where the matmul runs.

    Returns:
        The best ``min(k, m)`` candidates, rows global, best first (ties: lower row).
    """
    local = np.sort(np.asarray(rows, dtype=np.int64))  # sorted reads are kinder to a memmap
    if len(local) == 0:
        empty = torch.empty(0, dtype=torch.int64)
        return SearchResult(rows=empty, scores=torch.empty(0), best_subtask=empty)
    p = features[0].shape[1]
    queries = query_set.queries.to(device, torch.float32)
    scores = torch.zeros(len(local), queries.shape[0], device=device)
    for c, matrix in enumerate(features):
        if isinstance(matrix, torch.Tensor):
            part = matrix[torch.from_numpy(local).to(matrix.device)].to(device, torch.float32)
        else:
            part = torch.from_numpy(np.ascontiguousarray(matrix[local])).to(device, torch.float32)
        scores += part @ queries[:, c * p : (c + 1) * p].T
    scores = scores.cpu()
    agg = aggregate_scores(scores, query_set.aggregate)
    global_rows = torch.from_numpy(local + offset)
    top = _ordered_top(agg, global_rows, min(query_set.k, len(local)))
    return SearchResult(
        rows=global_rows[top], scores=agg[top], best_subtask=scores.argmax(dim=1)[top]
    )


def merge_results(results: Sequence[SearchResult], k: int) -> SearchResult:
    """The best k rows of several shards' results (score desc, row asc), as one result."""
    scores = torch.cat([r.scores for r in results])
    rows = torch.cat([r.rows for r in results])
    best = torch.cat([r.best_subtask for r in results])
    top = _ordered_top(scores, rows, min(k, scores.numel()))
    return SearchResult(rows=rows[top], scores=scores[top], best_subtask=best[top])
