"""Fetch the BIG-bench task files: resolve the ``bigbench`` sdist, check its sha256, extract.

The ``bigbench`` sdist on the package index (Apache-2.0) carries about 1,000 ``task.json``
files. We fetch the sdist once and keep only those files, at
``<cache>/bigbench_tasks/<task>[/<subtask>]/task.json``.

Why not ``pip download``: pip prepares the metadata of every sdist it downloads, and the
``bigbench`` sdist declares a ``file://`` direct-URL dependency (bleurt) that pip then
refuses ("Distributions from PyPI cannot declare direct URL dependencies"), so
``pip download --no-deps --no-binary :all: bigbench==1.0.0`` fails after fetching. We
therefore resolve the file through the package index's simple API (PEP 691 JSON, or
PEP 503 HTML; the index pip is configured with unless told otherwise), download it and
check its sha256 against the index and a pinned value. Nothing is built or executed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path, PurePosixPath

from demo.sources._common import (
    SourceError,
    discard_dir,
    local_file,
    pinned_sha256,
    publish_dir,
    staging_dir,
)
from demo.sources.package_index import default_index_url, resolve_on_index
from indexer.fsutil import atomic_write_json
from less_core.errors import IntegrityError

logger = logging.getLogger(__name__)

BIGBENCH_PROJECT = "bigbench"
BIGBENCH_VERSION = "1.0.0"
BIGBENCH_SDIST = f"bigbench-{BIGBENCH_VERSION}.tar.gz"
#: sha256 of ``bigbench-1.0.0.tar.gz`` as published on the package index (358,249,635 bytes).
BIGBENCH_SDIST_SHA256 = "1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2"
TASKS_DIRNAME = "bigbench_tasks"
#: Written last into the tasks directory: its presence means a complete extraction.
TASKS_MARKER = "_source.json"
DOWNLOAD_TIMEOUT_S = 180
_SAFE_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


def fetch_bigbench_sdist(
    cache_dir: Path,
    *,
    force: bool = False,
    sdist: Path | None = None,
    index_url: str | None = None,
    keep_sdist: bool = False,
    expected_sha256: str | None = BIGBENCH_SDIST_SHA256,
) -> Path:
    """Fetch the ``bigbench`` sdist once and extract only its ``task.json`` files.

    Files land at ``cache_dir/bigbench_tasks/<task>/task.json`` and
    ``cache_dir/bigbench_tasks/<task>/<subtask>/task.json``; a ``_source.json`` marker
    (sdist name, sha256, file count) is written last and the directory is published by
    rename, so an existing marker means a complete extraction. Nothing in the sdist is
    built or executed.

    Args:
        cache_dir: Cache root; created if missing.
        force: Re-download and re-extract even if the tasks directory is complete.
        sdist: Use this local ``bigbench-1.0.0.tar.gz`` instead of downloading (offline).
        index_url: Simple-API index to resolve the sdist on; defaults to the one pip is
            configured with (see :func:`~demo.sources.package_index.default_index_url`).
        keep_sdist: Keep the downloaded tarball in ``cache_dir`` (it is 358 MB).
        expected_sha256: Required sha256 of the sdist; ``None`` skips the pin (the index's
            own hash is still checked when it gives one).

    Returns:
        The tasks directory.

    Raises:
        ConfigError: ``sdist`` is given but is not a file.
        SourceError: The sdist cannot be resolved or downloaded, or holds no task files.
        IntegrityError: The sdist's sha256 differs from the index's or the pinned one.
    """
    cache_dir = Path(cache_dir)
    tasks_dir = cache_dir / TASKS_DIRNAME
    if not force and (tasks_dir / TASKS_MARKER).is_file():
        logger.info("BIG-bench task files already extracted at %s", tasks_dir)
        return tasks_dir
    sdist = local_file(sdist, "sdist")
    cache_dir.mkdir(parents=True, exist_ok=True)
    downloaded: Path | None = None
    if sdist is None:
        kept = cache_dir / BIGBENCH_SDIST
        if kept.is_file():
            sdist = kept
        else:
            downloaded = sdist = _download_sdist(
                cache_dir,
                index_url or default_index_url(),
                expected_sha256,
                keep=keep_sdist,
            )
    sdist_sha = pinned_sha256(sdist, expected_sha256)
    staged = staging_dir(tasks_dir)
    try:
        started = time.perf_counter()
        n_files, n_bytes = _extract_task_jsons(sdist, staged)
        if n_files == 0:
            raise SourceError(f"{sdist} holds no bigbench/benchmark_tasks/**/task.json files")
        atomic_write_json(
            staged / TASKS_MARKER,
            {
                "sdist": BIGBENCH_SDIST if downloaded else sdist.name,
                "sha256": sdist_sha,
                "task_json_files": n_files,
                "bytes": n_bytes,
            },
        )
        publish_dir(staged, tasks_dir)
    except BaseException:
        discard_dir(staged)
        raise
    finally:
        if downloaded is not None and not keep_sdist:
            downloaded.unlink(missing_ok=True)
    logger.info(
        "extracted %d task.json files (%.0f MB) in %.1f s to %s",
        n_files,
        n_bytes / 1e6,
        time.perf_counter() - started,
        tasks_dir,
    )
    return tasks_dir


def _download_sdist(cache_dir: Path, index_url: str, pinned: str | None, *, keep: bool) -> Path:
    """Resolve :data:`BIGBENCH_SDIST` on ``index_url`` and download it, checking sha256."""
    url, index_sha = resolve_on_index(index_url, BIGBENCH_PROJECT, BIGBENCH_SDIST)
    target = cache_dir / BIGBENCH_SDIST if keep else None
    fd, tmp_name = tempfile.mkstemp(prefix=f".{BIGBENCH_SDIST}.", suffix=".part", dir=cache_dir)
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    logger.info("downloading %s", url)
    started = time.perf_counter()
    try:
        with (
            os.fdopen(fd, "wb") as out,
            urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as resp,
        ):
            while chunk := resp.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise SourceError(f"download of {url} failed: {exc}") from exc
    got = digest.hexdigest()
    for name, want in (("index", index_sha), ("pinned", pinned)):
        if want is not None and got != want:
            tmp.unlink(missing_ok=True)
            raise IntegrityError(f"{BIGBENCH_SDIST}: sha256 {got} != {name} sha256 {want}")
    logger.info(
        "downloaded %.0f MB in %.1f s", tmp.stat().st_size / 1e6, time.perf_counter() - started
    )
    if target is None:
        return tmp
    os.replace(tmp, target)
    return target


def _task_json_relpath(member_name: str) -> PurePosixPath | None:
    """``<top>/bigbench/benchmark_tasks/<task>[/<sub>]/task.json`` → ``<task>[/<sub>]/task.json``.

    Anything else (other files, deeper paths, odd or ``..`` components) maps to None.
    """
    parts = PurePosixPath(member_name).parts
    for i in range(1, len(parts)):
        if parts[i] == "benchmark_tasks" and parts[i - 1] == "bigbench":
            rest = parts[i + 1 :]
            if (
                2 <= len(rest) <= 3
                and rest[-1] == "task.json"
                and all(_SAFE_PART.match(p) for p in rest)
            ):
                return PurePosixPath(*rest)
            return None
    return None


def _extract_task_jsons(sdist: Path, dest: Path) -> tuple[int, int]:
    """Stream ``sdist`` once, writing its task.json files under ``dest``; (files, bytes)."""
    n_files = n_bytes = 0
    try:
        with tarfile.open(sdist, mode="r|gz") as tar:
            for member in tar:
                rel = _task_json_relpath(member.name) if member.isfile() else None
                if rel is None:
                    continue
                src = tar.extractfile(member)
                if src is None:
                    continue
                out = dest.joinpath(*rel.parts)
                out.parent.mkdir(parents=True, exist_ok=True)
                with out.open("wb") as handle:
                    while chunk := src.read(1 << 20):
                        handle.write(chunk)
                n_files += 1
                n_bytes += member.size
    except (tarfile.TarError, EOFError) as exc:
        raise SourceError(f"{sdist} is not a readable .tar.gz: {exc}") from exc
    return n_files, n_bytes
