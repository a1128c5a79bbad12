"""The datastore manifest as a typed model: what a version holds and how to query it.

Every reader (query engine, service registry, ``less-index info``/``verify``, benches) goes
through ``Manifest``, never through dict keys. Loading validates the whole file: a manifest that
is valid JSON but lacks a field, or carries one of the wrong type, is refused with the field
named, so a broken datastore fails when it is opened rather than on its first request.

Format history (``format_version``):
    1 — one shard at the version's root: ``features/<name>.npy``, ``ids.txt``, an optional
        FAISS index over the concatenated checkpoints; adapters, checksums.
    2 — rows in shards (``shards/<name>/ids.txt``, ``shards/<name>/features/<ckpt>.npy``,
        ``shards/<name>/index.faiss`` for approximate indexes), listed in ``shards`` with their
        first row. A format-1 manifest is read as one shard rooted at the version directory.
        Optional ``appended`` (default empty, so older manifests read unchanged): the row files
        ``less-index append`` added after the build, in order; ``pool`` stays the built pool.
        Optional ``metadata`` (default None: versions built before it): the pool metadata
        fields stored in ``metadata/`` (``indexer.pool_metadata``), with their kinds.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from indexer.config import BuildConfig
from indexer.fsutil import atomic_write_text
from less_core.config import AdamFeatureConfig, LoraSettings, ProjectionConfig, TokenizationConfig
from less_core.errors import CheckpointNotFoundError, IntegrityError
from less_core.projectors import ModuleLayout
from less_core.scoring import checkpoint_weights
from less_wire import describe_validation_errors

FORMAT_VERSION = 2
"""The format this code writes; ``SUPPORTED_FORMATS`` lists what it reads."""
SUPPORTED_FORMATS = (1, 2)


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelInfo(_Part):
    """The base model the features were computed with."""

    id: str = Field(description="Human-readable model id.")
    sha256: str = Field(description="Fingerprint of the model's weights and config.")


class CheckpointRecord(_Part):
    """One warmup checkpoint the datastore holds features for."""

    name: str
    step: int | None
    lr: float = Field(description="Learning rate η_c in force at this checkpoint.")
    lr_source: str = Field(description="Where lr came from (trainer log, scheduler, override).")
    weight: float = Field(description="w_c = η_c / Σ η: the checkpoint's share of the score.")
    adapter_sha256: str
    optimizer_file: str
    optimizer_sha256: str


class FeaturesInfo(_Part):
    """How the stored features were made."""

    train_kind: Literal["adam"]
    target_kind: Literal["sgd"]
    adam: AdamFeatureConfig
    dtype: Literal["float16", "float32"]
    dim: int = Field(ge=1)
    normalized: Literal["l2"]


class IndexInfo(_Part):
    """The search index: exact over the stored features, or an approximate FAISS factory."""

    file: str | None = Field(description="Index file name inside each shard (None: exact).")
    factory: str
    metric: Literal["inner_product"]
    over: str


class ShardRecord(_Part):
    """A contiguous block of rows with its own ids, features and (optional) index file."""

    name: str = Field(description="Directory of the shard, relative to the version ('' = root).")
    start: int = Field(ge=0, description="Global row of the shard's first row.")
    n: int = Field(ge=1)
    ids_sha256: str


class PoolInfo(_Part):
    """The pool file the datastore was built from."""

    file: str
    sha256: str


class AppendedInfo(_Part):
    """Rows added to a version by ``less-index append`` (a new version; old shards reused)."""

    file: str = Field(description="Name of the appended JSONL file.")
    sha256: str
    base_version: str = Field(description="The version the rows were appended to.")
    start: int = Field(ge=0, description="Global row of the first appended row.")
    n: int = Field(ge=1, description="Rows indexed from the file.")
    n_skipped: int = Field(ge=0, description="Rows of the file left out (see skipped.jsonl).")


class MetadataField(_Part):
    """A pool metadata field stored with the version (filterable, shown in explanations)."""

    name: str
    kind: Literal["string", "int", "float", "bool"]


class MetadataInfo(_Part):
    """What ``metadata/`` holds: the pool's scalar fields (besides the per-row token count,
    always there) and whether each row has a preview of its text."""

    fields: tuple[MetadataField, ...] = Field(description="Stored fields, first seen first.")
    has_previews: bool


class HostInfo(_Part):
    """Versions on the machine that built it (for humans and bug reports)."""

    python: str
    torch: str


class Manifest(_Part):
    """``manifest.json`` of a datastore version."""

    format_version: int
    version: str
    created_at: str
    code_version: str
    model: ModelInfo
    lora: LoraSettings
    layout: ModuleLayout = Field(description="LoRA parameters in gradient order, with sizes.")
    checkpoints: tuple[CheckpointRecord, ...] = Field(min_length=1)
    projector: ProjectionConfig
    features: FeaturesInfo
    tokenization: TokenizationConfig
    build: BuildConfig
    index: IndexInfo
    n: int = Field(ge=1, description="Indexed rows.")
    shards: tuple[ShardRecord, ...] = Field(min_length=1, description="Row shards, in row order.")
    n_skipped: int = Field(ge=0, description="Pool rows left out (see skipped.jsonl).")
    pool: PoolInfo
    appended: tuple[AppendedInfo, ...] = Field(
        default=(), description="Row files appended after the build, in row order."
    )
    ids_sha256: str
    metadata: MetadataInfo | None = Field(
        default=None, description="Pool metadata in metadata/ (None: the version has none)."
    )
    device: str
    host: HostInfo
    timings: dict[str, float]

    @classmethod
    def load(cls, path: Path) -> Manifest:
        """Reads and validates a manifest.

        Raises:
            IntegrityError: unreadable JSON, an unsupported format version, or missing or
                mistyped fields (all named in the message).
        """
        try:
            data: Any = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise IntegrityError(f"{path}: unreadable manifest ({exc})") from None
        version = data.get("format_version") if isinstance(data, dict) else None
        if version not in SUPPORTED_FORMATS:
            raise IntegrityError(
                f"{path}: unsupported datastore format {version!r} "
                f"(this code reads {list(SUPPORTED_FORMATS)})"
            )
        if version == 1:
            data = _from_format_1(data)
        try:
            manifest = cls.model_validate(data)
        except ValidationError as exc:
            problems = describe_validation_errors(exc.errors(), skip_locations=())
            raise IntegrityError(f"{path}: invalid manifest: {problems}") from None
        manifest.check_shards(path)
        return manifest

    def check_shards(self, where: Path | str = "manifest") -> None:
        """Shards must tile rows [0, n) in order.

        Raises:
            IntegrityError: a gap, an overlap or a total that is not ``n``.
        """
        start = 0
        for shard in self.shards:
            if shard.start != start:
                raise IntegrityError(
                    f"{where}: shard {shard.name!r} starts at row {shard.start}, expected {start}"
                )
            start += shard.n
        if start != self.n:
            raise IntegrityError(f"{where}: shards hold {start} rows, manifest says n={self.n}")

    def save(self, path: Path) -> None:
        """Writes the manifest atomically, keys sorted, as JSON."""
        text = json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
        atomic_write_text(path, text)

    @property
    def checkpoint_names(self) -> list[str]:
        return [c.name for c in self.checkpoints]

    def weights(self, checkpoints: list[str] | None = None) -> tuple[list[str], np.ndarray]:
        """Chosen checkpoints (all by default) and their lr weights renormalised over them.

        Raises:
            CheckpointNotFoundError: an unknown or repeated checkpoint name.
        """
        names = checkpoints or self.checkpoint_names
        lrs = {c.name: c.lr for c in self.checkpoints}
        missing = [c for c in names if c not in lrs]
        if missing:
            raise CheckpointNotFoundError(
                f"unknown checkpoint(s) {missing}; have {self.checkpoint_names}"
            )
        if len(set(names)) != len(names):
            raise CheckpointNotFoundError(f"checkpoint listed twice in {names}")
        return list(names), checkpoint_weights([lrs[c] for c in names])


def ids_digest(ids_files: list[Path]) -> str:
    """sha256 of the version's ids, one per line in row order (shard files concatenated)."""
    digest = hashlib.sha256()
    for path in ids_files:
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _from_format_1(data: dict[str, Any]) -> dict[str, Any]:
    """A format-1 manifest in format-2 shape: one shard rooted at the version directory."""
    n = data.get("n")
    upgraded = dict(data)
    upgraded["format_version"] = 1  # kept: it says which layout the files are in
    upgraded["shards"] = [
        {"name": "", "start": 0, "n": n, "ids_sha256": data.get("ids_sha256", "")}
    ]
    return upgraded
