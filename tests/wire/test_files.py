"""The shared file formats (less_wire.files): targets JSONL in, selection JSONL out."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from less_wire import (
    InputFileError,
    SelectedExample,
    SelectionRecord,
    load_targets_jsonl,
    read_selection,
    write_selected_ids,
    write_selected_rows,
)


def write_lines(path: Path, *lines: str) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def test_load_targets_reads_both_formats_and_skips_blank_lines(tmp_path):
    path = write_lines(
        tmp_path / "targets.jsonl",
        json.dumps({"id": "a", **CHAT, "task": "greetings"}),
        "",
        json.dumps({"prompt": "2+2=", "completion": "4", "subtask": "math"}),
    )
    first, second = load_targets_jsonl(path)
    assert first.id == "a"
    assert [m.role for m in first.messages] == ["user", "assistant"]
    assert (second.prompt, second.completion, second.subtask) == ("2+2=", "4", "math")


@pytest.mark.parametrize(
    ("bad_line", "reason"),
    [
        ('{"prompt": "x", "completion": ', "invalid JSON"),
        ('["prompt", "completion"]', "expected a JSON object, got list"),
        ('{"prompt": "x"}', "both 'prompt' and 'completion'"),
        ('{"prompt": "x", "completion": "   "}', "'completion' must not be empty"),
        ('{"messages": [{"role": "user", "content": "q"}]}', "at least one assistant turn"),
        ('{"messages": [{"role": "robot", "content": "q"}]}', "messages.0.role"),
    ],
)
def test_load_targets_errors_name_the_line(tmp_path, bad_line, reason):
    path = write_lines(tmp_path / "t.jsonl", json.dumps(CHAT), "", bad_line, json.dumps(CHAT))
    with pytest.raises(InputFileError) as info:
        load_targets_jsonl(path)
    message = str(info.value)
    assert message.startswith(f"{path}:3: ")
    assert reason in message
    assert isinstance(info.value, ValueError)


def test_load_targets_refuses_an_empty_file(tmp_path):
    path = write_lines(tmp_path / "empty.jsonl", "", "  ")
    with pytest.raises(InputFileError, match="no target examples"):
        load_targets_jsonl(path)


def test_load_targets_missing_file_is_an_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_targets_jsonl(tmp_path / "absent.jsonl")


SELECTION = [
    SelectedExample(id="p4", score=0.9, subtask="math"),
    SelectedExample(id="7", score=0.8, subtask=None),
    SelectedExample(id="p1", score=0.1, subtask="geo"),
]


def test_write_selected_ids_as_jsonl(tmp_path):
    out = tmp_path / "selected.jsonl"
    assert write_selected_ids(iter(SELECTION), out) == 3
    assert read_jsonl(out) == [
        {"rank": 1, "id": "p4", "score": 0.9, "subtask": "math"},
        {"rank": 2, "id": "7", "score": 0.8, "subtask": None},
        {"rank": 3, "id": "p1", "score": 0.1, "subtask": "geo"},
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["selected.jsonl"]  # no temporary left
    assert read_selection(out) == [
        SelectionRecord(rank=i + 1, **e.model_dump()) for i, e in enumerate(SELECTION)
    ]


def test_read_selection_names_a_bad_line(tmp_path):
    path = write_lines(
        tmp_path / "s.jsonl",
        '{"rank": 1, "id": "a", "score": 1, "subtask": null}',
        '{"rank": 0, "id": "b", "score": 1, "subtask": null}',
    )
    with pytest.raises(InputFileError, match=r"s.jsonl:2: not a selection record: rank"):
        read_selection(path)


def test_write_selected_ids_to_a_stream():
    stream = io.StringIO()
    write_selected_ids(SELECTION[:1], stream)
    assert stream.getvalue() == '{"rank":1,"id":"p4","score":0.9,"subtask":"math"}\n'


@pytest.fixture
def pool(tmp_path) -> Path:
    rows = [
        {"id": "p0", "messages": [], "task": "a"},
        {"id": "p1", "messages": [{"role": "user", "content": "où?"}], "task": "geo"},
        {"id": 7, "messages": [], "task": "b"},  # integer ids match their decimal string
        {"id": "p3", "messages": [], "task": "c", "score": "stale"},
        {"id": "p4", "messages": [{"role": "assistant", "content": "4"}], "task": "math"},
    ]
    lines = [json.dumps(row, ensure_ascii=False) for row in rows]
    lines.insert(2, "")
    return write_lines(tmp_path / "pool.jsonl", *lines)


def test_write_selected_rows_joins_the_pool_in_selection_order(tmp_path, pool):
    out = tmp_path / "rows.jsonl"
    assert write_selected_rows(SELECTION, pool, out) == 3
    assert read_jsonl(out) == [
        {
            "id": "p4",
            "messages": [{"role": "assistant", "content": "4"}],
            "task": "math",
            "rank": 1,
            "score": 0.9,
            "subtask": "math",
        },
        {"id": 7, "messages": [], "task": "b", "rank": 2, "score": 0.8, "subtask": None},
        {
            "id": "p1",
            "messages": [{"role": "user", "content": "où?"}],
            "task": "geo",
            "rank": 3,
            "score": 0.1,
            "subtask": "geo",
        },
    ]
    assert "où?" in out.read_text(encoding="utf-8")  # kept as text, not \\u-escaped


def test_write_selected_rows_replaces_a_pool_score(tmp_path, pool):
    out = tmp_path / "rows.jsonl"
    write_selected_rows([SelectedExample(id="p3", score=0.5, subtask=None)], pool, out)
    assert read_jsonl(out)[0]["score"] == 0.5


def test_write_selected_rows_missing_id_writes_nothing(tmp_path, pool):
    out = tmp_path / "rows.jsonl"
    selection = [*SELECTION, SelectedExample(id="gone", score=0.0, subtask=None)]
    with pytest.raises(InputFileError, match=r"1 selected id\(s\) not in the pool: 'gone'"):
        write_selected_rows(selection, pool, out)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pool.jsonl"]


def test_write_selected_rows_lists_a_few_missing_ids(tmp_path, pool):
    selection = [SelectedExample(id=f"x{i}", score=None, subtask=None) for i in range(8)]
    with pytest.raises(InputFileError, match=r"8 selected id\(s\).*'x4' and 3 more"):
        write_selected_rows(selection, pool, tmp_path / "rows.jsonl")


def test_write_selected_rows_refuses_a_duplicated_selected_id(tmp_path):
    pool = write_lines(tmp_path / "pool.jsonl", '{"id": "a"}', '{"id": "b"}', '{"id": "a"}')
    with pytest.raises(InputFileError, match=r"pool.jsonl:3: id 'a' appears twice"):
        write_selected_rows([SelectedExample(id="a", score=1, subtask=None)], pool, io.StringIO())


@pytest.mark.parametrize(
    ("bad_line", "reason"),
    [("{not json", "invalid JSON"), ('{"text": "no id"}', "no string 'id'"), ("3", "JSON object")],
)
def test_write_selected_rows_names_a_bad_pool_line(tmp_path, bad_line, reason):
    pool = write_lines(tmp_path / "pool.jsonl", '{"id": "a"}', bad_line)
    with pytest.raises(InputFileError, match=f"pool.jsonl:2: .*{reason}"):
        write_selected_rows([SelectedExample(id="a", score=1, subtask=None)], pool, io.StringIO())


def test_write_selected_rows_keeps_only_selected_offsets(tmp_path, monkeypatch):
    """The index holds the selected ids only, not one entry per pool row."""
    from less_wire import files as client_io

    pool = write_lines(tmp_path / "pool.jsonl", *(json.dumps({"id": f"r{i}"}) for i in range(1000)))
    captured: dict = {}
    index_rows = client_io._index_rows

    def spy(*args):
        captured.update(index_rows(*args))
        return captured

    monkeypatch.setattr(client_io, "_index_rows", spy)
    out = io.StringIO()
    write_selected_rows([SelectedExample(id="r999", score=1.0, subtask=None)], pool, out)
    row_999_offset = sum(len(json.dumps({"id": f"r{i}"})) + 1 for i in range(999))
    assert captured == {"r999": row_999_offset}
    assert json.loads(out.getvalue()) == {"id": "r999", "rank": 1, "score": 1.0, "subtask": None}


EXPLANATION = {
    "checkpoints": [{"checkpoint": "c1", "weight": 1.0, "score": 0.8}],
    "subtasks": [{"subtask": "math", "score": 0.8}],
    "closest_target": {"index": 0, "id": "t1", "subtask": "math", "similarity": 0.9},
    "avoid_similarity": None,
    "n_tokens": 12,
    "metadata": {"lang": "en"},
    "preview": "2+2=4",
}


def test_explanations_are_written_and_read_back(tmp_path):
    selected = [
        SelectedExample(id="a", score=0.8, subtask="math", explanation=EXPLANATION),
        SelectedExample(id="b", score=0.1, subtask=None),
    ]
    out = tmp_path / "selected.jsonl"
    assert write_selected_ids(selected, out) == 2
    first, second = read_jsonl(out)
    assert first == {
        "rank": 1,
        "id": "a",
        "score": 0.8,
        "subtask": "math",
        "explanation": EXPLANATION,
    }
    assert second == {"rank": 2, "id": "b", "score": 0.1, "subtask": None}  # no null explanation
    records = read_selection(out)
    assert records[0].explanation is not None
    assert records[0].explanation.closest_target.id == "t1"
    assert records[1].explanation is None

    pool = write_lines(
        tmp_path / "pool.jsonl",
        json.dumps({"id": "b", "text": "B", "explanation": "a pool field"}),
        json.dumps({"id": "a", "text": "A"}),
    )
    rows = tmp_path / "rows.jsonl"
    assert write_selected_rows(selected, pool, rows) == 2
    assert read_jsonl(rows) == [
        {
            "id": "a",
            "text": "A",
            "rank": 1,
            "score": 0.8,
            "subtask": "math",
            "explanation": EXPLANATION,
        },
        # without an explanation of its own a row keeps what the pool holds
        {
            "id": "b",
            "text": "B",
            "explanation": "a pool field",
            "rank": 2,
            "score": 0.1,
            "subtask": None,
        },
    ]
