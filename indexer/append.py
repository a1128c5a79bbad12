"""Append rows to a datastore: a NEW version whose old shards are the base version's files.

``less-index append`` adds the rows of a JSONL file (pool format, ids new to the datastore) to a
published version (``CURRENT`` by default) and publishes the result as a new version (SPEC §3:
versions are never modified). Everything that fixes the features comes from the base manifest
and is checked against the inputs: the model (fingerprint), the warmup checkpoints (adapter and
optimizer sha256, LoRA settings), the LoRA layout; the projector is rebuilt from the manifest,
and the tokenization and build config (batch size, dtype, shard size, index factory) are the
base's. Only the new rows are featurized, into new shards after the existing ones (split by
``shard_rows`` when the base has it); the old shards' files, adapters included, are hard-linked
into the staging directory (copied, with a warning, where linking fails), so the old part of the
new version is byte-identical and costs no disk. Checksums of linked files are taken from the
base's ``checksums.json`` (same bytes), so an append reads only what it adds. The pool metadata
(``metadata/``: fields, token counts, previews) is re-encoded for old + new rows together (the
base's columns decoded, the new rows added, kinds derived again); a base version without
metadata gives a new version without it.

Like ``build``: resumable (staging is keyed by the version; tokenizing, linking and each
shard/checkpoint featurization resume where a killed run stopped) and idempotent (the version
name hashes the base version, the new file's bytes and the configuration; rerunning an append
that produced ``CURRENT`` returns that version).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import platform
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

import less_core
from indexer import datastore as ds
from indexer.build import (
    BuildRequest,
    _checkpoint_record,
    _featurize_shard,
    _processing_order,
    build_key,
    metadata_info,
)
from indexer.checkpoints import Checkpoint
from indexer.faiss_index import build_index
from indexer.fsutil import atomic_write_text, sha256_file
from indexer.jsonl import iter_examples
from indexer.manifest import (
    FORMAT_VERSION,
    AppendedInfo,
    HostInfo,
    IndexInfo,
    Manifest,
    MetadataInfo,
    ShardRecord,
    ids_digest,
)
from indexer.model_io import (
    load_adapter_weights,
    load_lora_model,
    load_tokenizer,
    model_fingerprint,
    read_lora_settings,
    resolve_device,
)
from indexer.optimizer_files import load_adam_state
from indexer.pool_metadata import (
    METADATA_DIR,
    iter_record_file,
    iter_store_records,
    write_pool_metadata,
)
from indexer.tokenized_pool import METADATA_ROWS, TokenizedPool, tokenize_pool
from less_core.errors import DataError, IndexMismatchError, IndexNotFoundError, LessError
from less_core.featurize import Featurizer
from less_core.lora_grads import PerExampleGradients
from less_core.projectors import make_projector

log = logging.getLogger(__name__)

# Ids named in a duplicate-id error (the count is always given).
SHOWN_DUPLICATES = 5


@dataclass(frozen=True)
class AppendRequest:
    """An append: new rows for a datastore, with the model and warmup it was built from."""

    datastore_root: Path
    model_dir: Path
    pool_path: Path
    warmup_dir: Path
    version: str | None = None
    device: str | None = None


def append_key(base: ds.Datastore, rows_sha256: str) -> str:
    """The appended version's key: base version + new rows' bytes + the base's configuration.

    Reuses ``build_key`` over the base's recorded config, model and checkpoints (the same hashing
    as a build), with the "pool" being the pair (base version, new file).
    """
    m = base.manifest
    config = BuildRequest(
        model_dir=Path(),
        pool_path=Path(),
        warmup_dir=Path(),
        out_root=base.root,
        projection=m.projector,
        build=m.build,
        adam=m.features.adam,
        tokenization=m.tokenization,
    )
    pool = json.dumps(
        {"append_to": base.version, "base_ids_sha256": m.ids_sha256, "rows_sha256": rows_sha256},
        sort_keys=True,
    )
    records = [c.model_dump(exclude={"weight"}) for c in m.checkpoints]
    return build_key(config, hashlib.sha256(pool.encode()).hexdigest(), m.model.sha256, records)


def _already_appended(root: Path, base: ds.Datastore, rows_sha256: str) -> bool:
    """True if ``base`` is itself the result of appending these bytes to its recorded base."""
    if not base.manifest.appended or base.manifest.appended[-1].sha256 != rows_sha256:
        return False
    parent_version = base.manifest.appended[-1].base_version
    try:
        parent = ds.Datastore.open(root, parent_version)
    except LessError:
        return False
    return append_key(parent, rows_sha256)[:16] == base.version


def _skipped_ids(store: ds.Datastore) -> set[str]:
    path = store.path / ds.SKIPPED
    if not path.is_file():
        return set()
    return {json.loads(line)["id"] for line in path.read_text(encoding="utf-8").splitlines()}


def _check_new_rows(path: Path, store: ds.Datastore) -> int:
    """Number of rows in ``path``; refuses an empty file and ids the datastore already has.

    Raises:
        DataError: no rows; malformed lines or duplicates within the file (from the reader);
            ids already indexed or already skipped by the base version (the first ones named).
    """
    indexed, skipped = set(store.ids), _skipped_ids(store)
    n, taken = 0, []
    for ex in iter_examples(path):
        n += 1
        if ex.id in indexed or ex.id in skipped:
            taken.append(ex.id)
    if n == 0:
        raise DataError(f"{path}: no rows to append (the file is empty)")
    if taken:
        shown = ", ".join(repr(i) for i in taken[:SHOWN_DUPLICATES])
        more = (
            f" (and {len(taken) - SHOWN_DUPLICATES} more)" if len(taken) > SHOWN_DUPLICATES else ""
        )
        raise DataError(
            f"{path}: {len(taken)} id(s) already in datastore version {store.version}: "
            f"{shown}{more}; appended ids must be new"
        )
    return n


def _warmup_checkpoints(warmup_dir: Path, store: ds.Datastore) -> list[Checkpoint]:
    """The base's checkpoints found in ``warmup_dir``, checked to be the very same files.

    Raises:
        IndexNotFoundError: no warmup directory.
        IndexMismatchError: a checkpoint missing, or its adapter, optimizer state or LoRA
            settings differ from what the datastore was built with.
    """
    m = store.manifest
    if not warmup_dir.is_dir():
        raise IndexNotFoundError(f"warmup directory {warmup_dir} does not exist")
    missing = [c.name for c in m.checkpoints if not (warmup_dir / c.name).is_dir()]
    if missing:
        raise IndexMismatchError(
            f"{warmup_dir} lacks checkpoint(s) {missing} that datastore version "
            f"{store.version} was built from"
        )
    out = []
    for rec in m.checkpoints:
        ckpt = Checkpoint(rec.name, warmup_dir / rec.name, rec.step or 0, rec.lr, rec.lr_source)
        now = _checkpoint_record(ckpt)
        for field, label in (
            ("adapter_sha256", "adapter weights"),
            ("optimizer_file", "optimizer state file"),
            ("optimizer_sha256", "optimizer state"),
        ):
            if now[field] != getattr(rec, field):
                raise IndexMismatchError(
                    f"{ckpt.path}: {label} differ from the checkpoint datastore version "
                    f"{store.version} was built with ({field} {now[field][:12]} != "
                    f"{getattr(rec, field)[:12]}); append needs the same warmup checkpoints"
                )
        if read_lora_settings(ckpt.path) != m.lora:
            raise IndexMismatchError(f"{ckpt.path}: LoRA settings differ from the datastore's")
        out.append(ckpt)
    return out


class _Linker:
    """Hard-links published files into staging, copying where the filesystem refuses."""

    def __init__(self) -> None:
        self.linked = self.copied = 0

    def __call__(self, src: Path, dst: Path) -> None:
        if dst.exists():  # a resumed append: links are atomic and copies renamed into place
            return
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dst)
            self.linked += 1
            return
        except OSError as exc:
            if not self.copied:
                log.warning("cannot hard-link %s (%s); copying the base's files instead", src, exc)
        tmp = dst.with_name(f".{dst.name}.tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
        self.copied += 1


def _write_checksums(staging: Path, known: dict[str, str]) -> None:
    """``checksums.json`` like ``datastore.write_checksums``, reusing digests of linked files."""
    sums = {}
    for p in sorted(staging.rglob("*")):
        if p.is_file() and p.name != ds.CHECKSUMS:
            rel = str(p.relative_to(staging))
            sums[rel] = known[rel] if rel in known else sha256_file(p)
    (staging / ds.CHECKSUMS).write_text(json.dumps(sums, indent=2, sort_keys=True) + "\n")


def _append_metadata(staging: Path, base: ds.Datastore, pool: TokenizedPool) -> MetadataInfo | None:
    """Writes ``staging/metadata/`` for the base's rows followed by the new ones.

    Returns:
        The manifest's summary, or None when the base version has no metadata (nor, then,
        does the new version).
    """
    base_meta = base.metadata
    if base_meta is None:
        log.warning(
            "base version %s has no pool metadata (built before it was stored): the appended "
            "version has none either; rebuild the datastore to filter on metadata",
            base.version,
        )
        if (staging / METADATA_DIR).exists():
            shutil.rmtree(staging / METADATA_DIR)
        return None
    new_rows = pool.path / METADATA_ROWS
    fields = write_pool_metadata(
        staging,
        lambda: itertools.chain(iter_store_records(base_meta), iter_record_file(new_rows)),
        np.concatenate([np.asarray(base_meta.n_tokens, dtype=np.int64), pool.lengths]),
        # A field the base left out stays out: its old rows' values are gone.
        skip=base_meta.skipped,
    )
    return metadata_info(fields)


def append_rows(req: AppendRequest) -> Path:
    """Append ``req.pool_path``'s rows to a datastore version and publish the new version.

    Returns:
        The published version directory (the existing one if this append was already done).

    Raises:
        DataError: an empty file, malformed rows, ids already in the datastore, or no row left
            after tokenization.
        IndexMismatchError: model, warmup checkpoints or LoRA layout differ from the base's.
        LessError: ``CURRENT`` moved to another version while appending (nothing published).
    """
    t_start = time.monotonic()
    timings: dict[str, float] = {}
    root = req.datastore_root
    base = ds.Datastore.open(root, req.version)
    m = base.manifest
    rows_sha = sha256_file(req.pool_path) if req.pool_path.is_file() else ""
    if rows_sha and _already_appended(root, base, rows_sha):
        log.info("version %s already holds %s; nothing to do", base.version, req.pool_path)
        ds.publish_pointer(root, base.version)
        return base.path
    n_rows = _check_new_rows(req.pool_path, base)
    if model_fingerprint(req.model_dir) != m.model.sha256:
        raise IndexMismatchError(
            f"model at {req.model_dir} is not the model datastore version {base.version} "
            "was built with"
        )
    checkpoints = _warmup_checkpoints(req.warmup_dir, base)
    version = append_key(base, rows_sha)[:16]
    if (root / "versions" / version / ds.MANIFEST).is_file():
        log.info("datastore version %s is already published; nothing to do", version)
        ds.publish_pointer(root, version)
        return root / "versions" / version
    staging = root / ".staging" / version
    (staging / "progress").mkdir(parents=True, exist_ok=True)
    log.info("appending %d rows to version %s as %s in %s", n_rows, base.version, version, staging)

    # 1. The base version's files, linked (format-1 roots become shard 00000).
    t0 = time.monotonic()
    link, known = _Linker(), {}
    base_sums = json.loads((base.path / ds.CHECKSUMS).read_text())
    index_file = None if m.build.exact else ds.INDEX
    old_shards = []
    for i, shard in enumerate(base.shards):
        name = ds.shard_name(i)
        files = {ds.IDS: ds.IDS} | {
            ds.feature_file(c): ds.feature_file(c) for c in base.checkpoint_names
        }
        if index_file:
            files[index_file] = m.index.file or ds.INDEX
        for f, src_name in files.items():
            src = base.shard_dir(shard) / src_name
            old_rel = str(src.relative_to(base.path))
            link(src, staging / name / f)
            if old_rel in base_sums:
                known[f"{name}/{f}"] = base_sums[old_rel]
        old_shards.append(shard.model_copy(update={"name": name}))
    for ckpt_name in base.checkpoint_names:
        for src in sorted((base.path / "adapters" / ckpt_name).iterdir()):
            rel = str(src.relative_to(base.path))
            link(src, staging / rel)
            if rel in base_sums:
                known[rel] = base_sums[rel]
    timings["link_s"] = time.monotonic() - t0
    log.info("base files: %d hard-linked, %d copied", link.linked, link.copied)

    # 2. Tokenize the new rows (resumable stage of build).
    device = resolve_device(req.device)
    tokenizer = load_tokenizer(req.model_dir)
    t0 = time.monotonic()
    pool = tokenize_pool(req.pool_path, tokenizer, m.tokenization.max_length, staging / "tokens")
    timings["tokenize_s"] = time.monotonic() - t0

    # 3. Featurize only the new rows, into new shards after the base's.
    bounds = ds.shard_bounds(pool.n, m.build.shard_rows)
    first = len(base.shards)
    shard_dirs = [staging / ds.shard_name(first + i) for i in range(len(bounds))]
    for shard_dir in shard_dirs:
        (shard_dir / ds.FEATURES_DIR).mkdir(parents=True, exist_ok=True)
    model = load_lora_model(req.model_dir, m.lora, device)
    # The precision the base's rows were featurized with (BuildConfig.autocast).
    grads = PerExampleGradients(model, m.build.autocast_dtype)
    if grads.layout != m.layout:
        raise IndexMismatchError("the model's LoRA layout differs from the datastore's")
    projector = make_projector(m.projector, m.layout)
    names, shapes = list(grads.layout.names), [p.module.weight.shape for p in grads.params]
    for ckpt in checkpoints:
        load_adapter_weights(model, ckpt.path)
        opt = ckpt.optimizer_state_path
        assert opt is not None  # _checkpoint_record refused a checkpoint without one
        adam_state = load_adam_state(opt, names, shapes)
        featurizer = Featurizer(grads, projector, adam_state, m.features.adam)
        seconds = 0.0
        for i, ((start, end), shard_dir) in enumerate(zip(bounds, shard_dirs)):
            seconds += _featurize_shard(
                featurizer,
                pool,
                start,
                _processing_order(pool, start, end, m.build.sort_by_length),
                m.build.batch_size,
                tokenizer.pad_token_id,
                device,
                shard_dir / ds.feature_file(ckpt.name),
                staging / "progress" / f"{first + i:05d}-{ckpt.name}.json",
                m.features.dtype,
                f"append {ckpt.name}" + (f" shard {i + 1}/{len(bounds)}" if i else ""),
            )
        timings[f"featurize_s/{ckpt.name}"] = seconds
    del model, grads

    t0 = time.monotonic()
    if index_file:
        for shard_dir in shard_dirs:
            features = [
                np.load(shard_dir / ds.feature_file(c), mmap_mode="r")
                for c in base.checkpoint_names
            ]
            build_index(features, m.build.index_factory, shard_dir / index_file, m.projector.seed)
            del features
    timings["index_s"] = time.monotonic() - t0

    # 4. Ids, skipped rows, manifest, checksums; publish.
    new_ids = (pool.path / "ids.txt").read_text(encoding="utf-8").split("\n")[:-1]
    new_shards = []
    for (start, end), shard_dir in zip(bounds, shard_dirs):
        atomic_write_text(shard_dir / ds.IDS, "".join(i + "\n" for i in new_ids[start:end]))
        new_shards.append(
            ShardRecord(
                name=str(shard_dir.relative_to(staging)),
                start=base.n + start,
                n=end - start,
                ids_sha256=sha256_file(shard_dir / ds.IDS),
            )
        )
    del new_ids
    base_skipped = base.path / ds.SKIPPED
    skipped = base_skipped.read_text(encoding="utf-8") if base_skipped.is_file() else ""
    skipped += (pool.path / "skipped.jsonl").read_text(encoding="utf-8")
    atomic_write_text(staging / ds.SKIPPED, skipped)
    t0 = time.monotonic()
    metadata = _append_metadata(staging, base, pool)
    timings["metadata_s"] = time.monotonic() - t0
    shards = (*old_shards, *new_shards)
    timings["total_s"] = time.monotonic() - t_start
    manifest = m.model_copy(
        update={
            "format_version": FORMAT_VERSION,
            "version": version,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "code_version": less_core.__version__,
            "index": IndexInfo(
                file=index_file,
                factory=m.build.index_factory,
                metric="inner_product",
                over="concatenated checkpoint features, in manifest order, per shard",
            ),
            "n": base.n + pool.n,
            "shards": shards,
            "n_skipped": m.n_skipped + pool.n_skipped,
            "appended": (
                *m.appended,
                AppendedInfo(
                    file=req.pool_path.name,
                    sha256=rows_sha,
                    base_version=base.version,
                    start=base.n,
                    n=pool.n,
                    n_skipped=pool.n_skipped,
                ),
            ),
            "ids_sha256": ids_digest([staging / s.name / ds.IDS for s in shards]),
            "metadata": metadata,
            "device": str(device),
            "host": HostInfo(python=platform.python_version(), torch=torch.__version__),
            "timings": {k: round(v, 3) for k, v in timings.items()},
        }
    )
    manifest = Manifest.model_validate(
        manifest.model_dump(mode="json")
    )  # re-validated, shards checked
    manifest.check_shards(staging / ds.MANIFEST)
    shutil.rmtree(staging / "tokens")
    shutil.rmtree(staging / "progress")
    manifest.save(staging / ds.MANIFEST)
    _write_checksums(staging, known)
    if req.version is None and ds.current_version(root) != base.version:
        raise LessError(
            f"CURRENT of {root} moved from {base.version} to {ds.current_version(root)} while "
            f"appending; version {version} was not published. Rerun with --version "
            f"{base.version} to publish it anyway (it resumes), or append onto the new CURRENT"
        )
    published = ds.publish(staging, root, version)
    log.info(
        "published datastore %s (%d rows: %d from %s + %d appended, %d skipped)",
        published,
        manifest.n,
        base.n,
        base.version,
        pool.n,
        pool.n_skipped,
    )
    return published
