"""Deterministic pool / targets / eval splits of BIG-bench-format tasks, as chat-format JSONL.

The task folders are BIG-bench's own or the OpenAI evals registry converted to that format
(:mod:`demo.sources.choice`); both are read the same way.

:func:`build_bigbench_splits` writes, into one directory published by rename:

* ``pool.jsonl`` — the instruction pool D mixed from many tasks;
* ``pool_without_targets.jsonl`` — the same pool minus every target task's rows (the
  "target task absent from the pool" setting);
* ``targets/<task>.jsonl`` — a handful of few-shot target examples per target task;
* ``eval/<task>.jsonl`` — held-out examples of each target task to measure loss on;
* ``splits.json`` — the request (config and source), counts per task and every file's sha256.

Each row is ``{"id": "bb/<task>/<n>", "task": <task>, "messages": [user, assistant]}``
(target and eval rows add ``"subtask": <task>``). A target task's examples are split
disjointly: targets and eval rows never appear in any pool. Every random choice is seeded
by (``seed``, a label), so the same task files and config give byte-identical output.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from demo.sources._common import discard_dir, publish_dir, staging_dir
from demo.sources.config import BigBenchConfig
from demo.sources.fetch import TASKS_MARKER
from demo.sources.tasks import (
    EXCLUDED_KEYWORDS,
    TaskData,
    TaskExample,
    iter_tasks,
    list_task_dirs,
    load_tasks,
    task_info,
)
from indexer.fsutil import atomic_write_json, sha256_file
from less_core.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

#: Bumped when the files' layout or row format changes, so old builds are not reused.
SPLITS_FORMAT_VERSION = 1


@dataclass(frozen=True)
class SplitsSummary:
    """What :func:`build_bigbench_splits` wrote (mirrors ``splits.json``)."""

    out_dir: Path
    pool_tasks: tuple[str, ...]
    target_tasks: tuple[str, ...]
    counts: dict[str, dict[str, int]]
    n_pool: int
    n_pool_without_targets: int | None
    files: dict[str, str]
    skipped_tasks: dict[str, str]
    cached: bool = False


def _rng(seed: int, label: str) -> random.Random:
    """A generator for one choice, seeded from (seed, label).

    One generator per label (a task name, "pool-tasks"), so adding or dropping a task never
    shifts the draws made for another one.
    """
    digest = hashlib.sha256(f"{seed}:{label}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _pool_share(data: TaskData, config: BigBenchConfig) -> list[TaskExample]:
    """A non-target task's pool rows: ``per_task_pool`` examples drawn with (seed, task)."""
    examples = list(data.examples)
    _rng(config.seed, data.name).shuffle(examples)
    return sorted(examples[: config.per_task_pool], key=lambda e: e.n)


def _pick_pool_tasks(
    tasks_dir: Path, config: BigBenchConfig, skipped: dict[str, str]
) -> tuple[list[str], dict[str, list[TaskExample]], dict[str, int]]:
    """Choose the non-target pool tasks; returns (names, their pool rows, usable counts)."""
    shares: dict[str, list[TaskExample]] = {}
    usable: dict[str, int] = {}
    if config.pool_tasks is not None:
        loaded, bad = load_tasks(tasks_dir, config, config.pool_tasks)
        if bad:
            raise ConfigError(f"pool tasks unusable: {bad}")
        empty = sorted(n for n, d in loaded.items() if not d.examples)
        if empty:
            raise ConfigError(f"pool tasks with no example under max_chars: {empty}")
        for name, data in loaded.items():
            shares[name], usable[name] = _pool_share(data, config), len(data.examples)
        return sorted(loaded), shares, usable
    others = [p.name for p in list_task_dirs(tasks_dir) if p.name not in config.target_tasks]
    for name, data, why in iter_tasks(tasks_dir, config, others, skip_keywords=EXCLUDED_KEYWORDS):
        if data is None:
            skipped[name] = why
            continue
        info = task_info(data, config)
        if info.eligible:  # keep just the rows it would give, not all its examples
            shares[name], usable[name] = _pool_share(data, config), len(data.examples)
        else:
            logger.debug("not auto-picking %s: %s", name, info.reason)
    eligible = sorted(shares)
    if len(eligible) < config.n_pool_tasks:
        logger.warning(
            "only %d eligible pool tasks (< n_pool_tasks %d); using all",
            len(eligible),
            config.n_pool_tasks,
        )
    picked = sorted(
        _rng(config.seed, "pool-tasks").sample(eligible, min(config.n_pool_tasks, len(eligible)))
    )
    logger.info("auto-picked %d pool tasks of %d eligible", len(picked), len(eligible))
    return picked, shares, usable


def _write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False, sort_keys=False) + "\n")


def _source_fingerprint(tasks_dir: Path) -> dict[str, Any]:
    """The source file (name, sha256) the task folders came from, plus the converter's
    version for converted sources (the OpenAI evals registry), so changing the conversion
    rebuilds the splits; BIG-bench's marker has none, which keeps its requests unchanged."""
    marker = tasks_dir / TASKS_MARKER
    if marker.is_file():
        info = json.loads(marker.read_text(encoding="utf-8"))
        found = {"sdist": info.get("sdist"), "sha256": info.get("sha256")}
        if "converter" in info:
            found["converter"] = info["converter"]
        return found
    return {"sdist": None, "sha256": None}


def _existing_build(out_dir: Path, request: dict[str, Any]) -> SplitsSummary | str | None:
    """Inspect ``out_dir``: None if absent or empty, the summary of an intact build of the
    same request, "stale" for the same request with changed files, "other" otherwise."""
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return None
    try:
        meta = json.loads((out_dir / "splits.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return "other"
    if meta.get("request") != request:
        return "other"
    for rel, digest in meta.get("files", {}).items():
        path = out_dir / rel
        if not path.is_file() or sha256_file(path) != digest:
            logger.warning("%s changed since it was built; rebuilding", path)
            return "stale"
    return _summary_from_meta(out_dir, meta, cached=True)


def _summary_from_meta(out_dir: Path, meta: dict[str, Any], *, cached: bool) -> SplitsSummary:
    return SplitsSummary(
        out_dir=out_dir,
        pool_tasks=tuple(meta["pool_tasks"]),
        target_tasks=tuple(meta["target_tasks"]),
        counts=meta["counts"],
        n_pool=meta["n_pool"],
        n_pool_without_targets=meta["n_pool_without_targets"],
        files=meta["files"],
        skipped_tasks=meta["skipped_tasks"],
        cached=cached,
    )


def build_bigbench_splits(
    tasks_dir: Path,
    out_dir: Path,
    config: BigBenchConfig | None = None,
    *,
    exclude_target_tasks_from_pool: bool = True,
    force: bool = False,
) -> SplitsSummary:
    """Build pool / targets / eval JSONL files from extracted BIG-bench tasks.

    Every target task's usable examples are shuffled (seeded by ``seed`` and the task
    name) and cut into ``n_targets_per_task`` targets, ``n_eval_per_task`` eval rows and
    up to ``per_task_pool`` pool rows, disjointly. Every pool task contributes up to
    ``per_task_pool`` examples sampled the same way. Rows are sorted by (task, n), files
    are written to a staging directory and published by rename; the same inputs and
    config give byte-identical files. If ``out_dir`` already holds a build of the same
    request whose files match their checksums, it is returned untouched.

    Args:
        tasks_dir: Directory from :func:`fetch_bigbench_sdist` (``<task>/[<sub>/]task.json``).
        out_dir: Where to publish the splits.
        config: Split settings; defaults to :class:`BigBenchConfig()`.
        exclude_target_tasks_from_pool: Also write ``pool_without_targets.jsonl``, the pool
            minus every target task's rows, for the "target task absent" setting.
        force: Replace an ``out_dir`` built from a different request (otherwise an error).

    Returns:
        What was written (``cached=True`` when an identical build was already there).

    Raises:
        ConfigError: A target / pool task is missing or has too few usable examples, or
            ``out_dir`` holds something else than a build of this request and ``force``
            is false (a build of this request whose files changed is simply rebuilt).
    """
    config = config or BigBenchConfig()
    tasks_dir, out_dir = Path(tasks_dir), Path(out_dir)
    request = {
        "format_version": SPLITS_FORMAT_VERSION,
        "config": config.to_json(),
        "exclude_target_tasks_from_pool": exclude_target_tasks_from_pool,
        "source": _source_fingerprint(tasks_dir),
    }
    existing = _existing_build(out_dir, request)
    if isinstance(existing, SplitsSummary):
        logger.info("splits at %s are up to date", out_dir)
        return existing
    if existing == "other" and not force:
        raise ConfigError(
            f"{out_dir} already holds something else (splits of another config, "
            f"or other files); pass force=True / --force to replace them"
        )
    started = time.perf_counter()
    skipped: dict[str, str] = {}
    targets, bad = load_tasks(tasks_dir, config, config.target_tasks)
    if bad:
        raise ConfigError(f"target tasks unusable: {bad}")
    pool_names, shares, usable = _pick_pool_tasks(tasks_dir, config, skipped)

    need = config.n_targets_per_task + config.n_eval_per_task
    pool_rows: list[TaskExample] = []
    target_rows: dict[str, list[TaskExample]] = {}
    eval_rows: dict[str, list[TaskExample]] = {}
    counts: dict[str, dict[str, int]] = {}
    for name in sorted(config.target_tasks):
        examples = list(targets[name].examples)
        if len(examples) < need:
            raise ConfigError(
                f"target task {name} has {len(examples)} usable examples under max_chars="
                f"{config.max_chars}; needs n_targets_per_task + n_eval_per_task = {need}"
            )
        _rng(config.seed, name).shuffle(examples)
        nt = config.n_targets_per_task
        target_rows[name] = sorted(examples[:nt], key=lambda e: e.n)
        eval_rows[name] = sorted(examples[nt:need], key=lambda e: e.n)
        share = sorted(examples[need : need + config.per_task_pool], key=lambda e: e.n)
        if len(share) < config.per_task_pool:
            logger.warning("target task %s contributes only %d pool rows", name, len(share))
        pool_rows.extend(share)
        counts[name] = {
            "usable": len(examples),
            "targets": nt,
            "eval": config.n_eval_per_task,
            "pool": len(share),
        }
    for name in pool_names:
        pool_rows.extend(shares[name])
        counts[name] = {"usable": usable[name], "targets": 0, "eval": 0, "pool": len(shares[name])}
    pool_rows.sort(key=lambda e: (e.task, e.n))
    ids = [e.id for e in pool_rows]
    if len(set(ids)) != len(ids):  # pragma: no cover - guarded by construction
        raise DataError("duplicate ids in the pool")

    staged = staging_dir(out_dir)
    try:
        files: dict[str, Path] = {"pool.jsonl": staged / "pool.jsonl"}
        _write_jsonl(files["pool.jsonl"], (e.row() for e in pool_rows))
        n_without: int | None = None
        if exclude_target_tasks_from_pool:
            without = [e for e in pool_rows if e.task not in config.target_tasks]
            n_without = len(without)
            files["pool_without_targets.jsonl"] = staged / "pool_without_targets.jsonl"
            _write_jsonl(files["pool_without_targets.jsonl"], (e.row() for e in without))
        for kind, table in (("targets", target_rows), ("eval", eval_rows)):
            for name, rows in table.items():
                rel = f"{kind}/{name}.jsonl"
                files[rel] = staged / rel
                _write_jsonl(files[rel], (e.row(subtask=True) for e in rows))
        meta = {
            "request": request,
            "pool_tasks": pool_names,
            "target_tasks": sorted(config.target_tasks),
            "counts": counts,
            "n_pool": len(pool_rows),
            "n_pool_without_targets": n_without,
            "skipped_tasks": dict(sorted(skipped.items())),
            "files": {rel: sha256_file(path) for rel, path in sorted(files.items())},
        }
        atomic_write_json(staged / "splits.json", meta)
        publish_dir(staged, out_dir)
    except BaseException:
        discard_dir(staged)
        raise
    logger.info(
        "wrote %d pool rows from %d tasks (+%d targets) to %s in %.1f s",
        len(pool_rows),
        len(pool_names),
        len(config.target_tasks),
        out_dir,
        time.perf_counter() - started,
    )
    return _summary_from_meta(out_dir, meta, cached=False)
