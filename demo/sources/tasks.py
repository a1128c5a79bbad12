"""Parse BIG-bench task folders into chat-format examples and summarize each task.

A task folder holds a top-level ``task.json`` and/or subtask folders with their own. Each
usable example becomes a :class:`TaskExample` (one user prompt, one answer); malformed ones,
repeats of an earlier input and over-long ones are counted and dropped. ``n`` is the
example's position in the task's own files (the top-level ``task.json`` first, then subtask
folders by name), so its id ``bb/<task>/<n>`` names the same example whatever the config.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import statistics
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from demo.sources.config import BigBenchConfig
from less_core.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

#: BIG-bench keywords of tasks that are not plain English text; never auto-picked for the pool.
#: The OpenAI evals conversion marks its non-English tasks with "non-English" / "translation".
EXCLUDED_KEYWORDS = frozenset(
    {"non-language", "non-English", "multilingual", "low-resource language", "translation"}
)
#: ``example_input_prefix`` values that add nothing to the prompt (BIG-bench's defaults).
DEFAULT_INPUT_PREFIXES = frozenset({"", "Q:", "Input:"})


@dataclass(frozen=True)
class TaskExample:
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
    examples: list[TaskExample]
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
            data.examples.append(TaskExample(name, n, user, answer, mc))
    if data.n_malformed:
        logger.warning(
            "%s: skipped %d malformed example(s) of %d (first: %s)",
            name,
            data.n_malformed,
            data.n_raw,
            data.first_problem,
        )
    return data


def _plain_text_problem(examples: Sequence[TaskExample]) -> str:
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


def task_info(data: TaskData, config: BigBenchConfig) -> TaskInfo:
    """Summarize a loaded task and decide whether it may be auto-picked for the pool.

    A task is eligible when none of its keywords is excluded, it has at least
    ``per_task_pool`` usable examples, at least half its valid examples fit ``max_chars``,
    and its text is plain English-like prose.

    Args:
        data: The task as :func:`load_task` returned it.
        config: Supplies ``per_task_pool`` (the size limit is already applied in ``data``).

    Returns:
        The summary; ``reason`` says why it is not eligible ('' if it is).
    """
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
        task_info(data, config) for _, data, _ in iter_tasks(tasks_dir, config) if data is not None
    ]
