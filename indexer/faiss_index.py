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
            "faiss is not installed: pip install 'less-search[cpu]' (faiss-cpu) or '[gpu]' (faiss-gpu)"
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
