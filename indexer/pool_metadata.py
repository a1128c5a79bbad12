"""Pool metadata stored with each datastore version: scalar fields, token counts and previews.

Every top-level key of a pool row other than ``id``/``messages``/``prompt``/``completion`` whose
values are JSON scalars becomes a column (``subtask`` included), so a search can filter rows
inside the scan, a token budget can count what training costs, and an explanation can show a
row. Layout, inside a published version::

    metadata/
        fields.json            format, n, fields [{name, kind, file, missing_file?, values?}],
                               fields left out with the reason, file names of the rest
        field_000.npy ...      one column per field, named by the field's index (a user's field
                               name may hold any character): string -> int32 codes into the
                               sorted ``values`` (-1 missing); int -> int64 with
                               field_NNN_missing.npy (bool, True = missing); float -> float64
                               (NaN missing); bool -> int8 (0/1, -1 missing)
        n_tokens.npy           int32 (N,): tokens per row after truncation (what training costs)
        previews.bin           UTF-8 previews back to back ("Q: <prompt start> → A: <response>")
        previews_offsets.npy   int64 (N + 1,): preview r is bytes [offsets[r], offsets[r + 1])

Everything is memory-mapped when opened; a filter compares whole columns (string values as
their dictionary codes), never a JSON document per row.

Writing is streamed: tokenizing the pool writes one JSON line per kept row (``row_record``)
and ``write_pool_metadata`` turns those lines into columns in two passes (kinds, then values),
holding only the columns in memory. Kinds: int + float -> float, any other mixture -> string
(non-strings spelled as JSON: ``true``, ``3``, ``1.5``); ints beyond int64 make the field
float; a field with a list or object value anywhere, a field that is always null, a field past
``MAX_FIELDS``, a string field with more than ``MAX_DISTINCT_VALUES`` values and a field named
``n_tokens`` (reserved for the token count) are left out, each with one log warning, and
listed in ``fields.json``. The output is a pure function of the rows (sorted dictionaries,
first-seen field order, no timestamps), so two builds of the same pool write the same bytes.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from less_core.data import Example
from less_core.errors import DataError, IntegrityError

log = logging.getLogger(__name__)

FieldKind = Literal["string", "int", "float", "bool"]
MetadataValue = str | int | float | bool | None

METADATA_DIR = "metadata"
FIELDS_FILE = "fields.json"
N_TOKENS_FILE = "n_tokens.npy"
PREVIEWS_FILE = "previews.bin"
PREVIEW_OFFSETS_FILE = "previews_offsets.npy"
METADATA_FORMAT = 1
"""Format of ``fields.json`` and its files; ``PoolMetadata.open`` refuses any other."""

N_TOKENS = "n_tokens"
"""The synthetic int field every version has: tokens per row. A pool field of that name is
left out (the token count is what a budget and a filter on it must see)."""
EXCLUDED_KEYS = ("id", "messages", "prompt", "completion")
"""Row keys that are the example itself, never metadata."""

MAX_FIELDS = 64
"""Fields stored per version (first seen first): a pool with hundreds of keys cannot blow up
every datastore version."""
MAX_DISTINCT_VALUES = 100_000
"""Distinct values a string field may have; beyond, it is free text, not a filterable label,
and its dictionary would dominate the version's size."""
PREVIEW_PROMPT_CHARS = 160
"""Characters of the prompt (first user turn, or ``prompt``) in a preview."""
PREVIEW_RESPONSE_CHARS = 120
"""Characters of the response (first assistant turn, or ``completion``) in a preview."""
PREVIEW_CHARS = PREVIEW_PROMPT_CHARS + PREVIEW_RESPONSE_CHARS
"""Characters of row text a preview holds at most (plus its "Q: " / " → A: " labels)."""
ELLIPSIS = "…"
TOP_VALUES = 20
"""Values per string/bool field that ``summaries`` lists by default."""
DECODE_CHUNK_ROWS = 65_536
"""Rows decoded at a time when an append re-encodes a base version's columns."""

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_RANGE_OPS = ("gt", "gte", "lt", "lte")
_SET_OPS = ("eq", "in_", "not_in")


# --------------------------------------------------------------------------------------------
# Rows -> records (tokenizing) -> columns (publishing)


def _collapse(text: str, limit: int) -> str:
    """``text`` on one line (whitespace runs -> one space), cut to ``limit`` characters."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    return flat[: limit - len(ELLIPSIS)].rstrip() + ELLIPSIS


def preview(example: Example) -> str:
    """A one-line preview of an example: the start of its prompt and of its response.

    The prompt is the first user turn (or ``prompt``), the response the first non-empty
    assistant turn (or ``completion``), cut to ``PREVIEW_PROMPT_CHARS`` and
    ``PREVIEW_RESPONSE_CHARS``: ``"Q: add 2 and 3 = → A: 5"`` (no ``Q:`` part without a prompt).
    """
    if example.messages is None:
        prompt, response = example.prompt or "", example.completion or ""
    else:
        turns = example.messages
        prompt = next((m["content"] for m in turns if m["role"] == "user"), "")
        response = next(
            (m["content"] for m in turns if m["role"] == "assistant" and m["content"].strip()),
            "",
        )
    answer = "A: " + _collapse(response, PREVIEW_RESPONSE_CHARS)
    question = _collapse(prompt, PREVIEW_PROMPT_CHARS)
    return f"Q: {question} → {answer}" if question else answer


def _valid_text(text: str) -> str:
    """``text`` encodable as UTF-8: a lone surrogate (possible through a JSON ``\\ud800``
    escape) becomes U+FFFD, so every stored string can be sent back as JSON."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)
    return text


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def row_record(example: Example) -> dict[str, Any]:
    """The metadata line of one kept pool row, as tokenizing writes it (JSON-serializable).

    Returns:
        ``{"f": {field: scalar or None}, "p": preview}`` plus ``"x": [fields]`` naming the
        fields whose value in this row is a list or an object (those fields are left out).
        Fields keep the row's key order; ``subtask`` (parsed out of the row by ``Example``)
        comes last.
    """
    items = list(example.metadata.items())
    if example.subtask is not None:
        items.append(("subtask", example.subtask))
    fields: dict[str, MetadataValue] = {}
    nonscalar: list[str] = []
    for key, value in items:
        if key in EXCLUDED_KEYS:
            continue
        key = _valid_text(key)
        if isinstance(value, str):
            fields[key] = _valid_text(value)
        elif _is_scalar(value):
            fields[key] = value
        else:
            nonscalar.append(key)
    record: dict[str, Any] = {"f": fields, "p": _valid_text(preview(example))}
    if nonscalar:
        record["x"] = nonscalar
    return record


def iter_record_file(path: Path) -> Iterator[dict[str, Any]]:
    """The records of a metadata lines file written while tokenizing (one JSON object a line)."""
    with path.open("r", encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def iter_store_records(meta: PoolMetadata) -> Iterator[dict[str, Any]]:
    """A stored version's rows as records again (its fields and previews), in row order, so an
    append can re-encode old and new rows together. Decoded in chunks: memory stays flat."""
    for start in range(0, meta.n, DECODE_CHUNK_ROWS):
        rows = range(start, min(meta.n, start + DECODE_CHUNK_ROWS))
        for values, text in zip(meta.values(rows), meta.previews(rows)):
            yield {"f": values, "p": text}


@dataclass(frozen=True)
class FieldInfo:
    """A stored metadata field: its name in the pool rows and the kind of its values."""

    name: str
    kind: FieldKind


@dataclass
class _FieldStats:
    """What pass 1 learns about one field."""

    kinds: set[str] = field(default_factory=set)
    nonscalar: bool = False
    big_int: bool = False


def _value_kind(value: Any) -> str | None:
    """Kind of one JSON scalar (None for a missing value: null or NaN)."""
    if value is None:
        return None
    if isinstance(value, bool):  # before int: bool is an int subclass
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return None if math.isnan(value) else "float"
    if isinstance(value, str):
        return "string"
    return "nonscalar"


def _resolve_kind(stats: _FieldStats) -> FieldKind | None:
    if not stats.kinds:
        return None
    if stats.kinds == {"int"}:
        return "float" if stats.big_int else "int"
    if stats.kinds <= {"int", "float"}:
        return "float"
    if len(stats.kinds) == 1:
        return "string" if "string" in stats.kinds else "bool"
    return "string"  # strings with anything, or bools with numbers: JSON spellings


def _as_string(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except OverflowError:  # an int past float range: as far as it goes
        return math.inf if value > 0 else -math.inf


class _StringColumn:
    def __init__(self, n: int):
        self.codes = np.full(n, -1, dtype=np.int32)
        self.lookup: dict[str, int] = {}

    def put(self, row: int, value: Any) -> bool:
        """Stores a value; False once the dictionary outgrows ``MAX_DISTINCT_VALUES``."""
        text = _valid_text(_as_string(value))
        code = self.lookup.get(text)
        if code is None:
            if len(self.lookup) >= MAX_DISTINCT_VALUES:
                return False
            code = self.lookup[text] = len(self.lookup)
        self.codes[row] = code
        return True

    def finish(self) -> tuple[np.ndarray, list[str]]:
        """Codes into the sorted dictionary: the files do not depend on the row order."""
        values = sorted(self.lookup)
        remap = np.empty(len(values) + 1, dtype=np.int32)
        remap[-1] = -1  # code -1 (missing) indexes the last slot
        for new, text in enumerate(values):
            remap[self.lookup[text]] = new
        return remap[self.codes], values


class _IntColumn:
    def __init__(self, n: int):
        self.data = np.zeros(n, dtype=np.int64)
        self.missing = np.ones(n, dtype=bool)

    def put(self, row: int, value: Any) -> bool:
        self.data[row] = value
        self.missing[row] = False
        return True


class _FloatColumn:
    def __init__(self, n: int):
        self.data = np.full(n, np.nan, dtype=np.float64)

    def put(self, row: int, value: Any) -> bool:
        self.data[row] = _as_float(value)
        return True


class _BoolColumn:
    def __init__(self, n: int):
        self.data = np.full(n, -1, dtype=np.int8)

    def put(self, row: int, value: Any) -> bool:
        self.data[row] = 1 if value else 0
        return True


_COLUMN_TYPES = {
    "string": _StringColumn,
    "int": _IntColumn,
    "float": _FloatColumn,
    "bool": _BoolColumn,
}


def _field_file(index: int, suffix: str = "") -> str:
    return f"field_{index:03d}{suffix}.npy"


def _plan_fields(
    stats: dict[str, _FieldStats], skip: Mapping[str, str]
) -> tuple[list[FieldInfo], dict[str, str]]:
    """Kinds of the fields to store (first seen first) and the reasons for the others."""
    plan: list[FieldInfo] = []
    skipped: dict[str, str] = {}
    over: list[str] = []
    for name, st in stats.items():
        kind = _resolve_kind(st)
        if name in skip:
            skipped[name] = skip[name]
        elif name == N_TOKENS:
            skipped[name] = f"{N_TOKENS!r} is reserved for the token count"
            log.warning("pool field %r left out: the name is reserved for token counts", name)
        elif st.nonscalar:
            skipped[name] = "list or object values"
            log.warning("pool field %r left out: it holds lists or objects", name)
        elif kind is None:
            skipped[name] = "always null"
            log.warning("pool field %r left out: it is null (or NaN) in every row", name)
        elif len(plan) >= MAX_FIELDS:
            skipped[name] = f"more than {MAX_FIELDS} fields"
            over.append(name)
        else:
            if st.big_int:
                log.warning("pool field %r stored as float: an integer exceeds int64", name)
            plan.append(FieldInfo(name, kind))
    if over:
        shown = ", ".join(repr(n) for n in over[:10]) + (" ..." if len(over) > 10 else "")
        log.warning("%d pool field(s) past the first %d left out: %s", len(over), MAX_FIELDS, shown)
    # Fields listed as skipped by a base version but absent from every row stay listed.
    for name, reason in skip.items():
        skipped.setdefault(name, reason)
    return plan, skipped


def write_pool_metadata(
    version_dir: Path,
    records: Callable[[], Iterable[Mapping[str, Any]]],
    n_tokens: np.ndarray,
    skip: Mapping[str, str] | None = None,
) -> list[FieldInfo]:
    """Writes ``version_dir/metadata/`` from one record per row (``row_record``'s shape).

    Replaces whatever a killed earlier attempt left there: the output depends on the records
    only, so a resumed build writes the same bytes.

    Args:
        version_dir: the (staging) version directory.
        records: returns a fresh iterator over the records, in row order; called twice (the
            kinds are known only after every row was seen).
        n_tokens: (N,) integer tokens per row after truncation.
        skip: fields to leave out whatever their values, with the reason (an append keeps out
            what its base version left out).

    Returns:
        The stored fields, in order (``n_tokens`` not included).

    Raises:
        IntegrityError: the records and ``n_tokens`` disagree on the number of rows.
    """
    skip = dict(skip or {})
    n_tokens = np.asarray(n_tokens)
    stats: dict[str, _FieldStats] = {}
    n = 0
    for record in records():
        n += 1
        for name, value in record["f"].items():
            st = stats.setdefault(name, _FieldStats())
            kind = _value_kind(value)
            if kind == "nonscalar":
                st.nonscalar = True
            elif kind is not None:
                st.kinds.add(kind)
                if kind == "int" and not _INT64_MIN <= value <= _INT64_MAX:
                    st.big_int = True
        for name in record.get("x", ()):
            stats.setdefault(name, _FieldStats()).nonscalar = True
    if n != len(n_tokens):
        raise IntegrityError(f"pool metadata: {n} rows of metadata, {len(n_tokens)} token counts")
    plan, skipped = _plan_fields(stats, skip)

    columns: dict[str, Any] = {f.name: _COLUMN_TYPES[f.kind](n) for f in plan}
    out = version_dir / METADATA_DIR
    partial = version_dir / f".{METADATA_DIR}.partial"
    for path in (out, partial):
        if path.exists():
            shutil.rmtree(path)
    partial.mkdir(parents=True)
    offsets = np.zeros(n + 1, dtype=np.int64)
    seen = 0
    with (partial / PREVIEWS_FILE).open("wb") as previews:
        for row, record in enumerate(records()):
            if row >= n:
                raise IntegrityError("pool metadata: the records changed between two passes")
            for name, value in record["f"].items():
                column = columns.get(name)
                if column is None or _value_kind(value) is None:
                    continue
                if not column.put(row, value):
                    del columns[name]
                    skipped[name] = f"more than {MAX_DISTINCT_VALUES} distinct values"
                    log.warning(
                        "pool field %r left out: more than %d distinct values (free text?)",
                        name,
                        MAX_DISTINCT_VALUES,
                    )
            text = _valid_text(str(record.get("p", ""))).encode("utf-8")
            previews.write(text)
            offsets[row + 1] = offsets[row] + len(text)
            seen = row + 1
    if seen != n:
        raise IntegrityError("pool metadata: the records changed between two passes")

    stored = [f for f in plan if f.name in columns]
    entries = []
    for index, info in enumerate(stored):
        column = columns.pop(info.name)
        entry: dict[str, Any] = {"name": info.name, "kind": info.kind, "file": _field_file(index)}
        if info.kind == "string":
            codes, values = column.finish()
            np.save(partial / entry["file"], codes)
            entry["values"] = values
        else:
            np.save(partial / entry["file"], column.data)
        if info.kind == "int":
            entry["missing_file"] = _field_file(index, "_missing")
            np.save(partial / entry["missing_file"], column.missing)
        entries.append(entry)
        del column
    np.save(partial / N_TOKENS_FILE, n_tokens.astype(np.int32))
    np.save(partial / PREVIEW_OFFSETS_FILE, offsets)
    header = {
        "format": METADATA_FORMAT,
        "n": n,
        "fields": entries,
        "skipped": [{"name": k, "reason": v} for k, v in skipped.items()],
        "n_tokens_file": N_TOKENS_FILE,
        "previews": {
            "file": PREVIEWS_FILE,
            "offsets_file": PREVIEW_OFFSETS_FILE,
            "prompt_chars": PREVIEW_PROMPT_CHARS,
            "response_chars": PREVIEW_RESPONSE_CHARS,
        },
    }
    (partial / FIELDS_FILE).write_text(json.dumps(header, indent=1) + "\n", encoding="utf-8")
    os.replace(partial, out)
    log.info(
        "pool metadata: %d rows, %d field(s)%s",
        n,
        len(stored),
        f", {len(skipped)} left out" if skipped else "",
    )
    return stored


# --------------------------------------------------------------------------------------------
# Reading and filtering


@dataclass(frozen=True)
class Condition:
    """A condition on one metadata field (the library's ``less_wire.FieldCondition``).

    Every operator given must hold. ``eq``/``in_``/``not_in`` compare exactly: a string field
    against strings, an int or float field against numbers (not bools), a bool field against
    bools. ``gt``/``gte``/``lt``/``lte`` bound an int or float field. A row missing the field
    fails every operator except ``not_in``.
    """

    eq: str | int | float | bool | None = None
    in_: tuple[str | int | float | bool, ...] | None = None
    not_in: tuple[str | int | float | bool, ...] | None = None
    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None

    def __post_init__(self) -> None:
        # Lists are accepted (as the wire model holds them); stored as tuples to stay hashable.
        for name in ("in_", "not_in"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, tuple):
                object.__setattr__(
                    self, name, tuple(value) if isinstance(value, (list, set)) else value
                )


def _ops(condition: Any) -> dict[str, Any]:
    """The operators a condition sets (a ``Condition`` or anything with its attributes, such
    as ``less_wire.FieldCondition``)."""
    ops = {}
    for name in (*_SET_OPS, *_RANGE_OPS):
        value = getattr(condition, name, None)
        if value is not None:
            ops[name] = value
    return ops


def _op_label(op: str) -> str:
    return "in" if op == "in_" else op


def _a(kind: str) -> str:
    return f"an {kind}" if kind == "int" else f"a {kind}"


def _type_name(value: Any) -> str:
    return type(value).__name__


@dataclass
class _Column:
    """One stored field, memory-mapped."""

    name: str
    kind: FieldKind
    data: np.ndarray
    missing: np.ndarray | None = None  # int fields only (True = missing)
    values: list[str] | None = None  # string fields only: the dictionary
    _lookup: dict[str, int] | None = None

    def present(self) -> np.ndarray:
        """(N,) bool: rows holding a value."""
        if self.kind == "string" or self.kind == "bool":
            return self.data >= 0
        if self.kind == "float":
            return ~np.isnan(self.data)
        if self.missing is None:
            return np.ones(len(self.data), dtype=bool)
        return ~np.asarray(self.missing)

    def code(self, value: str) -> int | None:
        if self._lookup is None:
            self._lookup = {text: i for i, text in enumerate(self.values or [])}
        return self._lookup.get(value)

    def _check_value(self, op: str, value: Any) -> None:
        if self.kind == "string":
            ok, wanted = isinstance(value, str), "a string"
        elif self.kind == "bool":
            ok, wanted = isinstance(value, bool), "true or false"
        else:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            wanted = "a number"
            if ok and isinstance(value, float) and math.isnan(value):
                ok = False
        if not ok:
            raise DataError(
                f"metadata field {self.name!r} is {_a(self.kind)} field: {_op_label(op)} takes "
                f"{wanted}, got {value!r} ({_type_name(value)})"
            )

    def isin(self, op: str, values: Sequence[Any]) -> np.ndarray:
        """(N,) bool: rows whose value is one of ``values`` (missing rows: False)."""
        if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
            raise DataError(
                f"metadata field {self.name!r}: {_op_label(op)} takes a list of values, "
                f"got {values!r}"
            )
        values = list(values)
        for value in values:
            self._check_value(op, value)
        if self.kind in ("string", "bool"):
            # A lookup table over the codes: one gather, whatever the number of values.
            size = len(self.values or []) if self.kind == "string" else 2
            table = np.zeros(size + 1, dtype=bool)  # the last slot is code -1 (missing)
            for value in values:
                code = self.code(value) if self.kind == "string" else int(value)
                if code is not None:
                    table[code] = True
            return table[self.data]
        if self.kind == "float":
            return np.isin(self.data, np.asarray([_as_float(v) for v in values], dtype=np.float64))
        exact = [iv for iv in (_exact_int(v) for v in values) if iv is not None]
        if not exact:
            return np.zeros(len(self.data), dtype=bool)
        return np.isin(self.data, np.asarray(exact, dtype=np.int64)) & self.present()

    def in_range(self, ops: Mapping[str, Any]) -> np.ndarray:
        """(N,) bool: rows within every bound of ``ops`` (missing rows: False)."""
        if self.kind not in ("int", "float"):
            names = "/".join(_op_label(o) for o in _RANGE_OPS if o in ops)
            raise DataError(
                f"metadata field {self.name!r} is {_a(self.kind)} field: {names} needs an int "
                "or float field"
            )
        for op in _RANGE_OPS:
            if op in ops:
                self._check_value(op, ops[op])
        out = self.present()
        if self.kind == "float":
            data = self.data
            for op, compare in (
                ("gt", np.greater),
                ("gte", np.greater_equal),
                ("lt", np.less),
                ("lte", np.less_equal),
            ):
                if op in ops:
                    out &= compare(data, float(ops[op]))
            return out
        lo, hi = _int_bounds(ops)
        if lo is not None and hi is not None and lo > hi:
            return np.zeros(len(self.data), dtype=bool)
        if lo is not None:
            if lo > _INT64_MAX:
                return np.zeros(len(self.data), dtype=bool)
            if lo > _INT64_MIN:
                out &= self.data >= lo
        if hi is not None:
            if hi < _INT64_MIN:
                return np.zeros(len(self.data), dtype=bool)
            if hi < _INT64_MAX:
                out &= self.data <= hi
        return out

    def mask(self, condition: Any) -> np.ndarray:
        """(N,) bool: rows meeting every operator of ``condition``."""
        ops = _ops(condition)
        if not ops:
            raise DataError(
                f"the condition on metadata field {self.name!r} needs one of eq, in, not_in, "
                "gt, gte, lt, lte"
            )
        out = np.ones(len(self.data), dtype=bool)
        if "eq" in ops:
            out &= self.isin("eq", [ops["eq"]])
        if "in_" in ops:
            out &= self.isin("in_", ops["in_"])
        if "not_in" in ops:
            # Missing rows pass: they hold none of the values.
            out &= ~self.isin("not_in", ops["not_in"])
        if any(op in ops for op in _RANGE_OPS):
            out &= self.in_range(ops)
        return out

    def python_values(self, rows: np.ndarray) -> list[MetadataValue]:
        """The values of ``rows`` as JSON scalars (None where missing)."""
        data = np.asarray(self.data[rows])
        if self.kind == "string":
            values = self.values or []
            return [None if c < 0 else values[c] for c in data.tolist()]
        if self.kind == "bool":
            return [None if c < 0 else bool(c) for c in data.tolist()]
        if self.kind == "float":
            return [None if v != v else v for v in data.tolist()]
        if self.missing is None:
            return data.tolist()
        missing = np.asarray(self.missing[rows]).tolist()
        return [None if m else v for v, m in zip(data.tolist(), missing)]


def _exact_int(value: int | float) -> int | None:
    """``value`` as an int64 if it is an integer value in range (else no int row equals it)."""
    if isinstance(value, float):
        if not value.is_integer():
            return None
        value = int(value)
    return value if _INT64_MIN <= value <= _INT64_MAX else None


def _int_bounds(ops: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """Inclusive integer bounds (None: unbounded) equivalent to float ``gt/gte/lt/lte`` on an int
    field, so the comparison is exact beyond 2**53 too. An impossible bound gives lo > hi."""
    lo = hi = None
    impossible = (1, 0)
    for op, value in ops.items():
        if op not in _RANGE_OPS:
            continue
        if isinstance(value, float) and math.isinf(value):
            if (op in ("gt", "gte")) == (value > 0):
                return impossible  # > +inf or < -inf
            continue  # > -inf or < +inf: no bound
        if op == "gt":
            bound, is_lo = math.floor(value) + 1, True
        elif op == "gte":
            bound, is_lo = math.ceil(value), True
        elif op == "lt":
            bound, is_lo = math.ceil(value) - 1, False
        else:
            bound, is_lo = math.floor(value), False
        if is_lo:
            lo = bound if lo is None else max(lo, bound)
        else:
            hi = bound if hi is None else min(hi, bound)
    return lo, hi


def _load(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise IntegrityError(f"{path}: unreadable pool metadata ({exc})") from None


class PoolMetadata:
    """The pool metadata of one datastore version, memory-mapped (``PoolMetadata.open``).

    Attributes:
        path: the version's ``metadata/`` directory.
        n: rows.
        fields: the stored pool fields in first-seen order (``n_tokens`` not included).
        n_tokens: (N,) int32 tokens per row after truncation (what training on it costs).
        skipped: pool fields left out, name -> reason.
    """

    def __init__(self, path: Path):
        try:
            header = json.loads((path / FIELDS_FILE).read_text(encoding="utf-8"))
            if header.get("format") != METADATA_FORMAT:
                raise IntegrityError(
                    f"{path / FIELDS_FILE}: unsupported pool metadata format "
                    f"{header.get('format')!r} (this code reads {METADATA_FORMAT})"
                )
            self.path = path
            self.n = int(header["n"])
            self._columns: dict[str, _Column] = {}
            for entry in header["fields"]:
                missing = entry.get("missing_file")
                column = _Column(
                    name=entry["name"],
                    kind=entry["kind"],
                    data=_load(path / entry["file"]),
                    missing=_load(path / missing) if missing else None,
                    values=entry.get("values"),
                )
                self._columns[column.name] = column
            self.skipped = {s["name"]: s["reason"] for s in header.get("skipped", [])}
            self.n_tokens = _load(path / header["n_tokens_file"])
            previews = header["previews"]
            self._offsets = _load(path / previews["offsets_file"])
            blob = path / previews["file"]
            # np.memmap refuses an empty file; an empty one holds no preview bytes anyway.
            self._blob = (
                np.memmap(blob, dtype=np.uint8, mode="r")
                if blob.stat().st_size
                else np.zeros(0, dtype=np.uint8)
            )
        except IntegrityError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise IntegrityError(f"{path}: unreadable pool metadata ({exc!r})") from None
        self.fields = [FieldInfo(c.name, c.kind) for c in self._columns.values()]
        self._columns_all = {
            **self._columns,
            N_TOKENS: _Column(N_TOKENS, "int", self.n_tokens),
        }
        for column in self._columns_all.values():
            for array in (column.data, column.missing):
                if array is not None and array.shape != (self.n,):
                    raise IntegrityError(
                        f"{path}: field {column.name!r} has shape {array.shape}, expected "
                        f"({self.n},)"
                    )
            if column.kind not in _COLUMN_TYPES:
                raise IntegrityError(f"{path}: field {column.name!r} has kind {column.kind!r}")
        if self._offsets.shape != (self.n + 1,) or int(self._offsets[-1]) != len(self._blob):
            raise IntegrityError(f"{path}: preview offsets do not match {PREVIEWS_FILE}")
        self._summaries: dict[int, list[dict[str, Any]]] = {}

    @classmethod
    def open(cls, version_dir: Path) -> PoolMetadata | None:
        """The metadata of a version, or None when it has none (versions built before it).

        Raises:
            IntegrityError: ``metadata/`` exists but is unreadable or inconsistent.
        """
        path = Path(version_dir) / METADATA_DIR
        if not (path / FIELDS_FILE).is_file():
            return None
        return cls(path)

    def _column(self, name: str) -> _Column:
        column = self._columns_all.get(name)
        if column is None:
            known = ", ".join(f"{f.name} ({f.kind})" for f in self.fields)
            known = f"{known}, {N_TOKENS} (int)" if known else f"{N_TOKENS} (int)"
            reason = self.skipped.get(name)
            reason = f" (left out of the datastore: {reason})" if reason else ""
            raise DataError(f"unknown metadata field {name!r}{reason}; fields: {known}")
        return column

    def mask(self, conditions: Mapping[str, Any]) -> np.ndarray:
        """Rows meeting every condition (``n_tokens`` is a field like the others).

        Args:
            conditions: field name -> ``Condition`` (or ``less_wire.FieldCondition``).

        Returns:
            (N,) bool, all conditions AND-ed (all True when there are none).

        Raises:
            DataError: an unknown field, a value of the wrong type for the field's kind, a
                range on a string or bool field, or a condition without any operator.
        """
        out = np.ones(self.n, dtype=bool)
        for name, condition in conditions.items():
            out &= self._column(name).mask(condition)
        return out

    def _rows(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        idx = np.asarray(rows, dtype=np.int64).reshape(-1)
        if len(idx) and (idx.min() < 0 or idx.max() >= self.n):
            bad = int(idx[(idx < 0) | (idx >= self.n)][0])
            raise DataError(f"row {bad} out of range for pool metadata of {self.n} rows")
        return idx

    def values(self, rows: Sequence[int] | np.ndarray) -> list[dict[str, MetadataValue]]:
        """Every stored field of each row, in field order (None = missing)."""
        idx = self._rows(rows)
        per_field = [(c.name, c.python_values(idx)) for c in self._columns.values()]
        return [{name: vals[i] for name, vals in per_field} for i in range(len(idx))]

    def previews(self, rows: Sequence[int] | np.ndarray) -> list[str]:
        """One-line previews of ``rows`` ("Q: <prompt start> → A: <response start>")."""
        idx = self._rows(rows)
        starts = self._offsets[idx].tolist()
        ends = self._offsets[idx + 1].tolist()
        return [bytes(self._blob[a:b]).decode("utf-8", "replace") for a, b in zip(starts, ends)]

    def summaries(self, top: int = TOP_VALUES) -> list[dict[str, Any]]:
        """One summary per field, then the synthetic ``n_tokens`` field.

        Each: ``{name, kind, n_missing, n_distinct, min, max, top_values}`` (the keys of
        ``less_wire.FieldSummary``): ``min``/``max`` for int and float fields (else None),
        ``top_values`` (``[{value, count}]``, most frequent first, ties by value, at most
        ``top``) for string and bool fields (else empty). Computed once per ``top``.
        """
        if top not in self._summaries:
            self._summaries[top] = [_summary(c, top) for c in self._columns_all.values()]
        return [dict(s, top_values=list(s["top_values"])) for s in self._summaries[top]]


def _summary(column: _Column, top: int) -> dict[str, Any]:
    present = column.present()
    n_missing = int(len(present) - np.count_nonzero(present))
    out: dict[str, Any] = {
        "name": column.name,
        "kind": column.kind,
        "n_missing": n_missing,
        "n_distinct": 0,
        "min": None,
        "max": None,
        "top_values": [],
    }
    if column.kind in ("string", "bool"):
        labels: list[Any] = (column.values or []) if column.kind == "string" else [False, True]
        codes = np.asarray(column.data)
        counts = np.bincount(codes[codes >= 0], minlength=len(labels))
        used = np.flatnonzero(counts)
        out["n_distinct"] = int(len(used))
        # String dictionaries are sorted, so the code order is the value order for ties.
        order = used[np.lexsort((used, -counts[used]))][: max(0, top)]
        out["top_values"] = [{"value": labels[i], "count": int(counts[i])} for i in order]
        return out
    values = np.asarray(column.data)[present]
    if len(values):
        distinct = np.unique(values)
        out["n_distinct"] = int(len(distinct))
        cast = int if column.kind == "int" else float
        out["min"], out["max"] = cast(distinct[0]), cast(distinct[-1])
    return out
