"""FAISS inner-product index over the concatenated per-checkpoint features (imported lazily)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from less_core.errors import ConfigError

ADD_BLOCK_ROWS = 8192
# Rows a non-flat index (IVF, PQ) is trained on: FAISS wants ~30-256 points per centroid, so
# this serves up to ~2K lists while bounding training memory and time.
TRAIN_SAMPLE_ROWS = 65536


def require_faiss() -> Any:
    """Import faiss or explain how to install it."""
    try:
        import faiss
    except ImportError:
        raise ImportError(
            "faiss is not installed: pip install 'less-search[cpu]' (faiss-cpu) "
            "or 'less-search[gpu]' (faiss-gpu)"
        ) from None
    return faiss


def concat_rows(features: Sequence[np.ndarray], r0: int, r1: int) -> np.ndarray:
    """Rows [r0, r1) of every checkpoint's features side by side, float32 (rows, C·P)."""
    return np.ascontiguousarray(
        np.hstack([np.asarray(f[r0:r1], dtype=np.float32) for f in features])
    )


def build_index(features: Sequence[np.ndarray], factory: str, path: Path, seed: int = 0) -> None:
    """Build ``factory`` (metric inner product) over concat features and write it to ``path``.

    Rows are added in blocks so the features are never loaded whole (a Flat index still holds
    its own copy in memory, which is what it is). Non-flat factories train on a seeded sample.
    """
    faiss = require_faiss()
    n = features[0].shape[0]
    dim = sum(f.shape[1] for f in features)
    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise ConfigError(f"bad faiss index factory {factory!r}: {exc}") from None
    if not index.is_trained:
        sample = np.sort(
            np.random.default_rng(seed).choice(n, size=min(n, TRAIN_SAMPLE_ROWS), replace=False)
        )
        index.train(np.vstack([concat_rows(features, int(i), int(i) + 1) for i in sample]))
    for r0 in range(0, n, ADD_BLOCK_ROWS):
        index.add(concat_rows(features, r0, min(n, r0 + ADD_BLOCK_ROWS)))
    faiss.write_index(index, str(path))


def load_index(path: Path, device: str = "cpu") -> Any:
    """Read an index; move it to the GPU when ``device`` is CUDA and faiss-gpu is present."""
    faiss = require_faiss()
    index = faiss.read_index(str(path))
    if device.startswith("cuda") and hasattr(faiss, "StandardGpuResources"):
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
    return index


def is_gpu_index(index: Any) -> bool:
    """Whether faiss runs ``index`` on a GPU (then k is capped; see ``indexer.search``)."""
    return type(index).__name__.startswith("Gpu")


def search_index(
    index: Any,
    queries: np.ndarray,
    k: int,
    nprobe: int | None = None,
    ef_search: int | None = None,
) -> np.ndarray:
    """Row ids of the top-``k`` rows of each query (-1 where the index found fewer).

    ``nprobe`` / ``ef_search`` are set for this call through faiss's ParameterSpace, which
    reaches them through pre-transforms (PCA, OPQ) too; None keeps the index's own value.
    Only the worker thread searches, so setting them on the shared index is safe.

    Args:
        index: a faiss inner-product index.
        queries: (Q, D) float32 queries.
        k: results per query.

    Returns:
        (Q, k) int64 row ids.
    """
    faiss = require_faiss()
    space = faiss.ParameterSpace()
    for name, value in (("nprobe", nprobe), ("efSearch", ef_search)):
        if value is not None:
            try:
                space.set_index_parameter(index, name, int(value))
            except RuntimeError as exc:
                raise ConfigError(f"this index takes no {name!r}: {exc}") from None
    _, ids = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    return np.asarray(ids, dtype=np.int64)


def index_defaults(index: Any) -> dict[str, int]:
    """The index's own ``nprobe`` / ``efSearch`` (as built), for resetting between requests."""
    faiss = require_faiss()
    out: dict[str, int] = {}
    try:
        out["nprobe"] = int(faiss.extract_index_ivf(index).nprobe)
    except (RuntimeError, AttributeError):
        pass  # not an IVF index
    inner = faiss.downcast_index(
        index.index if isinstance(index, faiss.IndexPreTransform) else index
    )
    if hasattr(inner, "hnsw"):
        out["efSearch"] = int(inner.hnsw.efSearch)
    return out
