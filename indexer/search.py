"""Searching a datastore's shards: an exact scan, or approximate FAISS candidates re-ranked.

Exact (the default, ``Flat``): every shard's memory-mapped features are scanned block by block
(``less_core.search.scan_select_shards``) and top-k merged exactly.

Approximate (a datastore built with another FAISS factory): each shard's index proposes
``candidates × k`` rows per subtask query (one mean query for ``aggregate="mean"``, since the
mean of inner products is the inner product with the mean), the union is re-scored exactly from
the stored features, and shards merge exactly. Scores of returned rows are therefore exact;
only which rows were considered depends on the index (``verify`` measures that recall). A
request asks for the exact scan with ``exact=True``; a filtered request (``QuerySet.mask``) is
answered by the exact masked scan, since an index proposes candidates before any filter; k
beyond what an index can return (faiss on the GPU caps k at ``FAISS_GPU_MAX_K``) falls back to
the exact scan too.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from indexer.datastore import Datastore
from indexer.faiss_index import index_defaults, is_gpu_index, load_index, search_index
from less_core.errors import ConfigError
from less_core.search import (
    QuerySet,
    SearchResult,
    merge_results,
    rescore_rows,
    scan_select_shards,
)

log = logging.getLogger(__name__)

FAISS_GPU_MAX_K = 2048
"""The largest k faiss GPU indexes answer; beyond it the exact scan serves the request."""


@dataclass(frozen=True)
class SearchParams:
    """Per-request search options (see ``less_wire.SearchOptions``, which this mirrors).

    Attributes:
        exact: scan every row even when an approximate index exists.
        nprobe: IVF lists to visit; None keeps the index's own setting.
        ef_search: HNSW breadth; None keeps the index's own setting.
        candidates: rows fetched from the index per wanted row, before exact re-ranking.
    """

    exact: bool = False
    nprobe: int | None = None
    ef_search: int | None = None
    candidates: float = 2.0

    def __post_init__(self) -> None:
        if self.candidates < 1:
            raise ConfigError(f"candidates must be >= 1, got {self.candidates}")


class ShardSearcher:
    """Searches one datastore version: its shards' features and, if built, their indexes."""

    def __init__(self, store: Datastore, device: torch.device | str = "cpu"):
        self.store = store
        self.device = device
        # Per checkpoint, per shard: memory-mapped, read block by block by the scan.
        self.features = {name: store.shard_features(name) for name in store.checkpoint_names}
        self.indexes: list[Any] | None = None
        if not store.manifest.build.exact:
            paths = [store.index_path(s) for s in store.shards]
            self.indexes = [load_index(p, str(device)) for p in paths if p is not None]
        self.on_gpu = any(is_gpu_index(index) for index in self.indexes or [])
        # Each request sets its own nprobe/efSearch or gets these back: no state leaks
        # from one request into the next, so the same request gets the same answer.
        self.defaults = [index_defaults(index) for index in self.indexes or []]

    @property
    def approximate(self) -> bool:
        return self.indexes is not None

    def search(
        self,
        checkpoints: Sequence[str],
        query_sets: Sequence[QuerySet],
        params: Sequence[SearchParams],
    ) -> list[SearchResult]:
        """Top-k of each query set; exact ones share one scan, approximate ones use the index.

        Args:
            checkpoints: the checkpoints the queries' columns span, in manifest order.
            query_sets: one per request; ``queries`` are (S, len(checkpoints)·P).
            params: one per request.
        """
        results: list[SearchResult | None] = [None] * len(query_sets)
        exact = [i for i, (qs, p) in enumerate(zip(query_sets, params)) if self._exact(qs, p)]
        if exact:
            shards = [
                [self.features[n][s] for n in checkpoints] for s in range(len(self.store.shards))
            ]
            found = scan_select_shards(shards, [query_sets[i] for i in exact], device=self.device)
            for i, result in zip(exact, found):
                results[i] = result
        for i, (qs, p) in enumerate(zip(query_sets, params)):
            if results[i] is None:
                results[i] = self._approximate(checkpoints, qs, p)
        return [r for r in results if r is not None]

    def _exact(self, query_set: QuerySet, params: SearchParams) -> bool:
        if self.indexes is None or params.exact:
            return True
        if query_set.mask is not None:
            # An index proposes candidates before any filter: filtering them afterwards could
            # return fewer or worse rows than the best k that pass. The masked scan is exact.
            return True
        wanted = math.ceil(params.candidates * query_set.k)
        return self.on_gpu and wanted > FAISS_GPU_MAX_K

    def _approximate(
        self, checkpoints: Sequence[str], query_set: QuerySet, params: SearchParams
    ) -> SearchResult:
        if self.indexes is None:
            raise ConfigError("this datastore has no approximate index")
        full = self._full_width(checkpoints, query_set.queries)
        # The index searches the aggregate's own query: every subtask for max, their mean for
        # mean (exact identity); candidates then get their exact scores against every subtask.
        probes = full if query_set.aggregate == "max" else full.mean(dim=0, keepdim=True)
        parts = []
        for s, (shard, index) in enumerate(zip(self.store.shards, self.indexes)):
            m = min(shard.n, math.ceil(params.candidates * query_set.k))
            own = self.defaults[s]
            found = search_index(
                index,
                probes.numpy(),
                m,
                params.nprobe if params.nprobe is not None else own.get("nprobe"),
                params.ef_search if params.ef_search is not None else own.get("efSearch"),
            )
            rows = np.unique(found[found >= 0])
            local = QuerySet(query_set.queries, min(query_set.k, shard.n), query_set.aggregate)
            features = [self.features[n][s] for n in checkpoints]
            parts.append(rescore_rows(features, rows, local, offset=shard.start))
        return merge_results(parts, query_set.k)

    def _full_width(self, checkpoints: Sequence[str], queries: torch.Tensor) -> torch.Tensor:
        """Queries over every checkpoint in manifest order (zeros for unused ones), float32 CPU:
        the index covers all checkpoints concatenated."""
        names = self.store.checkpoint_names
        p = queries.shape[1] // len(checkpoints)
        full = torch.zeros(queries.shape[0], len(names) * p)
        for j, name in enumerate(checkpoints):
            c = names.index(name)
            full[:, c * p : (c + 1) * p] = queries[:, j * p : (j + 1) * p].float().cpu()
        return full
