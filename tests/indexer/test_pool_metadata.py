"""Pool metadata stored in every datastore version: columns, token counts, previews, filters."""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from indexer import pool_metadata as pm
from indexer.append import AppendRequest, append_rows
from indexer.cli import main
from indexer.datastore import CHECKSUMS, MANIFEST, Datastore
from indexer.fsutil import sha256_file
from indexer.model_io import load_tokenizer
from indexer.pool_metadata import (
    METADATA_DIR,
    N_TOKENS,
    PREVIEW_PROMPT_CHARS,
    PREVIEW_RESPONSE_CHARS,
    Condition,
    FieldInfo,
    PoolMetadata,
    preview,
    row_record,
    write_pool_metadata,
)
from indexer.tokenized_pool import METADATA_ROWS, tokenize_pool
from less_core.data import Example, tokenize_example
from less_core.errors import DataError
from less_wire import FieldCondition, FieldSummary
from tests.conftest import TOKENS, make_rows, write_jsonl

# --------------------------------------------------------------------------------------------
# Helpers


def write_records(tmp_path: Path, rows: list[dict], n_tokens=None, name="v") -> PoolMetadata:
    """Stores the metadata of pool ``rows`` (dicts as in a JSONL pool) and opens it."""
    records = [row_record(Example.from_dict(r)) for r in rows]
    # Through JSON, as tokenizing writes them.
    records = [json.loads(json.dumps(r)) for r in records]
    version = tmp_path / name
    version.mkdir(parents=True, exist_ok=True)
    tokens = np.arange(len(rows)) + 1 if n_tokens is None else np.asarray(n_tokens)
    write_pool_metadata(version, lambda: iter(records), tokens)
    meta = PoolMetadata.open(version)
    assert meta is not None
    return meta


def pool_row(index: int, /, **fields) -> dict:
    return {
        "id": f"r{index}",
        "prompt": f"question {index}",
        "completion": f"answer {index}",
        **fields,
    }


def tree_bytes(path: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


def reference_match(value, condition: Condition) -> bool:
    """The documented semantics, one row at a time in plain Python (the numpy mask's oracle)."""
    ops = {
        k: getattr(condition, k)
        for k in ("eq", "in_", "not_in", "gt", "gte", "lt", "lte")
        if getattr(condition, k) is not None
    }
    if value is None:
        return set(ops) <= {"not_in"}
    checks = {
        "eq": lambda v: value == v,
        "in_": lambda v: any(value == x for x in v),
        "not_in": lambda v: all(value != x for x in v),
        "gt": lambda v: value > v,
        "gte": lambda v: value >= v,
        "lt": lambda v: value < v,
        "lte": lambda v: value <= v,
    }
    return all(checks[k](v) for k, v in ops.items())


# --------------------------------------------------------------------------------------------
# Columns, kinds, skipped fields (no model needed)


def test_kinds_mixed_values_and_round_trip(tmp_path):
    rows = [
        pool_row(0, s="a", i=3, f=1.5, b=True, num=1, mix="x", bn=True, big=1, nan=1.0),
        pool_row(1, s=None, i=-(2**62), f=2, b=False, num=2.5, mix=3, bn=0, big=2**70),
        pool_row(2, s="b", f=None, num=None, mix=True, bn=None, nan=float("nan")),
        pool_row(3, s="a", i=2**63 - 1, b=None, mix=1.5, big=None),
    ]
    meta = write_records(tmp_path, rows)
    assert meta.n == 4
    assert meta.fields == [
        FieldInfo("s", "string"),
        FieldInfo("i", "int"),
        FieldInfo("f", "float"),
        FieldInfo("b", "bool"),
        FieldInfo("num", "float"),  # int + float
        FieldInfo("mix", "string"),  # strings with anything: JSON spellings
        FieldInfo("bn", "string"),  # bools with numbers
        FieldInfo("big", "float"),  # an int past int64
        FieldInfo("nan", "float"),
    ]
    values = meta.values(range(4))
    assert values[0] == {
        "s": "a",
        "i": 3,
        "f": 1.5,
        "b": True,
        "num": 1.0,
        "mix": "x",
        "bn": "true",
        "big": 1.0,
        "nan": 1.0,
    }
    assert values[1]["s"] is None and values[1]["i"] == -(2**62) and values[1]["f"] == 2.0
    assert values[1]["mix"] == "3" and values[1]["bn"] == "0" and values[1]["big"] == 2.0**70
    assert values[2]["i"] is None and values[2]["mix"] == "true" and values[2]["bn"] is None
    assert values[2]["nan"] is None  # NaN is missing
    assert values[3]["i"] == 2**63 - 1 and values[3]["mix"] == "1.5" and values[3]["b"] is None
    assert isinstance(values[0]["i"], int) and isinstance(values[0]["num"], float)
    assert meta.values([3, 0]) == [values[3], values[0]]
    np.testing.assert_array_equal(meta.n_tokens, [1, 2, 3, 4])
    assert meta.n_tokens.dtype == np.int32
    header = json.loads((meta.path / "fields.json").read_text())
    assert header["fields"][0]["values"] == ["a", "b"]  # sorted dictionary
    # Files are named by index, not by the (arbitrary) field name.
    assert {e["file"] for e in header["fields"]} == {f"field_{i:03d}.npy" for i in range(9)}
    assert header["fields"][1]["missing_file"] == "field_001_missing.npy"


def test_skipped_fields_are_logged_once_and_listed(tmp_path, caplog):
    rows = [
        pool_row(0, tags=["a"], keep=1, nulls=None, n_tokens=5, subtask="math"),
        pool_row(1, tags="b", keep=2, obj={"a": 1}),
        pool_row(2, keep=3, obj=None, **{"odd name/..\n": "x"}),
    ]
    with caplog.at_level(logging.WARNING, logger="indexer.pool_metadata"):
        meta = write_records(tmp_path, rows)
    assert [f.name for f in meta.fields] == ["keep", "subtask", "odd name/..\n"]
    assert set(meta.skipped) == {"tags", "nulls", "n_tokens", "obj"}
    warned = [r.getMessage() for r in caplog.records]
    for name in ("tags", "nulls", "n_tokens", "obj"):
        assert sum(repr(name) in m for m in warned) == 1, (name, warned)
    assert meta.values([0, 2]) == [
        {"keep": 1, "subtask": "math", "odd name/..\n": None},
        {"keep": 3, "subtask": None, "odd name/..\n": "x"},
    ]
    with pytest.raises(DataError, match=r"'tags' \(left out of the datastore: list or object"):
        meta.mask({"tags": Condition(eq="b")})
    # The token count is never shadowed by a pool field of that name.
    assert meta.mask({N_TOKENS: Condition(eq=1)}).tolist() == [True, False, False]


def test_field_and_dictionary_caps(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(pm, "MAX_FIELDS", 3)
    monkeypatch.setattr(pm, "MAX_DISTINCT_VALUES", 4)
    rows = [pool_row(i, a=i % 2, free=f"text {i}", label=f"l{i % 3}", c=1, d=2) for i in range(6)]
    with caplog.at_level(logging.WARNING, logger="indexer.pool_metadata"):
        meta = write_records(tmp_path, rows)
    # free is past the dictionary cap: left out, and the fields after the cap too.
    assert [f.name for f in meta.fields] == ["a", "label"]
    assert meta.skipped["free"] == "more than 4 distinct values"
    assert meta.skipped["c"] == meta.skipped["d"] == "more than 3 fields"
    assert any("'free'" in r.getMessage() for r in caplog.records)
    assert any("2 pool field(s) past the first 3" in r.getMessage() for r in caplog.records)
    assert [f["file"] for f in json.loads((meta.path / "fields.json").read_text())["fields"]] == [
        "field_000.npy",
        "field_001.npy",
    ]


def test_output_is_deterministic_and_independent_of_a_rerun(tmp_path):
    rows = [pool_row(i, s=random.Random(i).choice("xyz"), n=i, f=i / 7) for i in range(40)]
    a = write_records(tmp_path, rows, name="a")
    b = write_records(tmp_path, rows, name="b")
    assert tree_bytes(a.path) == tree_bytes(b.path)
    # A rerun over a partial earlier attempt replaces it.
    (b.path.parent / ".metadata.partial").mkdir()
    (b.path / "stale.npy").write_bytes(b"x")
    again = write_records(tmp_path, rows, name="b")
    assert tree_bytes(again.path) == tree_bytes(a.path)
    assert not (again.path.parent / ".metadata.partial").exists()


def test_previews(tmp_path):
    long_q, long_a = "word " * 100, "reply\n\n " * 100
    rows = [
        pool_row(0),
        {
            "id": "c",
            "messages": [
                {"role": "system", "content": "be nice"},
                {"role": "user", "content": "  hello\n  there "},
                {"role": "assistant", "content": " "},
                {"role": "user", "content": "again"},
                {"role": "assistant", "content": "héllo → ünïcode"},
            ],
        },
        {"id": "l", "prompt": long_q, "completion": long_a},
        {"id": "a", "messages": [{"role": "assistant", "content": "only"}]},
    ]
    meta = write_records(tmp_path, rows)
    got = meta.previews(range(4))
    assert got[0] == "Q: question 0 → A: answer 0"
    assert got[1] == "Q: hello there → A: héllo → ünïcode"
    question, answer = got[2].split(" → A: ")
    assert len(question) == len("Q: ") + PREVIEW_PROMPT_CHARS and question.endswith("…")
    assert len(answer) == PREVIEW_RESPONSE_CHARS and answer.endswith("…")
    assert "\n" not in got[2] and "  " not in got[2]
    assert got[3] == "A: only"
    assert meta.previews([3, 1]) == [got[3], got[1]]
    assert got == [preview(Example.from_dict(r)) for r in rows]


def test_lone_surrogates_are_replaced(tmp_path):
    """A JSON escape can put a lone surrogate in a string: stored as U+FFFD, so everything read
    back encodes as UTF-8 (the service answers in JSON)."""
    rows = [json.loads('{"id": "s", "prompt": "q\\ud800", "completion": "a", "s": "x\\udc00"}')]
    meta = write_records(tmp_path, rows)
    assert meta.values([0]) == [{"s": "x\ufffd"}]
    assert meta.previews([0]) == ["Q: q\ufffd → A: a"]
    json.dumps([meta.values([0]), meta.previews([0])], ensure_ascii=False).encode("utf-8")
    assert meta.mask({"s": Condition(eq="x\ufffd")}).tolist() == [True]


# --------------------------------------------------------------------------------------------
# Filters


def random_rows(n: int, seed: int) -> list[dict]:
    r = random.Random(seed)
    ints = [-5, 0, 1, 2, 3, 2**53 + 1, 2**62, -(2**63)]
    rows = []
    for i in range(n):
        row = pool_row(i)
        for name, draw in (
            ("s", lambda: r.choice(["a", "b", "c", "d"])),
            ("i", lambda: r.choice(ints)),
            ("f", lambda: r.choice([-1.5, 0.0, 0.25, 2.0, 3.5, 1e300])),
            ("b", lambda: r.random() < 0.5),
        ):
            roll = r.random()
            if roll < 0.7:
                row[name] = draw()
            elif roll < 0.85:
                row[name] = None  # null: missing like an absent key
        rows.append(row)
    return rows


def random_condition(r: random.Random, kind: str) -> Condition:
    pools = {
        "string": ["a", "b", "c", "d", "zz"],
        "int": [-5, 0, 1, 2, 3, 2.0, 2.5, 2**53 + 1, 2**62, -(2**63), 2**64, -7.25],
        "float": [-1.5, 0.0, 0.25, 2, 2.0, 3.5, 1e300, 7],
        "bool": [True, False],
    }
    values = pools[kind]
    ops: dict = {}
    for op in ("eq", "in_", "not_in") + (
        ("gt", "gte", "lt", "lte") if kind in ("int", "float") else ()
    ):
        if r.random() < 0.35:
            if op == "eq":
                ops[op] = r.choice(values)
            elif op in ("in_", "not_in"):
                ops[op] = tuple(r.sample(values, r.randint(1, min(3, len(values)))))
            else:
                ops[op] = r.choice([v for v in values if v < 2**63] + [math.inf, -math.inf])
    if not ops:
        ops["not_in"] = (values[0],)
    return Condition(**ops)


def test_mask_equals_a_python_loop(tmp_path):
    rows = random_rows(300, seed=3)
    tokens = np.random.default_rng(0).integers(1, 50, len(rows))
    meta = write_records(tmp_path, rows, n_tokens=tokens)
    kinds = {f.name: f.kind for f in meta.fields} | {N_TOKENS: "int"}
    assert kinds == {"s": "string", "i": "int", "f": "float", "b": "bool", N_TOKENS: "int"}
    values = meta.values(range(len(rows)))
    for row, v in zip(rows, values):
        assert v == {k: row.get(k) for k in ("s", "i", "f", "b")}
    r = random.Random(5)
    checked = 0
    for _ in range(400):
        names = r.sample(sorted(kinds), r.randint(1, 3))
        conditions = {name: random_condition(r, kinds[name]) for name in names}
        got = meta.mask(conditions)
        expected = [
            all(
                reference_match(int(tokens[i]) if name == N_TOKENS else values[i][name], cond)
                for name, cond in conditions.items()
            )
            for i in range(len(rows))
        ]
        assert got.dtype == bool and got.shape == (len(rows),)
        assert got.tolist() == expected, conditions
        checked += int(got.any()) + int(not got.all())
    assert checked > 200  # most conditions keep some rows and drop others
    assert meta.mask({}).all()


def test_mask_cases_by_hand(tmp_path):
    rows = [
        pool_row(0, lang="en", n=1, score=0.5, ok=True),
        pool_row(1, lang="fr", n=2, score=1.5, ok=False),
        pool_row(2, lang=None, score=None),
        pool_row(3, lang="en", n=3, score=2.5, ok=True),
    ]
    meta = write_records(tmp_path, rows, n_tokens=[10, 20, 30, 40])

    def rows_of(**conditions) -> list[int]:
        return np.flatnonzero(meta.mask(conditions)).tolist()

    assert rows_of(lang=Condition(eq="en")) == [0, 3]
    assert rows_of(lang=Condition(in_=("fr", "de"))) == [1]
    assert rows_of(lang=Condition(not_in=("en",))) == [1, 2]  # missing passes not_in only
    assert rows_of(lang=Condition(eq="xx")) == []
    assert rows_of(n=Condition(gt=1.5)) == [1, 3]
    assert rows_of(n=Condition(gte=2, lt=3)) == [1]
    assert rows_of(n=Condition(eq=2.0)) == [1]
    assert rows_of(n=Condition(eq=2.5)) == []
    assert rows_of(score=Condition(lte=1.5)) == [0, 1]
    assert rows_of(score=Condition(eq=1)) == []
    assert rows_of(ok=Condition(eq=False)) == [1]
    assert rows_of(ok=Condition(not_in=(True,))) == [1, 2]
    assert rows_of(n_tokens=Condition(gte=20, lte=30)) == [1, 2]
    assert rows_of(n_tokens=Condition(in_=(10, 40.0))) == [0, 3]
    assert rows_of(lang=Condition(eq="en"), n_tokens=Condition(gt=10)) == [3]
    # Lists are taken for in/not_in, and the wire model works as a condition too.
    assert rows_of(lang=Condition(in_=["en"])) == [0, 3]
    wire = FieldCondition.model_validate({"in": ["fr", "en"], "not_in": ["en"]})
    assert rows_of(lang=wire) == [1]


def test_mask_on_a_million_rows_is_vectorised(tmp_path):
    """1M rows, built with numpy (the writer is not what this measures); a whole filter takes
    milliseconds. The bound is loose for a busy shared machine, yet a per-row loop misses it."""
    import time

    n, rng = 1_000_000, np.random.default_rng(0)
    rows = [pool_row(i, s=f"v{i % 20}", k=i, x=i / 3, b=i % 2 == 0) for i in range(40)]
    meta = write_records(tmp_path, rows)
    path = meta.path
    header = json.loads((path / "fields.json").read_text())
    header["n"] = n
    np.save(path / "field_000.npy", rng.integers(-1, 20, n).astype(np.int32))
    np.save(path / "field_001.npy", rng.integers(0, 100, n).astype(np.int64))
    np.save(path / "field_001_missing.npy", rng.random(n) < 0.1)
    np.save(path / "field_002.npy", rng.random(n))
    np.save(path / "field_003.npy", rng.integers(-1, 2, n).astype(np.int8))
    np.save(path / "n_tokens.npy", rng.integers(1, 2048, n).astype(np.int32))
    np.save(path / "previews_offsets.npy", np.zeros(n + 1, dtype=np.int64))
    (path / "previews.bin").write_bytes(b"")
    (path / "fields.json").write_text(json.dumps(header))
    big = PoolMetadata.open(path.parent)
    conditions = {
        "s": Condition(in_=tuple(f"v{i}" for i in range(5))),
        "k": Condition(gte=10, lt=90),
        "x": Condition(gt=0.2),
        "b": Condition(eq=True),
        N_TOKENS: Condition(lte=1024),
    }
    big.mask(conditions)  # page the files in
    t0 = time.perf_counter()
    mask = big.mask(conditions)
    assert time.perf_counter() - t0 < 1.0
    assert 0 < mask.sum() < n


@pytest.mark.parametrize(
    "conditions, message",
    [
        (
            {"nope": Condition(eq=1)},
            r"unknown metadata field 'nope'; fields: lang \(string\), "
            r"n \(int\), score \(float\), ok \(bool\), n_tokens \(int\)",
        ),
        ({"lang": Condition(eq=1)}, r"'lang' is a string field: eq takes a string, got 1 \(int\)"),
        ({"lang": Condition(in_=("en", True))}, r"'lang' is a string field: in takes a string"),
        ({"n": Condition(eq="1")}, r"'n' is an int field: eq takes a number, got '1' \(str\)"),
        ({"n": Condition(not_in=(True,))}, r"'n' is an int field: not_in takes a number"),
        ({"score": Condition(eq=math.nan)}, r"'score' is a float field: eq takes a number"),
        ({"score": Condition(gt=True)}, r"'score' is a float field: gt takes a number"),
        ({"ok": Condition(eq=1)}, r"'ok' is a bool field: eq takes true or false, got 1"),
        ({"lang": Condition(gt=1)}, r"'lang' is a string field: gt needs an int or float"),
        ({"ok": Condition(gte=0, lt=1)}, r"'ok' is a bool field: gte/lt needs an int or float"),
        ({"n_tokens": Condition(eq="5")}, r"'n_tokens' is an int field"),
        ({"n": Condition()}, r"condition on metadata field 'n' needs one of eq, in, not_in"),
        ({"lang": Condition(in_="en")}, r"'lang': in takes a list of values, got 'en'"),
    ],
)
def test_misuse_raises_data_error(tmp_path, conditions, message):
    rows = [pool_row(0, lang="en", n=1, score=0.5, ok=True), pool_row(1, lang="fr", n=2)]
    meta = write_records(tmp_path, rows)
    with pytest.raises(DataError, match=message) as info:
        meta.mask(conditions)
    assert "\n" not in str(info.value)


def test_rows_out_of_range_raise_data_error(tmp_path):
    meta = write_records(tmp_path, [pool_row(0, a=1)])
    for call in (meta.values, meta.previews):
        with pytest.raises(DataError, match="row 1 out of range"):
            call([0, 1])
        assert call([]) == []


def test_summaries_equal_counters(tmp_path):
    rows = random_rows(500, seed=8)
    tokens = np.random.default_rng(1).integers(1, 9, len(rows))
    meta = write_records(tmp_path, rows, n_tokens=tokens)
    summaries = meta.summaries(top=3)
    assert [s["name"] for s in summaries] == [f.name for f in meta.fields] + [N_TOKENS]
    assert {f.name for f in meta.fields} == {"s", "i", "f", "b"}
    columns = {name: [r.get(name) for r in rows] for name in ("s", "i", "f", "b")}
    columns[N_TOKENS] = tokens.tolist()
    for s in summaries:
        FieldSummary.model_validate(s)  # the wire's keys and types
        values = columns[s["name"]]
        present = [v for v in values if v is not None]
        counts = Counter(present)
        assert s["n_missing"] == len(values) - len(present)
        assert s["n_distinct"] == len(counts)
        if s["kind"] in ("string", "bool"):
            ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
            assert s["top_values"] == [{"value": v, "count": c} for v, c in ranked]
            assert s["min"] is None and s["max"] is None
        else:
            assert (s["min"], s["max"]) == (min(present), max(present))
            assert type(s["min"]) is (int if s["kind"] == "int" else float)
            assert s["top_values"] == []
    assert meta.summaries(top=3) == summaries  # cached, and copies


def test_summaries_break_ties_by_value(tmp_path):
    rows = [pool_row(i, s=v) for i, v in enumerate(["b", "a", "c", "a", "b", "d"])]
    meta = write_records(tmp_path, rows)
    top = meta.summaries()[0]["top_values"]
    assert [(t["value"], t["count"]) for t in top] == [("a", 2), ("b", 2), ("c", 1), ("d", 1)]


# --------------------------------------------------------------------------------------------
# In built and appended datastores


def test_built_datastore_stores_the_pool_metadata(datastore_root, pool_path, tiny_model_dir):
    store = Datastore.open(datastore_root)
    meta = store.metadata
    assert meta is not None and meta is store.metadata  # cached
    pool = [json.loads(line) for line in pool_path.read_text().splitlines()]
    assert [r["id"] for r in pool] == store.ids
    assert meta.fields == [
        FieldInfo("task", "string"),
        FieldInfo("source", "string"),
        FieldInfo("difficulty", "int"),
    ]
    assert [(f.name, f.kind) for f in store.manifest.metadata.fields] == [
        (f.name, f.kind) for f in meta.fields
    ]
    assert store.manifest.metadata.has_previews
    expected = [{k: r.get(k) for k in ("task", "source", "difficulty")} for r in pool]
    assert meta.values(range(store.n)) == expected
    assert any(v["difficulty"] is None for v in expected)
    tokenizer = load_tokenizer(tiny_model_dir)
    examples = [Example.from_dict(r) for r in pool]
    lengths = [len(tokenize_example(tokenizer, e, TOKENS.max_length).input_ids) for e in examples]
    assert meta.n_tokens.tolist() == lengths
    assert meta.previews(range(store.n)) == [preview(e) for e in examples]
    assert meta.previews([0])[0].startswith("Q: add ") and " = → A: " in meta.previews([0])[0]
    # Covered by the checksums like every other file.
    sums = json.loads((store.path / CHECKSUMS).read_text())
    assert {f"{METADATA_DIR}/fields.json", f"{METADATA_DIR}/n_tokens.npy"} <= set(sums)
    assert all(str(p.relative_to(store.path)) in sums for p in meta.path.iterdir())
    assert store.verify_checksums() == []
    hard = meta.mask({"task": Condition(in_=("add", "rev")), "difficulty": Condition(gte=3)})
    assert [store.ids[i] for i in np.flatnonzero(hard)] == [
        r["id"]
        for r in pool
        if r["task"] in ("add", "rev") and r.get("difficulty") is not None and r["difficulty"] >= 3
    ]


def test_metadata_does_not_depend_on_sharding(datastore_root, sharded_datastore_root):
    """Two versions of one pool (one shard, three shards): the same metadata bytes."""
    one, three = Datastore.open(datastore_root), Datastore.open(sharded_datastore_root)
    assert one.version != three.version and len(three.shards) == 3
    assert tree_bytes(one.path / METADATA_DIR) == tree_bytes(three.path / METADATA_DIR)


def test_tokenized_pool_without_metadata_lines_gets_them(tmp_path, tiny_model_dir, pool_path):
    """A tokenized pool finished by older code (no metadata lines): written when resumed."""
    tokenizer = load_tokenizer(tiny_model_dir)
    out = tmp_path / "tokens"
    tokenize_pool(pool_path, tokenizer, TOKENS.max_length, out)
    lines = (out / METADATA_ROWS).read_text()
    assert len(lines.splitlines()) == 48
    (out / METADATA_ROWS).unlink()
    tokenize_pool(pool_path, tokenizer, TOKENS.max_length, out)
    assert (out / METADATA_ROWS).read_text() == lines


# Appended rows: a string where the base has ints (the field becomes a string field), a new
# field, and a row truncated away (skipped: its fields must not appear).
def appended_rows() -> list[dict]:
    rows = make_rows(1, seed=21, prefix="m-")
    rows[0]["difficulty"] = "hard"
    rows[1]["lang"] = "fr"
    too_long = {"id": "m-long", "prompt": "add " * 100 + "= ", "completion": "1", "only": 1}
    return rows + [too_long]


def strip_metadata(version_dir: Path) -> None:
    """Makes a version look as if built before pool metadata was stored."""
    shutil.rmtree(version_dir / METADATA_DIR)
    manifest = json.loads((version_dir / MANIFEST).read_text())
    del manifest["metadata"]
    (version_dir / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    sums = json.loads((version_dir / CHECKSUMS).read_text())
    sums = {k: v for k, v in sums.items() if not k.startswith(f"{METADATA_DIR}/")}
    sums[MANIFEST] = sha256_file(version_dir / MANIFEST)
    (version_dir / CHECKSUMS).write_text(json.dumps(sums, indent=2, sort_keys=True) + "\n")


def test_append_keeps_old_and_new_rows_metadata(
    tmp_path, datastore_root, pool_path, tiny_model_dir, warmup_dir
):
    root = tmp_path / "tiny"
    shutil.copytree(datastore_root, root)
    base = Datastore.open(root)
    new_file = write_jsonl(tmp_path / "new.jsonl", appended_rows())
    append_rows(AppendRequest(root, tiny_model_dir, new_file, warmup_dir, device="cpu"))
    store = Datastore.open(root)
    assert store.version != base.version and store.n == base.n + 4
    meta = store.metadata
    assert meta is not None
    assert meta.fields == [
        FieldInfo("task", "string"),
        FieldInfo("source", "string"),
        FieldInfo("difficulty", "string"),  # re-derived: ints and "hard"
        FieldInfo("lang", "string"),
    ]
    assert store.manifest.metadata is not None
    assert [f.kind for f in store.manifest.metadata.fields] == ["string"] * 4
    kept = [json.loads(line) for line in pool_path.read_text().splitlines()]
    kept += appended_rows()[:4]
    assert [r["id"] for r in kept] == store.ids

    def spelled(v):
        return None if v is None else v if isinstance(v, str) else json.dumps(v)

    assert meta.values(range(store.n)) == [
        {
            "task": r["task"],
            "source": r["source"],
            "difficulty": spelled(r.get("difficulty")),
            "lang": r.get("lang"),
        }
        for r in kept
    ]
    base_meta = base.metadata
    assert meta.n_tokens[: base.n].tolist() == base_meta.n_tokens.tolist()
    tokenizer = load_tokenizer(tiny_model_dir)
    assert meta.n_tokens[base.n :].tolist() == [
        len(tokenize_example(tokenizer, Example.from_dict(r), TOKENS.max_length).input_ids)
        for r in kept[base.n :]
    ]
    assert meta.previews(range(store.n)) == [preview(Example.from_dict(r)) for r in kept]
    assert meta.mask({"difficulty": Condition(eq="hard")}).tolist() == [False] * base.n + [
        True,
        False,
        False,
        False,
    ]
    assert store.verify_checksums() == []
    # The base version is untouched.
    assert Datastore.open(root, base.version).metadata.fields[2] == FieldInfo("difficulty", "int")


def test_version_without_metadata_opens_and_appends_without_it(
    tmp_path, datastore_root, tiny_model_dir, warmup_dir, capsys, caplog
):
    root = tmp_path / "old"
    shutil.copytree(datastore_root, root)
    old = Datastore.open(root)
    strip_metadata(old.path)
    old = Datastore.open(root)
    assert old.metadata is None and old.manifest.metadata is None
    assert old.verify_checksums() == []
    assert main(["info", "--datastore", str(root)]) == 0
    assert "fields     none stored" in capsys.readouterr().out
    new_file = write_jsonl(tmp_path / "new.jsonl", make_rows(1, seed=22, prefix="o-"))
    with caplog.at_level(logging.WARNING, logger="indexer.append"):
        append_rows(AppendRequest(root, tiny_model_dir, new_file, warmup_dir, device="cpu"))
    store = Datastore.open(root)
    assert store.version != old.version and store.n == old.n + 4
    assert store.metadata is None and store.manifest.metadata is None
    assert not (store.path / METADATA_DIR).exists()
    assert store.verify_checksums() == []
    assert any("has no pool metadata" in r.getMessage() for r in caplog.records)


def test_cli_info_shows_the_fields(datastore_root, capsys):
    assert main(["info", "--datastore", str(datastore_root)]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("  field ")]
    assert [line.split()[1:3] for line in lines] == [
        ["task", "string"],
        ["source", "string"],
        ["difficulty", "int"],
        [N_TOKENS, "int"],
    ]
    assert '"add" (12)' in lines[0] and "4 distinct, 0 missing" in lines[0]
    assert "1 .. 5" in lines[2]
