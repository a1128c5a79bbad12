"""Reading pool and target JSONL files into validated ``Example``s, with errors naming the line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from less_core.data import Example
from less_core.errors import DataError


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line; DataError names the bad line."""
    path = Path(path)
    try:
        handle = path.open("r", encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    with handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield line_no, json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{line_no}: malformed JSON ({exc.msg})") from None


def iter_examples(path: str | Path, *, require_id: bool = True) -> Iterator[Example]:
    """Stream validated Examples from a JSONL file, rejecting duplicate ids."""
    seen: set[str] = set()
    for line_no, row in iter_jsonl(path):
        try:
            ex = Example.from_dict(row, require_id=require_id)
        except DataError as exc:
            raise DataError(f"{path}:{line_no}: {exc}") from None
        if ex.id:
            if ex.id in seen:
                raise DataError(f"{path}:{line_no}: duplicate id {ex.id!r}")
            seen.add(ex.id)
        yield ex


def read_examples(path: str | Path, *, require_id: bool = True) -> list[Example]:
    """All examples of a (small) JSONL file, e.g. a target set; raises DataError if empty."""
    examples = list(iter_examples(path, require_id=require_id))
    if not examples:
        raise DataError(f"{path}: no examples")
    return examples
