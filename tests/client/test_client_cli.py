"""`less-select`: run through `main([...])` against a fake server injected into `LessClient`."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from sdk_fakes import (
    DATASTORE,
    EXPLANATION,
    FIELDS,
    SELECT_EXPLAINED,
    SELECT_RESPONSE,
    FakeServer,
    error,
    job,
)

from less_client import DatastoreSummary, LessClient, cli

TARGETS = [
    {"id": "t1", "prompt": "2+2=", "completion": "4", "subtask": "math"},
    {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hey"}]},
]


@pytest.fixture
def server(monkeypatch) -> FakeServer:
    """The fake server every `LessClient` the CLI makes talks to; sleeps are skipped."""
    fake = FakeServer([])

    def make_client(**kwargs) -> LessClient:
        less = LessClient(http_client=httpx.Client(transport=httpx.MockTransport(fake)), **kwargs)
        less._sleep = lambda delay: None  # type: ignore[method-assign]
        return less

    monkeypatch.setattr(cli, "LessClient", make_client)
    return fake


@pytest.fixture
def targets(tmp_path) -> Path:
    path = tmp_path / "targets.jsonl"
    path.write_text("".join(json.dumps(t) + "\n" for t in TARGETS), encoding="utf-8")
    return path


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_select_writes_ids(server, targets, tmp_path, capsys):
    server.replies.append(httpx.Response(200, json=SELECT_RESPONSE))
    out = tmp_path / "selected.jsonl"
    status = cli.main(
        [
            "--datastore",
            "pool-a",
            "--targets",
            str(targets),
            "--k",
            "2",
            "--out",
            str(out),
            "--base-url",
            "http://cli.test",
            "--api-key",
            "sk-cli",
            "--checkpoints",
            "c1, c2",
            "--aggregate",
            "mean",
        ]
    )
    assert status == 0
    (request,) = server.requests
    assert str(request.url) == "http://cli.test/v1/datastores/pool-a/select"
    assert request.headers["authorization"] == "Bearer sk-cli"
    assert json.loads(request.content) == {
        "targets": TARGETS,
        "k": 2,
        "checkpoints": ["c1", "c2"],
        "aggregate": "mean",
        "return_scores": True,
    }
    assert lines(out) == [
        {"rank": rank, **example} for rank, example in enumerate(SELECT_RESPONSE["selected"], 1)
    ]
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"wrote 2 selected ids from 1000 candidates in pool-a@v3 (16 ms) to {out}\n"
    )


def test_select_to_stdout_with_fraction(server, targets, capsys):
    server.replies.append(httpx.Response(200, json=SELECT_RESPONSE))
    assert (
        cli.main(
            [
                "select",
                "--datastore",
                "pool-a",
                "--targets",
                str(targets),
                "--fraction",
                "0.1",
                "--no-scores",
            ]
        )
        == 0
    )
    body = json.loads(server.requests[0].content)
    assert (body["fraction"], body["return_scores"], "k" in body) == (0.1, False, False)
    assert [json.loads(line)["id"] for line in capsys.readouterr().out.splitlines()] == [
        "ex-7",
        "ex-2",
    ]


def test_select_with_pool_writes_rows(server, targets, tmp_path):
    server.replies.append(httpx.Response(200, json=SELECT_RESPONSE))
    pool = tmp_path / "pool.jsonl"
    pool.write_text(
        "".join(json.dumps({"id": f"ex-{i}", "text": f"row {i}"}) + "\n" for i in range(10)),
        encoding="utf-8",
    )
    out = tmp_path / "rows.jsonl"
    assert (
        cli.main(
            [
                "--datastore",
                "pool-a",
                "--targets",
                str(targets),
                "--k",
                "2",
                "--pool",
                str(pool),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert lines(out) == [
        {"id": "ex-7", "text": "row 7", "rank": 1, "score": 0.91, "subtask": "arith"},
        {"id": "ex-2", "text": "row 2", "rank": 2, "score": 0.5, "subtask": None},
    ]


def test_select_as_job_shows_progress(server, targets, tmp_path, capsys):
    server.replies.extend(
        [
            httpx.Response(202, json=job("queued")),
            httpx.Response(200, json=job("running", 0.5)),
            httpx.Response(200, json=job("running", 0.5)),
            httpx.Response(200, json=job("succeeded", 1.0, n_selected=1)),
            httpx.Response(200, text='{"id": "ex-9", "score": 2.5, "subtask": null}\n'),
        ]
    )
    out = tmp_path / "selected.jsonl"
    assert (
        cli.main(
            [
                "--datastore",
                "pool-a",
                "--targets",
                str(targets),
                "--fraction",
                "0.5",
                "--job",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert [f"{r.method} {r.url.path}" for r in server.requests] == [
        "POST /v1/datastores/pool-a/jobs",
        "GET /v1/jobs/job-1",
        "GET /v1/jobs/job-1",
        "GET /v1/jobs/job-1",
        "GET /v1/jobs/job-1/result",
    ]
    assert lines(out) == [{"rank": 1, "id": "ex-9", "score": 2.5, "subtask": None}]
    assert capsys.readouterr().err.splitlines() == [
        "job job-1 queued",
        "job job-1 running 50%",  # a repeated state is shown once
        "job job-1 succeeded 100%",
        f"wrote 1 selected ids from job job-1 on pool-a to {out}",
    ]


def test_failed_job_exits_1(server, targets, capsys):
    server.replies.extend(
        [
            httpx.Response(202, json=job("queued")),
            httpx.Response(200, json=job("failed", error={"code": "internal", "message": "OOM"})),
        ]
    )
    assert cli.main(["--datastore", "pool-a", "--targets", str(targets), "--k", "1", "--job"]) == 1
    assert capsys.readouterr().err.splitlines()[-1] == (
        "less-select: error: job job-1 failed: internal: OOM"
    )


def test_datastores_lists_a_table(server, capsys):
    server.replies.append(httpx.Response(200, json={"datastores": [DATASTORE]}))
    assert cli.main(["datastores", "--base-url", "http://cli.test"]) == 0
    assert server.requests[0].url.path == "/v1/datastores"
    assert capsys.readouterr().out.splitlines() == [
        "NAME    VERSION  EXAMPLES  CHECKPOINTS  MODEL",
        "pool-a  v3       1000      ckpt-1       smollm2-135m",
    ]


def test_datastores_as_json(server, capsys):
    server.replies.append(httpx.Response(200, json={"datastores": [DATASTORE]}))
    assert cli.main(["datastores", "--json"]) == 0
    # The summary as the SDK reads it: fields the server left out show their defaults.
    shown = json.loads(capsys.readouterr().out)
    assert shown == {**DATASTORE, **{k: shown[k] for k in shown.keys() - DATASTORE.keys()}}
    assert DatastoreSummary.model_validate(shown) == DatastoreSummary.model_validate(DATASTORE)


def test_refused_request_is_one_line_and_exit_2(server, targets, capsys):
    server.replies.append(error(404, "not_found", "no datastore 'nope'"))
    assert cli.main(["--datastore", "nope", "--targets", str(targets), "--k", "1"]) == 2
    captured = capsys.readouterr()
    assert captured.err == "less-select: error: 404 not_found: no datastore 'nope'\n"
    assert captured.out == ""


def test_bad_targets_file_fails_before_any_request(server, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(TARGETS[0]) + "\n" + '{"prompt": "no completion"}\n')
    assert cli.main(["--datastore", "pool-a", "--targets", str(bad), "--k", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"less-select: error: {bad}:2: invalid target example")
    assert err.count("\n") == 1
    assert server.requests == []


def test_missing_targets_file_exits_2(server, tmp_path, capsys):
    missing = tmp_path / "nope.jsonl"
    assert cli.main(["--datastore", "p", "--targets", str(missing), "--k", "1"]) == 2
    assert "No such file or directory" in capsys.readouterr().err


def test_connection_failure_exits_1_after_retries(server, targets, capsys):
    server.replies.extend([httpx.ConnectError("connection refused")] * 2)
    status = cli.main(
        ["--datastore", "p", "--targets", str(targets), "--k", "1", "--max-retries", "1"]
    )
    assert status == 1
    assert len(server.requests) == 2
    err = capsys.readouterr().err
    assert err == (
        "less-select: error: connection to http://127.0.0.1:8000 failed: connection refused\n"
    )
    assert "Traceback" not in err


def test_missing_pool_id_exits_2_and_writes_nothing(server, targets, tmp_path, capsys):
    server.replies.append(httpx.Response(200, json=SELECT_RESPONSE))
    pool = tmp_path / "pool.jsonl"
    pool.write_text('{"id": "ex-7"}\n', encoding="utf-8")
    out = tmp_path / "rows.jsonl"
    assert (
        cli.main(
            [
                "--datastore",
                "p",
                "--targets",
                str(targets),
                "--k",
                "2",
                "--pool",
                str(pool),
                "--out",
                str(out),
            ]
        )
        == 2
    )
    assert "not in the pool: 'ex-2'" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["--datastore", "p", "--targets", "t.jsonl"], "one of the arguments --k --fraction"),
        (
            ["--datastore", "p", "--targets", "t.jsonl", "--k", "1", "--fraction", "0.1"],
            "not allowed with argument",
        ),
        (["--datastore", "p", "--targets", "t.jsonl", "--k", "0"], "must be at least 1"),
        (["--datastore", "p", "--targets", "t.jsonl", "--k", "ten"], "not a number: 'ten'"),
        (["--datastore", "p", "--targets", "t.jsonl", "--fraction", "2"], "must be in (0, 1]"),
        (
            ["--datastore", "p", "--targets", "t.jsonl", "--k", "1", "--checkpoints", ","],
            "at least one checkpoint",
        ),
        (["--targets", "t.jsonl", "--k", "1"], "--datastore"),
    ],
)
def test_usage_errors_exit_2(server, capsys, argv, complaint):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    assert complaint in capsys.readouterr().err
    assert server.requests == []


def test_search_flags_become_the_search_object(server, targets, tmp_path):
    server.replies.append(httpx.Response(200, json=SELECT_RESPONSE))
    out = tmp_path / "selected.jsonl"
    argv = [
        "--datastore",
        "pool-a",
        "--targets",
        str(targets),
        "--k",
        "2",
        "--out",
        str(out),
        "--nprobe",
        "16",
        "--candidates",
        "3",
    ]
    assert cli.main(argv) == 0
    body = json.loads(server.requests[0].content)
    assert body["search"] == {"exact": False, "nprobe": 16, "candidates": 3.0}


def test_bad_search_option_exits_2_before_any_request(server, targets, capsys):
    argv = ["--datastore", "pool-a", "--targets", str(targets), "--k", "2", "--candidates", "0.5"]
    assert cli.main(argv) == 2
    assert "search.candidates" in capsys.readouterr().err
    assert server.requests == []


# Steering flags (less_wire.cli_options, shared with less-index select) and `fields`.

AVOID = [{"id": "a1", "prompt": "Write a poem", "completion": "Roses are red"}]


@pytest.fixture
def avoid(tmp_path) -> Path:
    path = tmp_path / "avoid.jsonl"
    path.write_text("".join(json.dumps(a) + "\n" for a in AVOID), encoding="utf-8")
    return path


STEERING_FLAGS = [
    "--explain",
    "--filter",
    "lang=en|fr",
    "--filter",
    "n_tokens<2048",
    "--filter",
    "n_tokens>=8",
    "--filter",
    'source!="share|gpt"',
    "--filter",
    "verified=true",
    "--balance",
    "subtask",
    "--max-similarity",
    "0.9",
    "--avoid-weight",
    "0.25",
]
STEERING_BODY = {
    "explain": True,
    "filter": {
        "lang": {"in": ["en", "fr"]},
        "n_tokens": {"lt": 2048, "gte": 8},
        "source": {"not_in": ["share|gpt"]},
        "verified": {"eq": True},
    },
    "balance": "subtask",
    "max_similarity": 0.9,
    "avoid": AVOID,
    "avoid_weight": 0.25,
}


def test_steering_flags_become_the_request(server, targets, avoid, tmp_path):
    server.replies.append(httpx.Response(200, json=SELECT_RESPONSE))
    out = tmp_path / "selected.jsonl"
    argv = ["--datastore", "pool-a", "--targets", str(targets), "--k", "2", "--out", str(out)]
    assert cli.main([*argv, *STEERING_FLAGS, "--avoid", str(avoid)]) == 0
    assert json.loads(server.requests[0].content) == {
        "targets": TARGETS,
        "k": 2,
        "aggregate": "max",
        "return_scores": True,
        **STEERING_BODY,
    }
    assert b'"in":["en","fr"]' in server.requests[0].content


def test_steering_flags_in_job_mode(server, targets, avoid, tmp_path):
    result = json.dumps({"id": "ex-9", "score": 2.5, "subtask": None, "explanation": EXPLANATION})
    server.replies.extend(
        [
            httpx.Response(202, json=job("queued")),
            httpx.Response(200, json=job("succeeded", 1.0, n_selected=1)),
            httpx.Response(200, text=result + "\n"),
        ]
    )
    out = tmp_path / "selected.jsonl"
    argv = ["--datastore", "pool-a", "--targets", str(targets), "--job", "--out", str(out)]
    assert cli.main([*argv, "--token-budget", "4096", *STEERING_FLAGS, "--avoid", str(avoid)]) == 0
    assert server.requests[0].url.path == "/v1/datastores/pool-a/jobs"
    assert json.loads(server.requests[0].content) == {
        "targets": TARGETS,
        "token_budget": 4096,  # the size: no default fraction next to it
        "aggregate": "max",
        "return_scores": True,
        **STEERING_BODY,
    }
    assert lines(out) == [
        {"rank": 1, "id": "ex-9", "score": 2.5, "subtask": None, "explanation": EXPLANATION}
    ]


def test_filter_json_flag(server, targets, capsys):
    server.replies.append(httpx.Response(200, json=SELECT_RESPONSE))
    argv = ["--datastore", "p", "--targets", str(targets), "--fraction", "0.5"]
    assert cli.main([*argv, "--filter-json", '{"lang": {"in": ["en"]}, "n": {"gt": 1}}']) == 0
    body = json.loads(server.requests[0].content)
    assert body["filter"] == {"lang": {"in": ["en"]}, "n": {"gt": 1}}
    assert "explain" not in body and "balance" not in body  # defaults are not sent


def test_explanations_are_written(server, targets, tmp_path, capsys):
    server.replies.append(httpx.Response(200, json=SELECT_EXPLAINED))
    out = tmp_path / "selected.jsonl"
    argv = ["--datastore", "pool-a", "--targets", str(targets), "--k", "2", "--explain"]
    assert cli.main([*argv, "--out", str(out)]) == 0
    assert lines(out) == [
        {"rank": 1, "id": "ex-7", "score": 0.91, "subtask": "arith", "explanation": EXPLANATION},
        {"rank": 2, "id": "ex-2", "score": 0.5, "subtask": None},
    ]
    assert capsys.readouterr().err == (
        f"wrote 2 selected ids from 400 candidates in pool-a@v3 (16 ms, 99 tokens) to {out}\n"
    )


def test_explanations_are_written_with_pool_rows(server, targets, tmp_path):
    server.replies.append(httpx.Response(200, json=SELECT_EXPLAINED))
    pool = tmp_path / "pool.jsonl"
    pool.write_text(
        "".join(json.dumps({"id": f"ex-{i}", "text": f"row {i}"}) + "\n" for i in range(10)),
        encoding="utf-8",
    )
    out = tmp_path / "rows.jsonl"
    argv = ["--datastore", "pool-a", "--targets", str(targets), "--k", "2", "--explain"]
    assert cli.main([*argv, "--pool", str(pool), "--out", str(out)]) == 0
    assert lines(out) == [
        {
            "id": "ex-7",
            "text": "row 7",
            "rank": 1,
            "score": 0.91,
            "subtask": "arith",
            "explanation": EXPLANATION,
        },
        {"id": "ex-2", "text": "row 2", "rank": 2, "score": 0.5, "subtask": None},
    ]


@pytest.mark.parametrize(
    ("flags", "complaint"),
    [
        (["--filter", "lang"], "argument --filter: bad filter 'lang': expected FIELD=VALUE"),
        (["--filter", "n>big"], "argument --filter: bad filter 'n>big': '>' needs one number"),
        (["--filter", "a=1", "--filter", "a=2"], "filter 'a=2' contradicts 'a=1' on field 'a'"),
        (["--filter-json", "{nope"], "argument --filter-json: filter JSON is not valid JSON"),
        (["--filter", "a=1", "--filter-json", "{}"], "not allowed with argument --filter"),
        (["--balance", "team"], "argument --balance: invalid choice: 'team'"),
        (["--token-budget", "0"], "argument --token-budget: Input should be greater than"),
        (["--max-similarity", "2"], "argument --max-similarity: Input should be less than"),
        (["--avoid-weight", "heavy"], "argument --avoid-weight: not a number: 'heavy'"),
    ],
)
def test_bad_steering_flags_exit_2_with_one_error_line(server, targets, capsys, flags, complaint):
    with pytest.raises(SystemExit) as info:
        cli.main(["--datastore", "p", "--targets", str(targets), "--k", "1", *flags])
    assert info.value.code == 2
    err = capsys.readouterr().err
    (message,) = [line for line in err.splitlines() if "error:" in line]
    assert message.startswith("less-select: error: ")
    assert complaint in message
    assert "Traceback" not in err
    assert server.requests == []


def test_no_size_at_all_names_the_token_budget_too(server, targets, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--datastore", "p", "--targets", str(targets), "--explain"])
    assert info.value.code == 2
    assert "one of the arguments --k --fraction --token-budget is required" in (
        capsys.readouterr().err
    )


def test_too_many_filter_fields_is_one_line(server, targets, capsys):
    flags = [arg for i in range(17) for arg in ("--filter", f"f{i}=1")]
    assert cli.main(["--datastore", "p", "--targets", str(targets), "--k", "1", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("less-select: error: filter: ") and err.count("\n") == 1
    assert server.requests == []


def test_bad_avoid_file_line_exits_2_before_any_request(server, targets, tmp_path, capsys):
    bad = tmp_path / "avoid.jsonl"
    bad.write_text(json.dumps(AVOID[0]) + "\n" + '{"prompt": "no completion"}\n')
    argv = ["--datastore", "p", "--targets", str(targets), "--k", "1", "--avoid", str(bad)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"less-select: error: {bad}:2: invalid target example")
    assert err.count("\n") == 1
    assert server.requests == []


def test_missing_avoid_file_exits_2(server, targets, tmp_path, capsys):
    missing = tmp_path / "nope.jsonl"
    argv = ["--datastore", "p", "--targets", str(targets), "--k", "1", "--avoid", str(missing)]
    assert cli.main(argv) == 2
    assert "No such file or directory" in capsys.readouterr().err
    assert server.requests == []


def test_fields_lists_a_table(server, capsys):
    server.replies.append(httpx.Response(200, json=FIELDS))
    assert cli.main(["fields", "pool-a", "--base-url", "http://cli.test"]) == 0
    assert str(server.requests[0].url) == "http://cli.test/v1/datastores/pool-a/fields"
    assert capsys.readouterr().out.splitlines() == [
        "pool-a@v3: 1000 examples",
        "FIELD     KIND    MISSING  DISTINCT  VALUES",
        'lang      string  10       2         "en" (900), "fr" (90)',
        "n_tokens  int     0        412       3..2048",
        "verified  bool    0        2         true (600), false (400)",
    ]


def test_fields_as_json(server, capsys):
    server.replies.append(httpx.Response(200, json=FIELDS))
    assert cli.main(["fields", "pool-a", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["datastore"], [f["name"] for f in shown["fields"]]) == (
        "pool-a",
        ["lang", "n_tokens", "verified"],
    )


def test_fields_of_an_unknown_datastore_exits_2(server, capsys):
    server.replies.append(error(404, "not_found", "no datastore 'nope'"))
    assert cli.main(["fields", "nope"]) == 2
    assert capsys.readouterr().err == "less-select: error: 404 not_found: no datastore 'nope'\n"


def test_fields_needs_a_name(server, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["fields"])
    assert info.value.code == 2
    assert "NAME" in capsys.readouterr().err
