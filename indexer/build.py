"""Datastore build: featurize the pool at every checkpoint and publish a datastore version.

Stages, each resumable (the same command after a kill continues where it stopped):
1. tokenize the pool into memory-mapped arrays (redone if interrupted; it is cheap);
2. per checkpoint and row shard, featurize batch after batch into a preallocated (n, P)
   memmap; a progress file per shard and checkpoint records how many batches are flushed to
   disk. Batches are fixed by the build config (length-sorted within the shard, fixed
   boundaries), so a resumed build writes the same bytes;
3. write ids, approximate FAISS indexes (if asked for), adapters, the pool metadata columns
   (``metadata/``, from the lines stage 1 wrote), checksums and manifest, then publish
   atomically.

The build key hashes every input (pool bytes, model, checkpoints, configs): a different input
never resumes a stale staging directory, and an identical one yields the same version name.

Under ``torchrun`` (``build_datastore(req, ranks)`` with ``indexer.distributed.Ranks``) the same
stages are split over the ranks: rank 0 tokenizes while the others wait, each rank featurizes
the shards it owns (shard i -> rank i % world size; without ``shard_rows`` one contiguous slice
per rank, ``ceil(pool examples / world size)`` rows, recorded in the manifest) into the shared
staging directory, and after a barrier rank 0 checks every part (progress files, shapes, norms of
a sample) and runs stage 3 alone. Shards are featurized independently with the same batches, so
the version equals a single-process build with the same ``shard_rows``, bit for bit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import secrets
import shutil
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

import less_core
from indexer import datastore as ds
from indexer.checkpoints import Checkpoint, discover_checkpoints, select_checkpoints
from indexer.config import BuildConfig
from indexer.distributed import Ranks
from indexer.faiss_index import build_index
from indexer.fsutil import atomic_write_json, atomic_write_text, sha256_file
from indexer.manifest import (
    FORMAT_VERSION,
    CheckpointRecord,
    FeaturesInfo,
    HostInfo,
    IndexInfo,
    Manifest,
    MetadataField,
    MetadataInfo,
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
from indexer.pool_metadata import (
    METADATA_FORMAT,
    FieldInfo,
    iter_record_file,
    write_pool_metadata,
)
from indexer.progress import Progress
from indexer.tokenized_pool import METADATA_ROWS, TokenizedPool, tokenize_pool
from less_core.config import AdamFeatureConfig, ProjectionConfig, TokenizationConfig
from less_core.data import collate
from less_core.errors import ConfigError, IndexMismatchError, IntegrityError
from less_core.featurize import Featurizer
from less_core.lora_grads import PerExampleGradients
from less_core.projectors import make_projector
from less_core.scoring import checkpoint_weights

log = logging.getLogger(__name__)

# Seconds of featurizing a kill may lose at most (env override: tests flush every batch).
FLUSH_INTERVAL_S = float(os.environ.get("LESS_FLUSH_INTERVAL_S", "10"))
# Rows per shard and checkpoint whose norms rank 0 checks before publishing a distributed build
PART_NORM_SAMPLE_ROWS = 64
# Stored features are unit-norm up to float16 rounding (the tolerance of ``indexer.verify``)
PART_NORM_TOLERANCE = 1e-2
# Written by rank 0 into the staging directory, read back by the others: one shared filesystem
SHARED_CHECK_FILE = "progress/shared-check.json"


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


def metadata_info(fields: list[FieldInfo]) -> MetadataInfo:
    """The manifest's summary of the ``metadata/`` a version was given."""
    return MetadataInfo(
        fields=tuple(MetadataField(name=f.name, kind=f.kind) for f in fields), has_previews=True
    )


def build_key(req: BuildRequest, pool_sha: str, model_sha: str, ckpt_records: list[dict]) -> str:
    payload = {
        "format": FORMAT_VERSION,
        # Versions built before pool metadata was stored hash without it: rebuilding one with
        # the same inputs makes a new version that has metadata/ instead of finding the old.
        "metadata_format": METADATA_FORMAT,
        "pool_sha256": pool_sha,
        "model_sha256": model_sha,
        "checkpoints": ckpt_records,
        "projection": req.projection.to_dict(),
        "build": req.build.to_dict(),
        "adam": req.adam.to_dict(),
        "tokenization": req.tokenization.to_dict(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def count_pool_examples(pool_path: Path) -> int:
    """Examples in a pool JSONL file (its non-blank lines), before any is skipped."""
    with pool_path.open("rb") as handle:
        return sum(1 for line in handle if line.strip())


def distributed_build_config(build: BuildConfig, pool_path: Path, world_size: int) -> BuildConfig:
    """The build config of a ``world_size``-rank build: without ``shard_rows``, one contiguous
    slice per rank (``ceil(pool examples / world_size)`` rows; examples skipped at tokenization
    make the last slices shorter). It enters the build key and the manifest as asked for."""
    if world_size <= 1 or build.shard_rows is not None:
        return build
    n = count_pool_examples(pool_path)
    return replace(build, shard_rows=max(1, -(-n // world_size)))


def build_datastore(req: BuildRequest, ranks: Ranks | None = None) -> Path:
    """Build (or resume, or find already published) the datastore for ``req``.

    Args:
        req: what to build.
        ranks: this process's rank in a ``torchrun`` job (``indexer.distributed.init_from_env``);
            None or ``Ranks()``: a build in one process.

    Returns:
        The published version directory (on every rank).
    """
    ranks = ranks or Ranks()
    timings: dict[str, float] = {}
    t_start = time.monotonic()
    if ranks.distributed:
        build_config = distributed_build_config(req.build, req.pool_path, ranks.world_size)
        if build_config != req.build:
            log.info(
                "%d ranks: shard_rows %d (one contiguous slice per rank)",
                ranks.world_size,
                build_config.shard_rows,
            )
            req = replace(req, build=build_config)
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
    ranks.agree(key, "build key")
    published = (req.out_root / "versions" / version / ds.MANIFEST).is_file()
    if ranks.broadcast(published, "published check"):
        log.info("datastore version %s is already published; nothing to do", version)
        if ranks.is_main:
            ds.publish_pointer(req.out_root, version)
        ranks.broadcast(None, "pointer")
        return req.out_root / "versions" / version
    staging = req.out_root / ".staging" / version
    if ranks.is_main:
        (staging / "progress").mkdir(parents=True, exist_ok=True)
    log.info("building datastore version %s in %s", version, staging)

    device = resolve_device(req.device)
    tokenizer = load_tokenizer(req.model_dir)
    t0 = time.monotonic()
    if ranks.is_main:
        pool = tokenize_pool(
            req.pool_path, tokenizer, req.tokenization.max_length, staging / "tokens"
        )
    timings["tokenize_s"] = time.monotonic() - t0
    if ranks.distributed:
        pool = _share_staging(ranks, staging, pool if ranks.is_main else None)
    bounds = ds.shard_bounds(pool.n, req.build.shard_rows)
    shard_dirs = [staging / ds.shard_name(i) for i in range(len(bounds))]
    mine = [i for i in range(len(bounds)) if ranks.owns(i)]
    if ranks.distributed:
        log.info("featurizing shards %s of %d (%d rows)", mine, len(bounds), pool.n)
        if len(bounds) % ranks.world_size:
            log.warning(
                "%d shards on %d ranks: ranks with fewer shards wait for the others at a barrier "
                "(the distributed timeout must cover it)",
                len(bounds),
                ranks.world_size,
            )
    for i in mine:
        (shard_dirs[i] / ds.FEATURES_DIR).mkdir(parents=True, exist_ok=True)

    # Rank 0 always owns shard 0, so it has the model layout the manifest records.
    if mine:
        model = load_lora_model(req.model_dir, lora, device)
        grads = PerExampleGradients(model, req.build.autocast_dtype)
        projector = make_projector(req.projection, grads.layout)
        names, shapes = list(grads.layout.names), [p.module.weight.shape for p in grads.params]
    for ckpt in checkpoints if mine else []:
        load_adapter_weights(model, ckpt.path)
        adam_state = load_adam_state(ckpt.optimizer_state_path, names, shapes)
        featurizer = Featurizer(grads, projector, adam_state, req.adam)
        seconds = 0.0
        for i in mine:
            (start, end), shard_dir = bounds[i], shard_dirs[i]
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
    if ranks.distributed:
        per_rank = ranks.all_gather(timings, "featurized")
        if not ranks.is_main:
            published_path = ranks.broadcast(None, "published")
            log.info("rank 0 published %s", published_path)
            return Path(published_path)
        _gather_timings(timings, per_rank, [c.name for c in checkpoints])
        _check_parts(staging, bounds, shard_dirs, checkpoints, req)

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
    t0 = time.monotonic()
    meta_fields = write_pool_metadata(
        staging, lambda: iter_record_file(pool.path / METADATA_ROWS), pool.lengths
    )
    timings["metadata_s"] = time.monotonic() - t0
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
        metadata=metadata_info(meta_fields),
        device=str(device),
        host=HostInfo(python=platform.python_version(), torch=torch.__version__),
        timings={k: round(v, 3) for k, v in timings.items()},
    )
    # Only the published artifacts stay; staging internals go.
    shutil.rmtree(staging / "tokens")
    shutil.rmtree(staging / "progress")
    manifest.save(staging / ds.MANIFEST)
    ds.write_checksums(staging)
    published_dir = ds.publish(staging, req.out_root, version)
    log.info(
        "published datastore %s (%d examples, %d skipped)", published_dir, pool.n, pool.n_skipped
    )
    ranks.broadcast(str(published_dir), "published")
    return published_dir


def _share_staging(ranks: Ranks, staging: Path, pool: TokenizedPool | None) -> TokenizedPool:
    """After rank 0 tokenized the pool: every rank opens it, having checked that it sees the
    staging directory rank 0 wrote (one filesystem shared by all ranks, nodes included)."""
    check = staging / SHARED_CHECK_FILE
    if ranks.is_main:
        (staging / ds.SHARDS_DIR).mkdir(exist_ok=True)
        atomic_write_json(check, {"token": secrets.token_hex(16)})
    token = ranks.broadcast(
        json.loads(check.read_text())["token"] if ranks.is_main else None, "tokenized pool"
    )
    if pool is not None:
        return pool
    try:
        seen = json.loads(check.read_text())["token"]
    except (OSError, ValueError, KeyError):
        seen = None
    if seen != token:
        raise ConfigError(
            f"{ranks.label}: {staging} is not the staging directory rank 0 wrote; --out must be "
            "on a filesystem every rank (every node) shares"
        )
    return TokenizedPool(staging / "tokens")


def _gather_timings(
    timings: dict[str, float], per_rank: list[dict[str, float]], checkpoints: list[str]
) -> None:
    """Stage seconds of a distributed build: the slowest rank per checkpoint, and per rank."""
    for name in checkpoints:
        timings[f"featurize_s/{name}"] = max(t.get(f"featurize_s/{name}", 0.0) for t in per_rank)
    for r, t in enumerate(per_rank):
        timings[f"featurize_s/rank{r}"] = sum(t.get(f"featurize_s/{c}", 0.0) for c in checkpoints)


def _check_parts(
    staging: Path,
    bounds: list[tuple[int, int]],
    shard_dirs: list[Path],
    checkpoints: list[Checkpoint],
    req: BuildRequest,
) -> None:
    """Every shard's features, as the ranks left them: complete per their progress files, of the
    right shape and dtype, unit-norm on a sample of rows.

    Raises:
        IntegrityError: naming the shard and checkpoint.
    """
    dim = req.projection.dim
    for i, ((start, end), shard_dir) in enumerate(zip(bounds, shard_dirs)):
        n = end - start
        n_batches = (n + req.build.batch_size - 1) // req.build.batch_size
        for ckpt in checkpoints:
            where = f"shard {i} ({ds.shard_name(i)}), {ckpt.name}"
            progress_path = staging / "progress" / f"{i:05d}-{ckpt.name}.json"
            try:
                done = json.loads(progress_path.read_text())["batches_done"]
            except (OSError, ValueError, KeyError):
                raise IntegrityError(f"{where}: no progress file {progress_path}") from None
            if done != n_batches:
                raise IntegrityError(f"{where}: {done} of {n_batches} batches featurized")
            features = np.load(shard_dir / ds.feature_file(ckpt.name), mmap_mode="r")
            if features.shape != (n, dim) or str(features.dtype) != req.build.feature_dtype:
                raise IntegrityError(
                    f"{where}: features {features.shape} {features.dtype}, expected "
                    f"({n}, {dim}) {req.build.feature_dtype}"
                )
            rows = np.unique(np.linspace(0, n - 1, min(n, PART_NORM_SAMPLE_ROWS)).astype(int))
            norms = np.linalg.norm(np.asarray(features[rows], dtype=np.float32), axis=1)
            bad = np.abs(norms - 1.0) > PART_NORM_TOLERANCE
            if bad.any():
                row = start + int(rows[np.argmax(bad)])
                raise IntegrityError(f"{where}: row {row} has norm {norms[bad][0]:.4f}, not 1")
            del features
    log.info("checked %d shards x %d checkpoints", len(bounds), len(checkpoints))
