"""Datastore build: featurize the pool at every checkpoint and publish a datastore version.

Stages, each resumable (the same command after a kill continues where it stopped):
1. tokenize the pool into memory-mapped arrays (redone if interrupted; it is cheap);
2. per checkpoint and row shard, featurize batch after batch into a preallocated (n, P)
   memmap; a progress file per shard and checkpoint records how many batches are flushed to
   disk. Batches are fixed by the build config (length-sorted within the shard, fixed
   boundaries), so a resumed build writes the same bytes;
3. write ids, approximate FAISS indexes (if asked for), adapters, checksums and manifest, then
   publish atomically.

The build key hashes every input (pool bytes, model, checkpoints, configs): a different input
never resumes a stale staging directory, and an identical one yields the same version name.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

import less_core
from indexer import datastore as ds
from indexer.checkpoints import Checkpoint, discover_checkpoints, select_checkpoints
from indexer.config import BuildConfig
from indexer.faiss_index import build_index
from indexer.fsutil import atomic_write_json, atomic_write_text, sha256_file
from indexer.manifest import (
    FORMAT_VERSION,
    CheckpointRecord,
    FeaturesInfo,
    HostInfo,
    IndexInfo,
    Manifest,
    ModelInfo,
    PoolInfo,
    ShardRecord,
    ids_digest,
)
from indexer.model_io import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    load_adapter_weights,
    load_lora_model,
    load_tokenizer,
    model_fingerprint,
    read_lora_settings,
    resolve_device,
)
from indexer.optimizer_files import load_adam_state
from indexer.progress import Progress
from indexer.tokenized_pool import TokenizedPool, tokenize_pool
from less_core.config import AdamFeatureConfig, ProjectionConfig, TokenizationConfig
from less_core.data import collate
from less_core.errors import ConfigError, IndexMismatchError
from less_core.featurize import Featurizer
from less_core.lora_grads import PerExampleGradients
from less_core.projectors import make_projector
from less_core.scoring import checkpoint_weights

log = logging.getLogger(__name__)

# Seconds of featurizing a kill may lose at most (env override: tests flush every batch).
FLUSH_INTERVAL_S = float(os.environ.get("LESS_FLUSH_INTERVAL_S", "10"))


@dataclass(frozen=True)
class BuildRequest:
    """Everything a build needs. Paths are local; ``model_id`` is recorded for humans."""

    model_dir: Path
    pool_path: Path
    warmup_dir: Path
    out_root: Path
    model_id: str = ""
    projection: ProjectionConfig = field(default_factory=ProjectionConfig)
    build: BuildConfig = field(default_factory=BuildConfig)
    adam: AdamFeatureConfig = field(default_factory=AdamFeatureConfig)
    tokenization: TokenizationConfig = field(default_factory=TokenizationConfig)
    checkpoints: tuple[str, ...] | None = None
    lr_overrides: dict[str, float] | None = None
    device: str | None = None


def _checkpoint_record(ckpt: Checkpoint) -> dict:
    opt = ckpt.optimizer_state_path
    if opt is None:
        raise ConfigError(
            f"{ckpt.path}: no optimizer state (optimizer.pt / optimizer.bin) for Adam features"
        )
    return {
        "name": ckpt.name,
        "step": ckpt.step,
        "lr": ckpt.lr,
        "lr_source": ckpt.lr_source,
        "adapter_sha256": sha256_file(ckpt.path / ADAPTER_WEIGHTS),
        "optimizer_file": opt.name,
        "optimizer_sha256": sha256_file(opt),
    }


def _processing_order(
    pool: TokenizedPool, start: int, end: int, sort_by_length: bool
) -> np.ndarray:
    """Global rows of one shard in the order they are batched (shortest first, stable)."""
    rows = np.arange(start, end)
    if not sort_by_length:
        return rows
    return rows[np.argsort(pool.lengths[start:end], kind="stable")]


def _featurize_shard(
    featurizer: Featurizer,
    pool: TokenizedPool,
    start: int,
    order: np.ndarray,
    batch_size: int,
    pad_id: int,
    device: torch.device,
    out_path: Path,
    progress_path: Path,
    dtype: str,
    label: str,
) -> float:
    """Fill ``out_path`` (n, P) for the shard starting at global row ``start``, batch by batch,
    resuming from ``progress_path``; ``order`` lists the shard's global rows. Returns seconds."""
    n, dim = len(order), featurizer.projector.dim
    if progress_path.is_file():
        done = json.loads(progress_path.read_text())["batches_done"]
        features = np.load(out_path, mmap_mode="r+")
    else:
        done = 0
        features = np.lib.format.open_memmap(out_path, mode="w+", dtype=dtype, shape=(n, dim))
    n_batches = (n + batch_size - 1) // batch_size
    if done >= n_batches:
        return 0.0
    if done:
        log.info("%s: resuming at batch %d/%d", label, done, n_batches)
    progress = Progress(label, total=n, done=min(n, done * batch_size))
    t0 = last_flush = time.monotonic()
    for b in range(done, n_batches):
        rows = order[b * batch_size : (b + 1) * batch_size]
        batch = collate(pool.rows(rows), pad_id).to(device)
        feats, _ = featurizer(batch)
        features[rows - start] = feats.cpu().numpy().astype(dtype)
        progress.update(len(rows))
        if time.monotonic() - last_flush >= FLUSH_INTERVAL_S or b == n_batches - 1:
            features.flush()
            atomic_write_json(progress_path, {"batches_done": b + 1, "n_batches": n_batches})
            last_flush = time.monotonic()
    del features
    return time.monotonic() - t0


def build_key(req: BuildRequest, pool_sha: str, model_sha: str, ckpt_records: list[dict]) -> str:
    payload = {
        "format": FORMAT_VERSION,
        "pool_sha256": pool_sha,
        "model_sha256": model_sha,
        "checkpoints": ckpt_records,
        "projection": req.projection.to_dict(),
        "build": req.build.to_dict(),
        "adam": req.adam.to_dict(),
        "tokenization": req.tokenization.to_dict(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def build_datastore(req: BuildRequest) -> Path:
    """Build (or resume, or find already published) the datastore for ``req``.

    Returns:
        The published version directory.
    """
    timings: dict[str, float] = {}
    t_start = time.monotonic()
    checkpoints = select_checkpoints(
        discover_checkpoints(req.warmup_dir, req.lr_overrides),
        list(req.checkpoints) if req.checkpoints else None,
    )
    lora = read_lora_settings(checkpoints[0].path)
    for c in checkpoints[1:]:
        if read_lora_settings(c.path) != lora:
            raise IndexMismatchError(f"{c.path}: LoRA settings differ from {checkpoints[0].path}")
    records = [_checkpoint_record(c) for c in checkpoints]
    pool_sha = sha256_file(req.pool_path)
    model_sha = model_fingerprint(req.model_dir)
    key = build_key(req, pool_sha, model_sha, records)
    version = key[:16]
    if (req.out_root / "versions" / version / ds.MANIFEST).is_file():
        log.info("datastore version %s is already published; nothing to do", version)
        ds.publish_pointer(req.out_root, version)
        return req.out_root / "versions" / version
    staging = req.out_root / ".staging" / version
    (staging / "progress").mkdir(parents=True, exist_ok=True)
    log.info("building datastore version %s in %s", version, staging)

    device = resolve_device(req.device)
    tokenizer = load_tokenizer(req.model_dir)
    t0 = time.monotonic()
    pool = tokenize_pool(req.pool_path, tokenizer, req.tokenization.max_length, staging / "tokens")
    timings["tokenize_s"] = time.monotonic() - t0
    bounds = ds.shard_bounds(pool.n, req.build.shard_rows)
    shard_dirs = [staging / ds.shard_name(i) for i in range(len(bounds))]
    for shard_dir in shard_dirs:
        (shard_dir / ds.FEATURES_DIR).mkdir(parents=True, exist_ok=True)

    model = load_lora_model(req.model_dir, lora, device)
    grads = PerExampleGradients(model)
    projector = make_projector(req.projection, grads.layout)
    names, shapes = list(grads.layout.names), [p.module.weight.shape for p in grads.params]
    for ckpt in checkpoints:
        load_adapter_weights(model, ckpt.path)
        adam_state = load_adam_state(ckpt.optimizer_state_path, names, shapes)
        featurizer = Featurizer(grads, projector, adam_state, req.adam)
        seconds = 0.0
        for i, ((start, end), shard_dir) in enumerate(zip(bounds, shard_dirs)):
            seconds += _featurize_shard(
                featurizer,
                pool,
                start,
                _processing_order(pool, start, end, req.build.sort_by_length),
                req.build.batch_size,
                tokenizer.pad_token_id,
                device,
                shard_dir / ds.feature_file(ckpt.name),
                staging / "progress" / f"{i:05d}-{ckpt.name}.json",
                req.build.feature_dtype,
                f"featurize {ckpt.name}" + (f" shard {i + 1}/{len(bounds)}" if i else ""),
            )
        timings[f"featurize_s/{ckpt.name}"] = seconds

    t0 = time.monotonic()
    if not req.build.exact:
        for shard_dir in shard_dirs:
            features = [
                np.load(shard_dir / ds.feature_file(c.name), mmap_mode="r") for c in checkpoints
            ]
            build_index(
                features, req.build.index_factory, shard_dir / ds.INDEX, seed=req.projection.seed
            )
            del features
    timings["index_s"] = time.monotonic() - t0

    all_ids = (pool.path / "ids.txt").read_text(encoding="utf-8").split("\n")[:-1]
    shards = []
    for (start, end), shard_dir in zip(bounds, shard_dirs):
        atomic_write_text(shard_dir / ds.IDS, "".join(i + "\n" for i in all_ids[start:end]))
        shards.append(
            ShardRecord(
                name=str(shard_dir.relative_to(staging)),
                start=start,
                n=end - start,
                ids_sha256=sha256_file(shard_dir / ds.IDS),
            )
        )
    del all_ids
    shutil.copyfile(pool.path / "skipped.jsonl", staging / ds.SKIPPED)
    for ckpt in checkpoints:
        adapter_dir = staging / "adapters" / ckpt.name
        adapter_dir.mkdir(parents=True, exist_ok=True)
        for fname in (ADAPTER_WEIGHTS, ADAPTER_CONFIG):
            shutil.copyfile(ckpt.path / fname, adapter_dir / fname)
    weights = checkpoint_weights([c.lr for c in checkpoints])
    for rec, w in zip(records, weights):
        rec["weight"] = float(w)
    timings["total_s"] = time.monotonic() - t_start
    manifest = Manifest(
        format_version=FORMAT_VERSION,
        version=version,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        code_version=less_core.__version__,
        model=ModelInfo(id=req.model_id or req.model_dir.name, sha256=model_sha),
        lora=lora,
        layout=grads.layout,
        checkpoints=tuple(CheckpointRecord(**r) for r in records),
        projector=req.projection,
        features=FeaturesInfo(
            train_kind="adam",
            target_kind="sgd",
            adam=req.adam,
            dtype=req.build.feature_dtype,
            dim=req.projection.dim,
            normalized="l2",
        ),
        tokenization=req.tokenization,
        build=req.build,
        index=IndexInfo(
            file=None if req.build.exact else ds.INDEX,
            factory=req.build.index_factory,
            metric="inner_product",
            over="concatenated checkpoint features, in manifest order, per shard",
        ),
        n=pool.n,
        shards=tuple(shards),
        n_skipped=pool.n_skipped,
        pool=PoolInfo(file=req.pool_path.name, sha256=pool_sha),
        ids_sha256=ids_digest([staging / s.name / ds.IDS for s in shards]),
        device=str(device),
        host=HostInfo(python=platform.python_version(), torch=torch.__version__),
        timings={k: round(v, 3) for k, v in timings.items()},
    )
    # Only the published artifacts stay; staging internals go.
    shutil.rmtree(staging / "tokens")
    shutil.rmtree(staging / "progress")
    manifest.save(staging / ds.MANIFEST)
    ds.write_checksums(staging)
    published = ds.publish(staging, req.out_root, version)
    log.info("published datastore %s (%d examples, %d skipped)", published, pool.n, pool.n_skipped)
    return published
