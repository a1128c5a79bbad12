"""The tokenized pool of a build, stored as flat memory-mapped arrays (stage 1 of a build).

    ids.txt        row -> example id
    tokens.bin     int32, all examples' token ids back to back
    labels.bin     int32, their labels (IGNORE_INDEX outside the response)
    offsets.npy    int64 (N + 1,), row r spans [offsets[r], offsets[r + 1])
    skipped.jsonl  pool examples left out, with the reason
    metadata_rows.jsonl  per kept row, its scalar metadata fields and preview
                   (``indexer.pool_metadata.row_record``), turned into columns at publish time
    done.json      written last: the stage is complete

Memory stays flat in the pool size apart from the id set used to reject duplicates.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from indexer.fsutil import atomic_write_json
from indexer.jsonl import iter_examples
from indexer.pool_metadata import row_record
from indexer.progress import Progress
from less_core.data import TokenizedExample, tokenize_example
from less_core.errors import DataError

METADATA_ROWS = "metadata_rows.jsonl"


class TokenizedPool:
    """Read access to a finished tokenized pool."""

    def __init__(self, path: Path):
        self.path = path
        done = json.loads((path / "done.json").read_text())
        self.n = int(done["n"])
        self.n_skipped = int(done["n_skipped"])
        self.offsets = np.load(path / "offsets.npy")
        total = int(self.offsets[-1])
        self._tokens = np.memmap(path / "tokens.bin", dtype=np.int32, mode="r", shape=(total,))
        self._labels = np.memmap(path / "labels.bin", dtype=np.int32, mode="r", shape=(total,))

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def example(self, row: int) -> TokenizedExample:
        a, b = int(self.offsets[row]), int(self.offsets[row + 1])
        return TokenizedExample(self._tokens[a:b].tolist(), self._labels[a:b].tolist())

    def rows(self, rows: Sequence[int]) -> list[TokenizedExample]:
        return [self.example(int(r)) for r in rows]


def tokenize_pool(pool_path: Path, tokenizer: Any, max_length: int, out: Path) -> TokenizedPool:
    """Tokenize the pool into ``out`` unless a finished copy is already there.

    Examples whose response is truncated away entirely are not indexed; they are listed in
    ``skipped.jsonl`` (and the manifest counts them). Malformed lines, missing or duplicate ids
    and empty responses are errors that name the line. Each kept row's metadata line goes to
    ``metadata_rows.jsonl`` in the same pass.
    """
    if (out / "done.json").is_file():
        if not (out / METADATA_ROWS).is_file():
            _write_metadata_rows(pool_path, out)
        return TokenizedPool(out)
    if out.exists():
        shutil.rmtree(out)  # an interrupted tokenization is cheap to redo
    out.mkdir(parents=True)
    offsets, n_skipped = [0], 0
    progress = Progress("tokenize", total=None)
    with (
        (out / "ids.txt").open("w", encoding="utf-8") as ids_f,
        (out / "tokens.bin").open("wb") as tok_f,
        (out / "labels.bin").open("wb") as lab_f,
        (out / "skipped.jsonl").open("w", encoding="utf-8") as skip_f,
        (out / METADATA_ROWS).open("w", encoding="utf-8") as meta_f,
    ):
        for ex in iter_examples(pool_path):
            tok = tokenize_example(tokenizer, ex, max_length)
            if tok.n_response_tokens == 0:
                skip_f.write(
                    json.dumps(
                        {
                            "id": ex.id,
                            "reason": f"response truncated away at max_length={max_length}",
                        }
                    )
                    + "\n"
                )
                n_skipped += 1
                continue
            ids_f.write(ex.id + "\n")
            meta_f.write(json.dumps(row_record(ex)) + "\n")
            tok_f.write(np.asarray(tok.input_ids, dtype=np.int32).tobytes())
            lab_f.write(np.asarray(tok.labels, dtype=np.int32).tobytes())
            offsets.append(offsets[-1] + len(tok.input_ids))
            progress.update(1)
    n = len(offsets) - 1
    if n == 0:
        raise DataError(f"{pool_path}: no example left to index ({n_skipped} skipped)")
    np.save(out / "offsets.npy", np.asarray(offsets, dtype=np.int64))
    atomic_write_json(out / "done.json", {"n": n, "n_skipped": n_skipped})
    return TokenizedPool(out)


def _write_metadata_rows(pool_path: Path, out: Path) -> None:
    """The metadata lines of a tokenized pool finished by code that did not write them (a
    build resumed across an upgrade): the pool's rows again, minus those it skipped."""
    skipped = {
        json.loads(line)["id"]
        for line in (out / "skipped.jsonl").read_text(encoding="utf-8").splitlines()
        if line.strip()
    }
    tmp = out / f".{METADATA_ROWS}.tmp"
    with tmp.open("w", encoding="utf-8") as meta_f:
        for ex in iter_examples(pool_path):
            if ex.id not in skipped:
                meta_f.write(json.dumps(row_record(ex)) + "\n")
    tmp.replace(out / METADATA_ROWS)
