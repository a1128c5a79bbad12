"""Verify a datastore: checksums, shapes, norms, and a recomputed sample of rows."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from indexer.checkpoints import discover_checkpoints, select_checkpoints
from indexer.datastore import Datastore
from indexer.fsutil import sha256_file
from indexer.jsonl import iter_examples
from indexer.manifest import Manifest
from indexer.model_io import load_adapter_weights, load_lora_model, load_tokenizer, resolve_device
from indexer.optimizer_files import load_adam_state
from indexer.search import SearchParams, ShardSearcher
from less_core.config import SelectionConfig
from less_core.data import collate, tokenize_example
from less_core.errors import IntegrityError
from less_core.featurize import Featurizer
from less_core.lora_grads import PerExampleGradients
from less_core.projectors import make_projector
from less_core.search import QuerySet

log = logging.getLogger(__name__)

NORM_TOLERANCE = 1e-2  # float16 storage rounds each coordinate to ~1e-3 relative
# Recomputed rows land in other batches (other padding) than at build time: float noise only.
MIN_COSINE = 0.999
# Rows whose norms are checked per read, so memory stays bounded whatever N is
NORM_CHECK_BLOCK_ROWS = 16384


RECALL_SAMPLE = 16
"""Stored rows used as queries when measuring an approximate index's recall."""


@dataclass
class VerifyReport:
    """What ``verify`` found.

    Attributes:
        version: the version checked.
        bad_checksums: files whose sha256 does not match.
        problems: anything else wrong (shapes, norms, recomputed rows).
        min_cosine: per checkpoint, the lowest cosine of a recomputed row with its stored one.
        recall: for an approximate index, ``{"k=<k>": mean recall@k}`` against the exact scan
            on a sample of stored rows used as queries (the index's default search settings).
    """

    version: str
    bad_checksums: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    min_cosine: dict[str, float] = field(default_factory=dict)
    recall: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.bad_checksums and not self.problems


def check_pool_files(manifest: Manifest, pools: Sequence[Path]) -> None:
    """The given files must be exactly the built pool and every appended file (any order).

    Raises:
        IntegrityError: a file that is none of them, or one of them missing.
    """
    expected = {manifest.pool.sha256: manifest.pool.file}
    expected.update({a.sha256: a.file for a in manifest.appended})
    given = {sha256_file(p): p for p in pools}
    stray = [str(p) for digest, p in given.items() if digest not in expected]
    if stray:
        raise IntegrityError(
            f"{', '.join(stray)}: neither the pool nor an appended file of this version"
        )
    missing = [name for digest, name in expected.items() if digest not in given]
    if missing:
        raise IntegrityError(f"also give the row file(s) this version holds: {', '.join(missing)}")


def verify_datastore(
    store: Datastore,
    *,
    model_dir: Path | None = None,
    pool_path: Path | Sequence[Path] | None = None,
    warmup_dir: Path | None = None,
    sample: int = 8,
    seed: int = 0,
    device: str | None = None,
) -> VerifyReport:
    """Check a datastore; recompute ``sample`` rows per checkpoint when model, pool and warmup
    checkpoints are given."""
    report = VerifyReport(store.version, bad_checksums=store.verify_checksums())
    m = store.manifest
    ids = store.ids
    if len(set(ids)) != len(ids):
        report.problems.append("duplicate ids")
    for name in store.checkpoint_names:
        f = store.features(name)
        if f.shape != (store.n, m.features.dim) or str(f.dtype) != m.features.dtype:
            report.problems.append(
                f"{name}: features {f.shape} {f.dtype} do not match the manifest"
            )
            continue
        for r0 in range(0, store.n, NORM_CHECK_BLOCK_ROWS):
            block = np.asarray(f[r0 : r0 + NORM_CHECK_BLOCK_ROWS], dtype=np.float32)
            norms = np.linalg.norm(block, axis=1)
            if np.any(np.abs(norms - 1.0) > NORM_TOLERANCE):
                report.problems.append(
                    f"{name}: rows not unit-norm near row {r0 + int(np.argmax(np.abs(norms - 1)))}"
                )
                break
    if not m.build.exact:
        report.recall = index_recall(store, seed=seed)
    if model_dir is None or pool_path is None or warmup_dir is None:
        return report
    pools = [pool_path] if isinstance(pool_path, Path) else list(pool_path)
    check_pool_files(m, pools)
    rows = np.sort(
        np.random.default_rng(seed).choice(store.n, size=min(sample, store.n), replace=False)
    )
    wanted = {ids[r]: r for r in rows}
    examples = {ex.id: ex for pool in pools for ex in iter_examples(pool) if ex.id in wanted}
    tokenizer = load_tokenizer(model_dir)
    toks = [tokenize_example(tokenizer, examples[ids[r]], m.tokenization.max_length) for r in rows]
    dev = resolve_device(device)
    model = load_lora_model(model_dir, m.lora, dev)
    grads = PerExampleGradients(model, m.build.autocast_dtype)
    projector = make_projector(m.projector, grads.layout)
    shapes = [p.module.weight.shape for p in grads.params]
    by_name = {
        c.name: c
        for c in select_checkpoints(discover_checkpoints(warmup_dir), store.checkpoint_names)
    }
    batch = collate(toks, tokenizer.pad_token_id).to(dev)
    for rec in m.checkpoints:
        ckpt = by_name[rec.name]
        if sha256_file(ckpt.optimizer_state_path) != rec.optimizer_sha256:
            report.problems.append(f"{ckpt.name}: optimizer state differs from the one indexed")
            continue
        load_adapter_weights(model, ckpt.path)
        adam = load_adam_state(ckpt.optimizer_state_path, list(grads.layout.names), shapes)
        fresh = Featurizer(grads, projector, adam, m.features.adam)(batch)[0]
        stored = np.asarray(store.features(ckpt.name)[rows], dtype=np.float32)
        cos = (fresh.cpu().numpy() * stored).sum(axis=1)
        report.min_cosine[ckpt.name] = float(cos.min())
        if cos.min() < MIN_COSINE:
            report.problems.append(
                f"{ckpt.name}: recomputed row {int(rows[np.argmin(cos)])} "
                f"has cosine {cos.min():.4f}"
            )
    return report


def index_recall(
    store: Datastore,
    ks: list[int] | None = None,
    sample: int = RECALL_SAMPLE,
    seed: int = 0,
    params: SearchParams | None = None,
) -> dict[str, float]:
    """Mean recall@k of the approximate index against the exact scan.

    Queries are stored rows (their checkpoint features side by side, weighted by w_c like a
    real query): they come from the same distribution as target gradients, unlike random
    vectors, and need no model to compute.

    Args:
        store: a datastore with an approximate index.
        ks: the k values to measure (default: the default 5 % selection, and 1 %).
        sample: how many rows serve as queries.
        params: search options for the approximate side (default: the index's own).
    """
    searcher = ShardSearcher(store)
    names, weights = store.manifest.weights()
    rows = np.sort(
        np.random.default_rng(seed).choice(store.n, size=min(sample, store.n), replace=False)
    )
    queries = torch.from_numpy(
        np.hstack(
            [
                w * np.asarray(store.features(n)[rows], dtype=np.float32)
                for n, w in zip(names, weights)
            ]
        )
    )
    if ks is None:
        ks = sorted({SelectionConfig().resolve_k(store.n), max(1, round(0.01 * store.n))})
    out = {}
    exact, approx = SearchParams(exact=True), params or SearchParams()
    for k in ks:
        sets = [QuerySet(queries[i : i + 1], k) for i in range(len(rows))]
        truth = searcher.search(names, sets, [exact] * len(sets))
        found = searcher.search(names, sets, [approx] * len(sets))
        hits = [len(set(t.rows.tolist()) & set(f.rows.tolist())) / k for t, f in zip(truth, found)]
        out[f"k={k}"] = float(np.mean(hits))
    return out
