"""The on-disk datastore (SPEC §3): versioned directories published atomically.

    <root>/CURRENT                    name of the published version (replaced atomically)
    <root>/versions/<version>/
        manifest.json                 everything needed to query it and to check a query fits
        shards/<shard>/               rows [start, start + n) of the pool, in pool order:
            ids.txt                   row -> training example id, one per line
            features/<checkpoint>.npy (n, P) L2-normalized features, float16/32, memory-mappable
            index.faiss               approximate inner-product index (only if one was asked for)
        adapters/<checkpoint>/        LoRA weights, so a service needs only the base model
        metadata/                     pool metadata columns, token counts, previews
                                      (``indexer.pool_metadata``; absent in older versions)
        skipped.jsonl                 pool examples not indexed, with the reason
        checksums.json                sha256 of every file above
    <root>/.staging/<build-key>/      a build in progress (resumable), renamed into versions/

A published version is never modified, so a new version may hard-link a previous version's
shard files (``append``) and readers may memory-map them from shared storage. Format-1
versions keep their single shard's files at the version root; they open the same way.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from indexer.fsutil import atomic_write_text, fsync_dir, fsync_tree, sha256_file
from indexer.manifest import Manifest, ShardRecord
from indexer.pool_metadata import PoolMetadata
from less_core.errors import CheckpointNotFoundError, IndexNotFoundError, IntegrityError

SHARDS_DIR = "shards"
MANIFEST = "manifest.json"
IDS = "ids.txt"
CHECKSUMS = "checksums.json"
INDEX = "index.faiss"
SKIPPED = "skipped.jsonl"
FEATURES_DIR = "features"


def feature_file(checkpoint: str) -> str:
    """Path of a checkpoint's features inside a shard directory."""
    return f"{FEATURES_DIR}/{checkpoint}.npy"


def shard_name(index: int) -> str:
    """Directory of the ``index``-th shard of a version, relative to the version."""
    return f"{SHARDS_DIR}/{index:05d}"


def shard_bounds(n: int, shard_rows: int | None) -> list[tuple[int, int]]:
    """Contiguous [start, end) row ranges of ``shard_rows`` rows each (one range if None)."""
    size = n if shard_rows is None else shard_rows
    return [(start, min(n, start + size)) for start in range(0, n, size)]


class ShardedRows:
    """Rows of one checkpoint's features across shards, read like one (N, P) array.

    Supports ``shape``, ``dtype``, ``len`` and indexing by a slice, an int or an array of rows
    (each read from its shard's memmap); for reading rows (verify, tests, benches), not for
    search, which walks the shards itself.
    """

    def __init__(self, parts: list[np.ndarray], starts: list[int]):
        self.parts, self.starts = parts, np.asarray(starts + [starts[-1] + len(parts[-1])])
        self.shape = (int(self.starts[-1]), int(parts[0].shape[1]))
        self.dtype = parts[0].dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: int | slice | np.ndarray | list[int]) -> np.ndarray:
        if isinstance(rows, slice):
            rows = np.arange(*rows.indices(self.shape[0]))
        scalar = np.ndim(rows) == 0
        wanted = np.atleast_1d(np.asarray(rows, dtype=np.int64))
        out = np.empty((len(wanted), self.shape[1]), dtype=self.dtype)
        which = np.searchsorted(self.starts, wanted, side="right") - 1
        for s in np.unique(which):
            mask = which == s
            out[mask] = self.parts[s][wanted[mask] - self.starts[s]]
        return out[0] if scalar else out


def write_checksums(version_dir: Path) -> dict[str, str]:
    sums = {
        str(p.relative_to(version_dir)): sha256_file(p)
        for p in sorted(version_dir.rglob("*"))
        if p.is_file() and p.name != CHECKSUMS
    }
    (version_dir / CHECKSUMS).write_text(json.dumps(sums, indent=2, sort_keys=True) + "\n")
    return sums


def publish(staged_dir: Path, root: Path, version: str) -> Path:
    """fsync a finished staging directory, rename it into ``versions/`` and point CURRENT at it."""
    versions = root / "versions"
    versions.mkdir(parents=True, exist_ok=True)
    target = versions / version
    fsync_tree(staged_dir)
    if target.exists():
        # Same build key -> same inputs and config -> same content; keep the published one.
        shutil.rmtree(staged_dir)
    else:
        staged_dir.rename(target)
        fsync_dir(versions)
    staging_root = staged_dir.parent
    if (
        staging_root.name == ".staging"
        and staging_root.is_dir()
        and not any(staging_root.iterdir())
    ):
        staging_root.rmdir()
    publish_pointer(root, version)
    return target


def publish_pointer(root: Path, version: str) -> None:
    """Atomically point ``CURRENT`` at a published version."""
    atomic_write_text(root / "CURRENT", version + "\n")


def current_version(root: Path) -> str:
    pointer = root / "CURRENT"
    if not pointer.is_file():
        raise IndexNotFoundError(f"no published datastore at {root} (missing CURRENT)")
    return pointer.read_text().strip()


@dataclass
class Datastore:
    """A published datastore version, opened read-only with memory-mapped features."""

    root: Path
    version: str
    manifest: Manifest

    @classmethod
    def open(cls, root: str | Path, version: str | None = None) -> Datastore:
        """Opens a published version (``CURRENT`` by default), validating its manifest.

        Raises:
            IndexNotFoundError: no such datastore or version.
            IntegrityError: the manifest is unreadable or invalid.
        """
        root = Path(root)
        version = version or current_version(root)
        path = root / "versions" / version / MANIFEST
        if not path.is_file():
            raise IndexNotFoundError(f"datastore version {version!r} not found under {root}")
        return cls(root, version, Manifest.load(path))

    @property
    def path(self) -> Path:
        return self.root / "versions" / self.version

    @property
    def n(self) -> int:
        return self.manifest.n

    @property
    def checkpoint_names(self) -> list[str]:
        return self.manifest.checkpoint_names

    @property
    def shards(self) -> tuple[ShardRecord, ...]:
        return self.manifest.shards

    def shard_dir(self, shard: ShardRecord) -> Path:
        return self.path / shard.name if shard.name else self.path

    @cached_property
    def ids(self) -> list[str]:
        """Row -> training example id, over all shards in row order."""
        ids: list[str] = []
        for shard in self.shards:
            part = (self.shard_dir(shard) / IDS).read_text(encoding="utf-8").split("\n")[:-1]
            if len(part) != shard.n:
                raise IntegrityError(
                    f"{shard.name or '.'}/{IDS} has {len(part)} rows, manifest says {shard.n}"
                )
            ids.extend(part)
        return ids

    @cached_property
    def metadata(self) -> PoolMetadata | None:
        """The version's pool metadata (fields, token counts, previews), memory-mapped; None
        for versions built before it was stored.

        Raises:
            IntegrityError: ``metadata/`` is unreadable or does not have the version's rows.
        """
        meta = PoolMetadata.open(self.path)
        if meta is not None and meta.n != self.n:
            raise IntegrityError(
                f"{meta.path}: pool metadata has {meta.n} rows, manifest says {self.n}"
            )
        return meta

    def shard_features(self, checkpoint: str) -> list[np.ndarray]:
        """Per shard, the (n_shard, P) memory-mapped features of one checkpoint.

        Copy-on-write: a write changes only this process's pages, never the published file,
        and the pages are writable so they become tensors without a copy.
        """
        if checkpoint not in self.checkpoint_names:
            raise CheckpointNotFoundError(
                f"unknown checkpoint {checkpoint!r}; have {self.checkpoint_names}"
            )
        return [
            np.load(self.shard_dir(s) / feature_file(checkpoint), mmap_mode="c")
            for s in self.shards
        ]

    def features(self, checkpoint: str) -> np.ndarray | ShardedRows:
        """(N, P) features of one checkpoint: the memmap itself when there is one shard."""
        parts = self.shard_features(checkpoint)
        if len(parts) == 1:
            return parts[0]
        return ShardedRows(parts, [s.start for s in self.shards])

    def index_path(self, shard: ShardRecord) -> Path | None:
        """The shard's approximate FAISS index file, or None for exact search."""
        name = self.manifest.index.file
        return None if name is None else self.shard_dir(shard) / name

    def verify_checksums(self) -> list[str]:
        """Names of files whose sha256 differs from ``checksums.json`` (empty if all match)."""
        sums = json.loads((self.path / CHECKSUMS).read_text())
        bad = [
            name
            for name, digest in sums.items()
            if not (self.path / name).is_file() or sha256_file(self.path / name) != digest
        ]
        return sorted(bad)


@dataclass(frozen=True)
class StorageSizes:
    """Bytes a version takes on disk, and what a process serving it keeps resident."""

    feature_bytes: int
    index_bytes: int
    total_bytes: int
    ids_bytes: int

    @property
    def expected_ram_bytes(self) -> int:
        """Resident memory beyond the page cache: the id list (as Python strings, about
        IDS_RAM_FACTOR × its file size) and any approximate index (faiss reads it into RAM)."""
        return IDS_RAM_FACTOR * self.ids_bytes + self.index_bytes


IDS_RAM_FACTOR = 8
"""A short id string costs ~60-70 bytes as a Python str in a list vs ~8-12 bytes on disk."""


def index_sizes(store: Datastore) -> StorageSizes:
    """Sizes of a version's features, index files and ids, summed over shards."""
    features = index = ids = 0
    for shard in store.shards:
        shard_dir = store.shard_dir(shard)
        features += sum(
            (shard_dir / feature_file(n)).stat().st_size for n in store.checkpoint_names
        )
        ids += (shard_dir / IDS).stat().st_size
        path = store.index_path(shard)
        if path is not None and path.is_file():
            index += path.stat().st_size
    total = sum(p.stat().st_size for p in store.path.rglob("*") if p.is_file())
    return StorageSizes(features, index, total, ids)
