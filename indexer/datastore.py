"""The on-disk datastore (SPEC §3): versioned directories published atomically.

    <root>/CURRENT                    name of the published version (replaced atomically)
    <root>/versions/<version>/
        manifest.json                 everything needed to query it and to check a query fits
        ids.txt                       row -> training example id, one per line
        features/<checkpoint>.npy     (N, P) L2-normalized features, float16/32, memory-mappable
        index.faiss                   inner-product index over the concatenated features
        skipped.jsonl                 pool examples not indexed, with the reason
        checksums.json                sha256 of every file above
    <root>/.staging/<build-key>/      a build in progress (resumable), renamed into versions/

A published version is never modified.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from indexer.fsutil import atomic_write_text, fsync_dir, fsync_tree, sha256_file
from indexer.manifest import Manifest
from less_core.errors import CheckpointNotFoundError, IndexNotFoundError, IntegrityError

MANIFEST = "manifest.json"
IDS = "ids.txt"
CHECKSUMS = "checksums.json"
INDEX = "index.faiss"
SKIPPED = "skipped.jsonl"
FEATURES_DIR = "features"


def feature_file(checkpoint: str) -> str:
    return f"{FEATURES_DIR}/{checkpoint}.npy"


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

    @cached_property
    def ids(self) -> list[str]:
        ids = (self.path / IDS).read_text(encoding="utf-8").split("\n")[:-1]
        if len(ids) != self.n:
            raise IntegrityError(f"{IDS} has {len(ids)} rows, manifest says {self.n}")
        return ids

    def features(self, checkpoint: str) -> np.ndarray:
        """(N, P) memory-mapped features of one checkpoint.

        Copy-on-write: a write changes only this process's pages, never the published file,
        and the pages are writable so they become tensors without a copy.
        """
        if checkpoint not in self.checkpoint_names:
            raise CheckpointNotFoundError(
                f"unknown checkpoint {checkpoint!r}; have {self.checkpoint_names}"
            )
        return np.load(self.path / feature_file(checkpoint), mmap_mode="c")

    def verify_checksums(self) -> list[str]:
        """Names of files whose sha256 differs from ``checksums.json`` (empty if all match)."""
        sums = json.loads((self.path / CHECKSUMS).read_text())
        bad = [
            name
            for name, digest in sums.items()
            if not (self.path / name).is_file() or sha256_file(self.path / name) != digest
        ]
        return sorted(bad)
