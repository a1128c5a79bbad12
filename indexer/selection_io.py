"""Writing a selection as JSONL: ids with scores, or the selected pool rows."""

from __future__ import annotations

import json
from pathlib import Path

from indexer.fsutil import atomic_write_text
from indexer.jsonl import iter_jsonl
from indexer.query import Selection
from less_core.errors import DataError


def write_selection(selection: Selection, out: Path, pool_path: Path | None = None) -> None:
    """Write ``{rank, id, score, subtask}`` lines, or the pool rows (with those fields added)."""
    records = [
        {"rank": i + 1, "id": ex_id, "score": score, "subtask": sub}
        for i, (ex_id, score, sub) in enumerate(
            zip(selection.ids, selection.scores, selection.subtasks)
        )
    ]
    if pool_path is not None:
        wanted = {r["id"]: r for r in records}
        rows: dict[str, dict] = {}
        for _, row in iter_jsonl(pool_path):
            key = str(row.get("id"))
            if key in wanted:
                rows[key] = {**row, **{k: wanted[key][k] for k in ("rank", "score", "subtask")}}
        missing = [k for k in wanted if k not in rows]
        if missing:
            raise DataError(f"{pool_path}: selected ids not in the pool, e.g. {missing[:3]}")
        records = [rows[r["id"]] for r in records]
    atomic_write_text(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
