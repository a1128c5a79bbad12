"""BIG-bench as real instruction data: fetch the task JSONs and build pool / target / eval splits.

The ``bigbench`` sdist on PyPI (Apache-2.0) carries about 1,000 ``task.json`` files. We
fetch the sdist once, keep only those files, and turn them into chat-format JSONL:

* ``pool.jsonl`` — the instruction pool D mixed from many tasks;
* ``pool_without_targets.jsonl`` — the same pool minus every target task's rows (the
  "target task absent from the pool" setting);
* ``targets/<task>.jsonl`` — a handful of few-shot target examples per target task;
* ``eval/<task>.jsonl`` — held-out examples of each target task to measure loss on;
* ``splits.json`` — config, counts per task and the sha256 of every file.

Each row is ``{"id": "bb/<task>/<n>", "task": <task>, "messages": [user, assistant]}``
(target and eval rows add ``"subtask": <task>``). ``n`` is the example's position in the
task's own files (the top-level ``task.json`` first, then subtask folders by name), so an
id names the same example whatever the config. A target task's examples are split
disjointly: targets and eval rows never appear in any pool.

Why not ``pip download``: pip prepares the metadata of every sdist it downloads, and the
``bigbench`` sdist declares a ``file://`` direct-URL dependency (bleurt) that pip then
refuses ("Distributions from PyPI cannot declare direct URL dependencies"), so
``pip download --no-deps --no-binary :all: bigbench==1.0.0`` fails after fetching. We
therefore resolve the file through the package index's simple API (PEP 691 JSON, or
PEP 503 HTML), download it and check its sha256 against the index and a pinned value.
Nothing is built or executed.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import html.parser
import json
import logging
import os
import random
import re
import statistics
import tarfile
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from demo.sources._common import (
    SourceError,
    add_logging_args,
    discard_dir,
    publish_dir,
    run_cli,
    staging_dir,
)
from indexer.fsutil import atomic_write_json, sha256_file
from less_core.errors import ConfigError, DataError, IntegrityError

logger = logging.getLogger(__name__)

BIGBENCH_VERSION = "1.0.0"
BIGBENCH_SDIST = f"bigbench-{BIGBENCH_VERSION}.tar.gz"
#: sha256 of ``bigbench-1.0.0.tar.gz`` as published on PyPI (358,249,635 bytes).
BIGBENCH_SDIST_SHA256 = "1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2"
DEFAULT_INDEX_URL = "https://pypi.org/simple"
TASKS_DIRNAME = "bigbench_tasks"
TASKS_MARKER = "_source.json"
SPLITS_FORMAT_VERSION = 1

#: BBH source tasks with distinct wording, short prompts and >= 300 usable examples in 1.0.0
#: (three multiple-choice, one free-form answer).
DEFAULT_TARGET_TASKS: tuple[str, ...] = (
    "date_understanding",
    "logical_deduction",
    "sports_understanding",
    "word_sorting",
)
#: BIG-bench keywords of tasks that are not plain English text; never auto-picked for the pool.
EXCLUDED_KEYWORDS = frozenset(
    {"non-language", "non-English", "multilingual", "low-resource language", "translation"}
)
DEFAULT_INPUT_PREFIXES = frozenset({"", "Q:", "Input:"})
_SAFE_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


# --------------------------------------------------------------------------- fetching


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
        index_url: Simple-API index to resolve the sdist on; defaults to ``$PIP_INDEX_URL``
            or PyPI.
        keep_sdist: Keep the downloaded tarball in ``cache_dir`` (it is 358 MB).
        expected_sha256: Required sha256 of the sdist; ``None`` skips the pin (the index's
            own hash is still checked when it gives one).

    Returns:
        The tasks directory.

    Raises:
        SourceError: The sdist cannot be resolved or downloaded, or holds no task files.
        IntegrityError: The sdist's sha256 differs from the index's or the pinned one.
    """
    cache_dir = Path(cache_dir)
    tasks_dir = cache_dir / TASKS_DIRNAME
    if not force and (tasks_dir / TASKS_MARKER).is_file():
        logger.info("BIG-bench task files already extracted at %s", tasks_dir)
        return tasks_dir
    cache_dir.mkdir(parents=True, exist_ok=True)
    downloaded: Path | None = None
    if sdist is None:
        kept = cache_dir / BIGBENCH_SDIST
        if kept.is_file():
            sdist = kept
        else:
            downloaded = sdist = _download_sdist(
                cache_dir,
                index_url or os.environ.get("PIP_INDEX_URL") or DEFAULT_INDEX_URL,
                expected_sha256,
                keep=keep_sdist,
            )
    sdist_sha = sha256_file(sdist)
    if expected_sha256 is not None and sdist_sha != expected_sha256:
        raise IntegrityError(f"{sdist}: sha256 {sdist_sha} != expected {expected_sha256}")
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
    url, index_sha = _resolve_on_index(index_url, "bigbench", BIGBENCH_SDIST)
    target = cache_dir / BIGBENCH_SDIST if keep else None
    fd, tmp_name = tempfile.mkstemp(prefix=f".{BIGBENCH_SDIST}.", suffix=".part", dir=cache_dir)
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    logger.info("downloading %s", url)
    started = time.perf_counter()
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=180) as resp:
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


class _LinkParser(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.hrefs.extend(v for k, v in attrs if k == "href" and v)


def _resolve_on_index(index_url: str, project: str, filename: str) -> tuple[str, str | None]:
    """Find ``filename`` of ``project`` on a PEP 691 (JSON) or PEP 503 (HTML) simple index.

    Returns:
        The absolute download URL and the index's sha256 for it (``None`` if it gives none).
    """
    page = index_url.rstrip("/") + f"/{project}/"
    req = urllib.request.Request(
        page, headers={"Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.1"}
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            ctype = resp.headers.get("Content-Type", "")
            body = resp.read()
    except OSError as exc:
        raise SourceError(f"cannot read package index page {page}: {exc}") from exc
    if "json" in ctype:
        for entry in json.loads(body).get("files", []):
            if entry.get("filename") == filename:
                url = urllib.parse.urljoin(page, entry["url"])
                return url, entry.get("hashes", {}).get("sha256")
    else:
        parser = _LinkParser()
        parser.feed(body.decode("utf-8", "replace"))
        for href in parser.hrefs:
            url = urllib.parse.urljoin(page, href)
            parsed = urllib.parse.urlsplit(url)
            if PurePosixPath(parsed.path).name == filename:
                frag = urllib.parse.parse_qs(parsed.fragment)
                return url.split("#", 1)[0], (frag.get("sha256") or [None])[0]
    raise SourceError(f"{filename} is not listed on {page}")


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


# --------------------------------------------------------------------------- examples


@dataclass(frozen=True)
class BigBenchConfig:
    """How to build the pool / target / eval splits. Same config and files → same bytes."""

    pool_tasks: tuple[str, ...] | None = field(
        default=None,
        metadata={
            "help": "non-target tasks mixed into the pool; None picks n_pool_tasks automatically "
            "(deterministically from seed) among tasks with enough short, plain-text "
            "examples"
        },
    )
    n_pool_tasks: int = field(
        default=24,
        metadata={"help": "how many non-target tasks to auto-pick when pool_tasks is None"},
    )
    per_task_pool: int = field(
        default=40,
        metadata={"help": "examples each task contributes to the pool (fewer if it has fewer)"},
    )
    target_tasks: tuple[str, ...] = field(
        default=DEFAULT_TARGET_TASKS,
        metadata={
            "help": "tasks that get few-shot targets and held-out eval rows; their remaining "
            "examples also feed the pool (per_task_pool of them)"
        },
    )
    n_targets_per_task: int = field(
        default=8, metadata={"help": "target (few-shot query) examples per target task"}
    )
    n_eval_per_task: int = field(
        default=32, metadata={"help": "held-out evaluation examples per target task"}
    )
    max_chars: int = field(
        default=1500,
        metadata={"help": "drop examples whose user prompt + answer exceed this many characters"},
    )
    seed: int = field(
        default=0, metadata={"help": "seed of every random choice (task pick, per-task sampling)"}
    )
    shuffle_choices: bool = field(
        default=True,
        metadata={
            "help": "list multiple-choice options in an order hashed from the example id, not "
            "file order (BIG-bench files often list the right answer first)"
        },
    )

    def __post_init__(self) -> None:
        for name in (
            "n_pool_tasks",
            "per_task_pool",
            "n_targets_per_task",
            "n_eval_per_task",
            "max_chars",
        ):
            low = 0 if name == "n_pool_tasks" else 1
            if getattr(self, name) < low:
                raise ConfigError(f"{name} must be >= {low}, got {getattr(self, name)}")
        # Accept lists for convenience, store tuples so the config stays hashable.
        object.__setattr__(self, "target_tasks", tuple(self.target_tasks))
        if self.pool_tasks is not None:
            object.__setattr__(self, "pool_tasks", tuple(self.pool_tasks))
        if not self.target_tasks:
            raise ConfigError("target_tasks must name at least one task")
        for label, names in (
            ("target_tasks", self.target_tasks),
            ("pool_tasks", self.pool_tasks or ()),
        ):
            if len(set(names)) != len(names):
                raise ConfigError(f"{label} has duplicates: {list(names)}")
        overlap = sorted(set(self.target_tasks) & set(self.pool_tasks or ()))
        if overlap:
            raise ConfigError(
                f"pool_tasks must not repeat target tasks (they join the pool "
                f"automatically): {overlap}"
            )

    def to_json(self) -> dict[str, Any]:
        """The config as plain JSON types (tuples become lists)."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }


@dataclass(frozen=True)
class Example:
    """One usable BIG-bench example in chat form."""

    task: str
    n: int
    user: str
    answer: str
    multiple_choice: bool

    @property
    def id(self) -> str:
        return f"bb/{self.task}/{self.n}"

    def row(self, *, subtask: bool = False) -> dict[str, Any]:
        """The JSONL row; ``subtask=True`` adds ``"subtask": task`` (target / eval files)."""
        row: dict[str, Any] = {
            "id": self.id,
            "task": self.task,
            "messages": [
                {"role": "user", "content": self.user},
                {"role": "assistant", "content": self.answer},
            ],
        }
        if subtask:
            row["subtask"] = self.task
        return row


@dataclass
class TaskData:
    """A task's examples after parsing, dedup (by input text) and the ``max_chars`` filter."""

    name: str
    keywords: tuple[str, ...]
    subtasks: tuple[str, ...]
    examples: list[Example]
    n_raw: int = 0
    n_malformed: int = 0
    n_duplicates: int = 0
    n_too_long: int = 0
    first_problem: str = ""


@dataclass(frozen=True)
class TaskInfo:
    """Summary of one task, used to auto-pick pool tasks and by ``--list-tasks``."""

    name: str
    n_raw: int
    n_usable: int
    n_malformed: int
    subtasks: int
    multiple_choice: float
    median_chars: int
    eligible: bool
    reason: str


class _BadExample(ValueError):
    pass


def _answer_and_choices(raw: dict[str, Any]) -> tuple[str, list[str] | None]:
    scores = raw.get("target_scores")
    if scores is not None:
        if not isinstance(scores, dict) or not scores:
            raise _BadExample("target_scores is not a non-empty object")
        if not all(
            isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool)
            for k, v in scores.items()
        ):
            raise _BadExample("target_scores must map strings to numbers")
        best = max(scores.values())
        answer = next(k for k, v in scores.items() if v == best)  # ties: first
        return answer, list(scores)
    target = raw.get("target")
    if isinstance(target, list):
        target = next((t for t in target if isinstance(t, str) and t.strip()), None)
    elif isinstance(target, (int, float)) and not isinstance(target, bool):
        target = str(target)
    if not isinstance(target, str):
        raise _BadExample("no usable target / target_scores")
    return target, None


def _format_example(
    raw: Any, fmt: dict[str, Any], ex_id: str, shuffle: bool
) -> tuple[str, str, str, bool]:
    """Return (dedup key, user prompt, answer, is_multiple_choice) or raise _BadExample."""
    if not isinstance(raw, dict):
        raise _BadExample("example is not an object")
    text = raw.get("input", "")
    if not isinstance(text, str):
        raise _BadExample("input is not a string")
    answer, choices = _answer_and_choices(raw)
    answer = answer.strip()
    if not answer:
        raise _BadExample("empty answer")
    # An empty input is fine when the options carry the content (e.g. cause_and_effect).
    if not text.strip() and choices is None:
        raise _BadExample("empty input and no options")
    key = text.strip() or "\n".join(sorted(c.strip() for c in choices or ()))
    parts = []
    prefix = fmt.get("task_prefix")
    if isinstance(prefix, str) and prefix.strip():
        parts.append(prefix.strip())
    in_prefix = fmt.get("example_input_prefix")
    body = text.strip()
    if isinstance(in_prefix, str) and in_prefix.strip() not in DEFAULT_INPUT_PREFIXES:
        body = f"{in_prefix.strip()} {body}"
    if body:
        parts.append(body)
    if choices is not None:
        shown = [c.strip() for c in choices]
        if shuffle:
            seed = int.from_bytes(hashlib.sha256(ex_id.encode()).digest()[:8], "big")
            random.Random(seed).shuffle(shown)
        parts.append("Options:\n" + "\n".join(f"- {c}" for c in shown))
    return key, "\n\n".join(parts), answer, choices is not None


def _task_files(task_dir: Path) -> list[tuple[str, Path]]:
    files = [("", task_dir / "task.json")] if (task_dir / "task.json").is_file() else []
    files += [
        (sub.name, sub / "task.json")
        for sub in sorted(task_dir.iterdir())
        if sub.is_dir() and (sub / "task.json").is_file()
    ]
    return files


def load_task(
    task_dir: Path,
    *,
    max_chars: int,
    shuffle_choices: bool = True,
    skip_keywords: frozenset[str] = frozenset(),
) -> TaskData:
    """Parse a task folder (its ``task.json`` and subtask folders) into usable examples.

    Malformed examples are counted and skipped, duplicates of an earlier example's input
    text are dropped (subtasks often repeat an input with other options), and so are
    examples whose prompt + answer exceed ``max_chars``.

    Args:
        task_dir: ``<tasks_dir>/<task>``.
        max_chars: Length limit on prompt + answer.
        shuffle_choices: See :attr:`BigBenchConfig.shuffle_choices`.
        skip_keywords: If the top-level task.json has one of these keywords, stop there and
            return no examples (saves parsing e.g. multiemo's 1.4 M examples).

    Returns:
        The task's data; ``examples`` is in ``n`` order.

    Raises:
        DataError: The folder has no task.json, or one cannot be parsed as a JSON object.
    """
    name = task_dir.name
    files = _task_files(task_dir)
    if not files:
        raise DataError(f"{name}: no task.json (generated by code, or not a task)")
    data = TaskData(name=name, keywords=(), subtasks=tuple(s for s, _ in files if s), examples=[])
    seen: set[str] = set()
    for sub, path in files:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"{name}: cannot parse {path.name} of '{sub or name}': {exc}") from exc
        if not isinstance(doc, dict):
            raise DataError(f"{name}: {sub or name}/task.json is not a JSON object")
        if not sub:
            data.keywords = tuple(k for k in doc.get("keywords", []) if isinstance(k, str))
            if skip_keywords.intersection(data.keywords):
                return data
        raw_examples = doc.get("examples", [])
        if not isinstance(raw_examples, list):
            raw_examples = [raw_examples]
        for raw in raw_examples:
            n = data.n_raw
            data.n_raw += 1
            try:
                key, user, answer, mc = _format_example(raw, doc, f"bb/{name}/{n}", shuffle_choices)
            except _BadExample as exc:
                data.n_malformed += 1
                data.first_problem = data.first_problem or f"example {n}: {exc}"
                continue
            if key in seen:
                data.n_duplicates += 1
                continue
            seen.add(key)
            if len(user) + len(answer) > max_chars:
                data.n_too_long += 1
                continue
            data.examples.append(Example(name, n, user, answer, mc))
    if data.n_malformed:
        logger.warning(
            "%s: skipped %d malformed example(s) of %d (first: %s)",
            name,
            data.n_malformed,
            data.n_raw,
            data.first_problem,
        )
    return data


def _plain_text_problem(examples: Sequence[Example]) -> str:
    """Why these examples are not plain English-like text ('' if they are)."""
    text = "".join(e.user + e.answer for e in examples[:200])
    if not text:
        return "no text"
    ascii_frac = sum(c.isascii() for c in text) / len(text)
    visible = [c for c in text if not c.isspace()]
    alpha_frac = sum(c.isalpha() for c in visible) / max(1, len(visible))
    if ascii_frac < 0.98:
        return f"non-ASCII text ({ascii_frac:.0%} ASCII)"
    if alpha_frac < 0.6:
        return f"not prose ({alpha_frac:.0%} letters)"
    return ""


def _task_info(data: TaskData, config: BigBenchConfig) -> TaskInfo:
    usable = data.examples
    valid = data.n_raw - data.n_malformed - data.n_duplicates
    reason = ""
    bad_kw = sorted(EXCLUDED_KEYWORDS & set(data.keywords))
    if bad_kw:
        reason = f"keywords {bad_kw}"
    elif len(usable) < config.per_task_pool:
        reason = f"only {len(usable)} usable examples (< per_task_pool {config.per_task_pool})"
    elif len(usable) < 0.5 * valid:
        reason = f"mostly longer than max_chars ({len(usable)}/{valid} fit)"
    else:
        reason = _plain_text_problem(usable)
    return TaskInfo(
        name=data.name,
        n_raw=data.n_raw,
        n_usable=len(usable),
        n_malformed=data.n_malformed,
        subtasks=len(data.subtasks),
        multiple_choice=round(sum(e.multiple_choice for e in usable) / max(1, len(usable)), 3),
        median_chars=int(statistics.median(len(e.user) + len(e.answer) for e in usable))
        if usable
        else 0,
        eligible=not reason,
        reason=reason,
    )


def list_task_dirs(tasks_dir: Path) -> list[Path]:
    """Task folders under ``tasks_dir``, sorted by name (hidden / ``_`` entries skipped)."""
    tasks_dir = Path(tasks_dir)
    if not tasks_dir.is_dir():
        raise ConfigError(f"tasks directory {tasks_dir} does not exist (run the fetch first)")
    return sorted(
        p for p in tasks_dir.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))
    )


def iter_tasks(
    tasks_dir: Path,
    config: BigBenchConfig,
    names: Iterable[str] | None = None,
    *,
    skip_keywords: frozenset[str] = frozenset(),
) -> Iterator[tuple[str, TaskData | None, str]]:
    """Load the named tasks (all when ``names`` is None) one at a time; see :func:`load_task`.

    Yields:
        ``(name, data, "")`` for a loaded task, ``(name, None, why)`` for a skipped one,
        in name order. Only one task's examples are in memory at a time.
    """
    dirs = {p.name: p for p in list_task_dirs(tasks_dir)}
    for name in sorted(dirs) if names is None else sorted(set(names)):
        if name not in dirs:
            yield name, None, "no such task folder"
            continue
        try:
            yield (
                name,
                load_task(
                    dirs[name],
                    max_chars=config.max_chars,
                    shuffle_choices=config.shuffle_choices,
                    skip_keywords=skip_keywords,
                ),
                "",
            )
        except DataError as exc:
            logger.warning("skipping task %s", exc)
            yield name, None, str(exc).split(": ", 1)[-1]


def load_tasks(
    tasks_dir: Path, config: BigBenchConfig, names: Iterable[str]
) -> tuple[dict[str, TaskData], dict[str, str]]:
    """Load the named tasks.

    Returns:
        ``(loaded, skipped)``: task name → data, and task name → why it was skipped.
    """
    loaded: dict[str, TaskData] = {}
    skipped: dict[str, str] = {}
    for name, data, why in iter_tasks(tasks_dir, config, names):
        if data is None:
            skipped[name] = why
        else:
            loaded[name] = data
    return loaded, skipped


def describe_tasks(tasks_dir: Path, config: BigBenchConfig | None = None) -> list[TaskInfo]:
    """Summarize every task: usable examples under ``config`` and whether it can be auto-picked."""
    config = config or BigBenchConfig()
    return [
        _task_info(data, config) for _, data, _ in iter_tasks(tasks_dir, config) if data is not None
    ]


# --------------------------------------------------------------------------- splits


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
    digest = hashlib.sha256(f"{seed}:{label}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _pool_share(data: TaskData, config: BigBenchConfig) -> list[Example]:
    """A non-target task's pool rows: ``per_task_pool`` examples drawn with (seed, task)."""
    examples = list(data.examples)
    _rng(config.seed, data.name).shuffle(examples)
    return sorted(examples[: config.per_task_pool], key=lambda e: e.n)


def _pick_pool_tasks(
    tasks_dir: Path, config: BigBenchConfig, skipped: dict[str, str]
) -> tuple[list[str], dict[str, list[Example]], dict[str, int]]:
    """Choose the non-target pool tasks; returns (names, their pool rows, usable counts)."""
    shares: dict[str, list[Example]] = {}
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
        info = _task_info(data, config)
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
    marker = tasks_dir / TASKS_MARKER
    if marker.is_file():
        info = json.loads(marker.read_text(encoding="utf-8"))
        return {"sdist": info.get("sdist"), "sha256": info.get("sha256")}
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
    pool_rows: list[Example] = []
    target_rows: dict[str, list[Example]] = {}
    eval_rows: dict[str, list[Example]] = {}
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


# --------------------------------------------------------------------------- CLI


def _csv(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m demo.sources.bigbench``."""
    defaults = BigBenchConfig()
    helps = {f.name: f.metadata.get("help", "") for f in dataclasses.fields(BigBenchConfig)}
    p = argparse.ArgumentParser(
        prog="python -m demo.sources.bigbench",
        description="Fetch the BIG-bench task files (once) and build pool/targets/eval splits.",
    )
    p.add_argument(
        "--cache-dir",
        type=Path,
        required=True,
        help="cache root; task files go to <cache-dir>/bigbench_tasks",
    )
    p.add_argument("--out", type=Path, help="output directory of the splits (omit to only fetch)")
    p.add_argument("--sdist", type=Path, help="local bigbench-1.0.0.tar.gz (no download)")
    p.add_argument("--index-url", help="simple-API package index (default $PIP_INDEX_URL or PyPI)")
    p.add_argument("--keep-sdist", action="store_true", help="keep the 358 MB tarball in the cache")
    p.add_argument(
        "--list-tasks",
        action="store_true",
        help="print every task's usable examples and eligibility, then exit",
    )
    p.add_argument(
        "--target-tasks",
        type=_csv,
        default=defaults.target_tasks,
        help=f"comma-separated; {helps['target_tasks']} "
        f"(default {','.join(defaults.target_tasks)})",
    )
    p.add_argument("--pool-tasks", type=_csv, help=f"comma-separated; {helps['pool_tasks']}")
    for name in (
        "n_pool_tasks",
        "per_task_pool",
        "n_targets_per_task",
        "n_eval_per_task",
        "max_chars",
        "seed",
    ):
        p.add_argument(
            "--" + name.replace("_", "-"),
            type=int,
            default=getattr(defaults, name),
            help=f"{helps[name]} (default {getattr(defaults, name)})",
        )
    p.add_argument("--no-shuffle-choices", action="store_true", help="list options in file order")
    p.add_argument(
        "--no-pool-without-targets",
        action="store_true",
        help="do not write pool_without_targets.jsonl",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="replace splits in --out that were built from another config",
    )
    p.add_argument(
        "--refetch",
        action="store_true",
        help="download and extract the task files again even if present",
    )
    add_logging_args(p)
    return p


def _run(args: argparse.Namespace) -> None:
    tasks_dir = fetch_bigbench_sdist(
        args.cache_dir,
        force=args.refetch,
        sdist=args.sdist,
        index_url=args.index_url,
        keep_sdist=args.keep_sdist,
    )
    config = BigBenchConfig(
        pool_tasks=args.pool_tasks,
        n_pool_tasks=args.n_pool_tasks,
        per_task_pool=args.per_task_pool,
        target_tasks=args.target_tasks,
        n_targets_per_task=args.n_targets_per_task,
        n_eval_per_task=args.n_eval_per_task,
        max_chars=args.max_chars,
        seed=args.seed,
        shuffle_choices=not args.no_shuffle_choices,
    )
    if args.list_tasks:
        print(
            f"{'task':45} {'raw':>6} {'usable':>6} {'bad':>4} {'subs':>4} {'mc':>5} "
            f"{'median':>6}  eligible"
        )
        for t in describe_tasks(tasks_dir, config):
            print(
                f"{t.name:45} {t.n_raw:6d} {t.n_usable:6d} {t.n_malformed:4d} {t.subtasks:4d} "
                f"{t.multiple_choice:5.2f} {t.median_chars:6d}  "
                f"{'yes' if t.eligible else 'no: ' + t.reason}"
            )
        return
    if args.out is None:
        print(f"task files at {tasks_dir}")
        return
    summary = build_bigbench_splits(
        tasks_dir,
        args.out,
        config,
        exclude_target_tasks_from_pool=not args.no_pool_without_targets,
        force=args.force,
    )
    state = "up to date" if summary.cached else "written"
    print(
        f"splits {state} at {summary.out_dir}: pool {summary.n_pool} rows from "
        f"{len(summary.pool_tasks)} pool tasks + targets {', '.join(summary.target_tasks)}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    return run_cli(build_parser().parse_args(argv), _run)


if __name__ == "__main__":
    raise SystemExit(main())
