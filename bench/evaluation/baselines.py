"""Selection methods as scores over a pool (higher is better), and the top-k cut they share.

* LESS through the product's own ``QueryEngine`` (all checkpoints or only the last);
* BM25 (``rank-bm25``), with IDF over the pool actually searched;
* DSIR (the ``data-selection`` package: hashed uni+bigram importance weights of the targets
  against the pool, then importance resampling by Gumbel top-k, seeded);
* RDS: cosine of the model's final-layer hidden states, mean-pooled or at the last token (the
  LESS reference's ``collect_reps`` takes the last token's state), mean over the targets;
* random.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from bench.evaluation.data import words
from indexer.query import QueryEngine
from less_core.config import SelectionConfig
from less_core.data import Example

#: DSIR's feature settings (the package's defaults: unigrams + bigrams into 10,000 buckets).
DSIR_NGRAMS = 2
DSIR_BUCKETS = 10_000


def rng_for(*labels: object) -> np.random.Generator:
    """A generator seeded by labels (seed, setting, task, method): draws never shift when
    another unit is added or skipped."""
    digest = hashlib.sha256(json.dumps([str(x) for x in labels]).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "big"))


def top_rows(scores: np.ndarray, k: int) -> np.ndarray:
    """The k best rows by score, ties broken by the lower row."""
    order = np.lexsort((np.arange(len(scores)), -scores))
    return order[:k]


def scores_random(n: int, *labels: object) -> np.ndarray:
    return rng_for("random", *labels).random(n)


def scores_less(
    engine: QueryEngine,
    targets: Sequence[Example],
    pool_ids: Sequence[str],
    checkpoints: tuple[str, ...] | None = None,
) -> np.ndarray:
    """LESS scores of the pool rows (``pool_ids`` order) for the targets, from the datastore."""
    sel = engine.select(targets, SelectionConfig(k=engine.n, checkpoints=checkpoints))
    by_id = dict(zip(sel.ids, sel.scores))
    missing = [i for i in pool_ids if i not in by_id]
    if missing:
        raise KeyError(f"{len(missing)} pool rows are not in the datastore, e.g. {missing[0]}")
    return np.array([by_id[i] for i in pool_ids], dtype=np.float64)


def scores_bm25(pool_texts: Sequence[str], target_texts: Sequence[str]) -> np.ndarray:
    """Mean BM25 score of each pool row over the targets; IDF over ``pool_texts`` only."""
    from rank_bm25 import BM25Okapi

    bm25 = BM25Okapi([words(t) for t in pool_texts])
    return np.mean([bm25.get_scores(words(t)) for t in target_texts], axis=0)


def scores_rds(pool_reps: torch.Tensor, target_reps: torch.Tensor) -> np.ndarray:
    """Mean cosine of each (normalized) pool representation with the targets'."""
    return (pool_reps @ target_reps.T).mean(dim=1).double().numpy()


def dsir_unavailable() -> str | None:
    """Why DSIR cannot run here (the package or its tokenizer missing), or None."""
    try:
        from data_selection import HashedNgramDSIR  # noqa: F401
    except ImportError as exc:
        return f"the data-selection package does not import: {exc}"
    return None


def dsir_log_weights(pool_texts: Sequence[str], target_texts: Sequence[str]) -> np.ndarray:
    """DSIR's log importance weights of the pool rows for the targets, by the package itself."""
    from data_selection import HashedNgramDSIR

    with tempfile.TemporaryDirectory(prefix="less-eval-dsir-") as tmp:
        root = Path(tmp)
        raw, target = root / "raw.jsonl", root / "target.jsonl"
        for path, texts in ((raw, pool_texts), (target, target_texts)):
            path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
        dsir = HashedNgramDSIR(
            [str(raw)],
            [str(target)],
            cache_dir=str(root / "cache"),
            num_proc=1,  # one shard: the weights come back in pool order, in one file
            ngrams=DSIR_NGRAMS,
            num_buckets=DSIR_BUCKETS,
            min_example_length=0,
        )
        dsir.fit_importance_estimator(num_tokens_to_fit="all")
        dsir.compute_importance_weights()
        weights = np.load(dsir.log_importance_weights_dir / "0.npy")
    if len(weights) != len(pool_texts):
        raise RuntimeError(f"DSIR returned {len(weights)} weights for {len(pool_texts)} rows")
    return weights.astype(np.float64)


def scores_dsir(log_weights: np.ndarray, *labels: object) -> np.ndarray:
    """DSIR's resampling without replacement: Gumbel noise on the log weights, then top-k (what
    ``DSIR.resample`` does), with a seeded generator instead of numpy's global one."""
    return log_weights + rng_for("dsir", *labels).gumbel(size=len(log_weights))
