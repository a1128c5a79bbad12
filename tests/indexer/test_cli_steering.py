"""`less-index select` with the steering flags, end to end on the tiny datastore.

The flags are less_wire.cli_options' (shared with less-select); the request goes through
`QueryEngine.select_request`, so these tests check the wiring, not the engine's arithmetic
(tests/indexer/test_steered.py does that against reference loops).
"""

from __future__ import annotations

import json

import pytest

from indexer.cli import main
from tests.conftest import make_rows, write_jsonl
from tests.indexer.test_cli import select_args


def select(datastore, model_dir, targets, out, *extra):
    return main(select_args(datastore, model_dir, targets, out, *extra))


def read(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def targets(tmp_path):
    rows = make_rows(2, seed=5, prefix="t-")
    # Two subtasks, so that --balance subtask has something to balance.
    chosen = [rows[0], rows[2]]
    return write_jsonl(
        tmp_path / "targets.jsonl",
        [{**{k: v for k, v in r.items() if k != "id"}, "subtask": r["task"]} for r in chosen],
    )


@pytest.fixture
def pool_rows(pool_path):
    return {row["id"]: row for row in read(pool_path)}


def test_filter_keeps_only_matching_rows_and_explain_writes_explanations(
    tmp_path, tiny_model_dir, datastore_root, targets, pool_rows, capsys
):
    out = tmp_path / "selected.jsonl"
    flags = ["--fraction", "1", "--filter", "task=add|rev", "--filter", "difficulty>=3"]
    assert select(datastore_root, tiny_model_dir, targets, out, *flags, "--explain") == 0, (
        capsys.readouterr().err
    )
    rows = read(out)
    matching = {
        i
        for i, r in pool_rows.items()
        if r["task"] in ("add", "rev") and r.get("difficulty", 0) >= 3
    }
    assert matching and {r["id"] for r in rows} == matching  # fraction 1 of the passing rows
    assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
    for row in rows:
        explanation = row["explanation"]
        assert explanation["metadata"]["task"] in ("add", "rev")
        assert explanation["metadata"]["difficulty"] >= 3
        # The checkpoint contributions add up to the row's score.
        total = sum(c["score"] for c in explanation["checkpoints"])
        assert total == pytest.approx(row["score"], abs=1e-5)
        assert explanation["closest_target"]["index"] in (0, 1)


def test_without_explain_no_explanation_key(tmp_path, tiny_model_dir, datastore_root, targets):
    out = tmp_path / "selected.jsonl"
    assert select(datastore_root, tiny_model_dir, targets, out, "--k", "3") == 0
    assert [sorted(r) for r in read(out)] == [["id", "rank", "score", "subtask"]] * 3


def test_filter_json_and_pool_rows_carry_explanations(
    tmp_path, tiny_model_dir, datastore_root, pool_path, targets, capsys
):
    out = tmp_path / "rows.jsonl"
    flags = ["--k", "4", "--filter-json", '{"source": {"not_in": ["web"]}}', "--explain"]
    code = select(datastore_root, tiny_model_dir, targets, out, *flags, "--pool", str(pool_path))
    assert code == 0, capsys.readouterr().err
    rows = read(out)
    assert len(rows) == 4
    assert all(
        r["source"] != "web" and r["explanation"]["metadata"]["source"] != "web" for r in rows
    )
    assert all("messages" in r or "prompt" in r for r in rows)  # the pool rows themselves


def test_token_budget_balance_guard_and_avoid(
    tmp_path, tiny_model_dir, datastore_root, targets, capsys
):
    avoid = write_jsonl(
        tmp_path / "avoid.jsonl",
        [{"prompt": "shout ghij = ", "completion": "GHIJ!"}],
    )
    out = tmp_path / "selected.jsonl"
    flags = [
        "--token-budget",
        "200",
        "--balance",
        "subtask",
        "--max-similarity",
        "0.99",
        "--avoid",
        str(avoid),
        "--avoid-weight",
        "0.5",
        "--explain",
    ]
    assert select(datastore_root, tiny_model_dir, targets, out, *flags) == 0, (
        capsys.readouterr().err
    )
    rows = read(out)
    assert rows
    assert sum(r["explanation"]["n_tokens"] for r in rows) <= 200
    assert all(r["explanation"]["avoid_similarity"] is not None for r in rows)
    assert {r["subtask"] for r in rows} <= {"add", "rev"}
    assert len({r["id"] for r in rows}) == len(rows)


@pytest.mark.parametrize(
    ("flags", "complaint"),
    [
        (["--filter", "task"], "argument --filter: bad filter 'task'"),
        (["--filter", "a=1", "--filter", "a=2"], "filter 'a=2' contradicts 'a=1'"),
        (["--balance", "team"], "argument --balance: invalid choice: 'team'"),
        (["--max-similarity", "2"], "argument --max-similarity: Input should be less than"),
    ],
)
def test_bad_flags_exit_2(tmp_path, targets, capsys, flags, complaint):
    with pytest.raises(SystemExit) as info:
        select(tmp_path / "nope", tmp_path / "model", targets, tmp_path / "o", *flags)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert complaint in err and "Traceback" not in err


def test_bad_avoid_file_is_one_line(tmp_path, tiny_model_dir, datastore_root, targets, capsys):
    avoid = tmp_path / "avoid.jsonl"
    avoid.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "only"}\n', encoding="utf-8")
    code = select(
        datastore_root, tiny_model_dir, targets, tmp_path / "o", "--k", "1", "--avoid", str(avoid)
    )
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"less-index select: error: {avoid}:2: invalid target example")
    assert err.count("\n") == 1


def test_a_filter_on_an_unknown_field_is_a_usage_error(
    tmp_path, tiny_model_dir, datastore_root, targets, capsys
):
    code = select(
        datastore_root, tiny_model_dir, targets, tmp_path / "o", "--k", "1", "--filter", "nope=1"
    )
    err = capsys.readouterr().err
    assert code == 2, err
    # The last line (model loading may draw a progress bar before it) is the one error.
    (error,) = [line for line in err.splitlines() if "error:" in line]
    assert error.startswith("less-index select: error: unknown metadata field 'nope'")
    assert err.endswith(error + "\n") and "Traceback" not in err
