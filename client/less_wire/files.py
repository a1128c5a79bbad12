"""The files users hand to and get from every surface: target JSONL in, selection JSONL out.

One format for all of them (`less-index select`, `less-select`, a job's result download): one
`SelectionRecord` per line in rank order, `{"rank", "id", "score", "subtask"}` (plus
`"explanation"` for a selection asked with `explain`), or with the pool row's own fields too
when joined against the pool. Joining streams the pool file: only the byte offsets of the
selected rows are kept in memory, never the pool itself.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from pydantic import ValidationError

from .errors import describe_validation_errors
from .models import SelectedExample, SelectionRecord, TargetExample

__all__ = [
    "InputFileError",
    "load_targets_jsonl",
    "read_selection",
    "selection_records",
    "write_selected_ids",
    "write_selected_rows",
]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
Output = PathLike | IO[str]
"""A file path (written atomically) or an open text stream such as `sys.stdout`."""

_TARGET_FIELDS = frozenset(TargetExample.model_fields)
_ROW_KEYS = {"rank", "score", "subtask"}
"""What a selection adds to a pool row it writes (besides an explanation)."""


class InputFileError(ValueError):
    """A local file (targets, pool, selection JSONL) is malformed; the message names the line."""


_MAX_MISSING_SHOWN = 5


def load_targets_jsonl(path: PathLike) -> list[TargetExample]:
    """Reads target examples, one JSON object per line.

    Each line has `messages` or `prompt` and `completion`, optionally `id` and `subtask`.
    Other keys (e.g. a pool row's `task`) are ignored, so rows of the pool format can be used
    directly. Blank lines are skipped.

    Args:
        path: The JSONL file.

    Returns:
        The examples in file order.

    Raises:
        InputFileError: A line is not JSON, not an object or not a valid example (the message
            names the file and line), or the file holds no examples.
        OSError: The file cannot be read.
    """
    targets: list[TargetExample] = []
    ignored: set[str] = set()
    with open(path, encoding="utf-8") as lines:
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            row = _json_object(line, path, lineno)
            ignored.update(row.keys() - _TARGET_FIELDS)
            try:
                known = {key: value for key, value in row.items() if key in _TARGET_FIELDS}
                targets.append(TargetExample.model_validate(known))
            except ValidationError as exc:
                raise InputFileError(
                    f"{path}:{lineno}: invalid target example: "
                    + describe_validation_errors(exc.errors())
                ) from exc
    if not targets:
        raise InputFileError(f"{path}: no target examples")
    if ignored:
        logger.info("%s: ignored keys %s", path, ", ".join(sorted(ignored)))
    return targets


def selection_records(selected: Iterable[SelectedExample]) -> Iterator[SelectionRecord]:
    """The selection-file records of selected examples given in rank order."""
    for rank, example in enumerate(selected, start=1):
        yield SelectionRecord(
            rank=rank,
            id=example.id,
            score=example.score,
            subtask=example.subtask,
            explanation=example.explanation,
        )


def selection_lines(records: Iterable[SelectionRecord]) -> Iterator[str]:
    """Each record as its JSON line (no newline), `explanation` only where there is one: the
    one spelling of a selection file's lines (CLIs and job results)."""
    for record in records:
        yield record.model_dump_json(exclude=_no_explanation(record))


def write_selected_ids(selected: Iterable[SelectedExample], out: Output) -> int:
    """Writes a selection as JSONL lines `{"rank", "id", "score", "subtask"}`.

    A record with an explanation carries it as `"explanation"`; one without has no such key
    (not a null), so a plain selection's lines are what they always were.

    Args:
        selected: Selected examples in rank order (a list, or a job's result stream).
        out: Destination path (replaced atomically once complete) or open text stream.

    Returns:
        The number of lines written.
    """
    count = 0
    with _open_output(out) as stream:
        for line in selection_lines(selection_records(selected)):
            stream.write(line + "\n")
            count += 1
    return count


def write_selected_rows(
    selected: Iterable[SelectedExample], pool_path: PathLike, out: Output
) -> int:
    """Writes the pool rows of a selection, in rank order, with `rank`, `score`, `subtask` added
    (and `explanation`, for the rows that have one).

    The pool is read twice and never held in memory: a first pass records the byte offset of
    each selected id's row, then the rows are read back by offset in selection order. Pool rows
    must be JSON objects with an `id` (a string, or an integer matched as its decimal string).
    The `rank`, `score` and `subtask` keys of a pool row, if any, are replaced by the selection's
    (`explanation` too, when the selection has one).

    Args:
        selected: Selected examples in rank order.
        pool_path: The training pool JSONL the datastore was built from.
        out: Destination path (replaced atomically once complete) or open text stream.

    Returns:
        The number of rows written.

    Raises:
        InputFileError: A selected id is not in the pool, is in it twice, or a pool line is
            malformed; nothing is written then.
    """
    selection = list(selection_records(selected))
    with open(pool_path, "rb") as pool:
        offsets = _index_rows(pool, pool_path, {example.id for example in selection})
        missing = [example.id for example in selection if example.id not in offsets]
        if missing:
            shown = ", ".join(repr(i) for i in missing[:_MAX_MISSING_SHOWN])
            hidden = len(missing) - _MAX_MISSING_SHOWN
            more = f" and {hidden} more" if hidden > 0 else ""
            raise InputFileError(
                f"{pool_path}: {len(missing)} selected id(s) not in the pool: {shown}{more} "
                "(is this the pool the datastore was built from?)"
            )
        with _open_output(out) as stream:
            for example in selection:
                pool.seek(offsets[example.id])
                row = json.loads(pool.readline())
                row.update(example.model_dump(include=_ROW_KEYS))
                if example.explanation is not None:
                    row["explanation"] = example.explanation.model_dump(mode="json")
                stream.write(json.dumps(row, ensure_ascii=False) + "\n")
    return len(selection)


def _no_explanation(record: SelectionRecord) -> set[str] | None:
    """Leaves out a record's `explanation` key when it has none."""
    return {"explanation"} if record.explanation is None else None


def read_selection(path: PathLike) -> list[SelectionRecord]:
    """Reads a selection file written by `write_selected_ids` (or joined rows), in rank order.

    Raises:
        InputFileError: a line is not a selection record (the message names the line).
    """
    out: list[SelectionRecord] = []
    with open(path, encoding="utf-8") as lines:
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            row = _json_object(line, path, lineno)
            try:
                out.append(SelectionRecord.model_validate(row))
            except ValidationError as exc:
                raise InputFileError(
                    f"{path}:{lineno}: not a selection record: "
                    f"{describe_validation_errors(exc.errors())}"
                ) from exc
    return out


def _index_rows(pool: IO[bytes], pool_path: PathLike, wanted: set[str]) -> dict[str, int]:
    """Byte offset of the row of each wanted id, in one pass over the pool."""
    offsets: dict[str, int] = {}
    position = 0
    for lineno, line in enumerate(pool, start=1):
        start, position = position, position + len(line)
        if not line.strip():
            continue
        row_id = _row_id(_json_object(line, pool_path, lineno), pool_path, lineno)
        if row_id in wanted:
            if row_id in offsets:
                raise InputFileError(
                    f"{pool_path}:{lineno}: id {row_id!r} appears twice in the pool"
                )
            offsets[row_id] = start
    return offsets


def _json_object(line: str | bytes, path: PathLike, lineno: int) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputFileError(
            f"{path}:{lineno}: invalid JSON: {exc.msg} (column {exc.colno})"
        ) from exc
    except UnicodeDecodeError as exc:
        raise InputFileError(f"{path}:{lineno}: not UTF-8 text") from exc
    if not isinstance(row, dict):
        raise InputFileError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
    return row


def _row_id(row: dict[str, Any], path: PathLike, lineno: int) -> str:
    value = row.get("id")
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise InputFileError(f"{path}:{lineno}: row has no string 'id'")


@contextlib.contextmanager
def _open_output(out: Output) -> Iterator[IO[str]]:
    """Yields a text stream; a path is written to a temporary file renamed into place on success."""
    if not isinstance(out, (str, os.PathLike)):
        yield out
        return
    target = Path(out)
    # Same directory as the target, so the final rename stays on one filesystem (atomic);
    # a plain open() (not mkstemp) so the file gets the usual umask permissions.
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as stream:
            yield stream
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
