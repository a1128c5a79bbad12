"""Steering options (explain, filter, token budget, balance, near-duplicates, avoid) and the
fields endpoint in the SDK; each test runs on the sync and the async client."""

from __future__ import annotations

import httpx
import pytest
from pydantic import ValidationError
from sdk_fakes import EXPLANATION, FIELDS, SELECT_EXPLAINED, SELECT_RESPONSE, error, job

from less_client import (
    DatastoreFields,
    Explanation,
    FieldCondition,
    NotFoundError,
    SelectRequest,
    TargetExample,
    parse_filter_expressions,
)

TARGET = {"prompt": "7*6=", "completion": "42", "subtask": "arith"}
AVOID = {"prompt": "Write a poem", "completion": "Roses are red"}
PLAIN = {"targets": [TARGET], "fraction": 0.05, "aggregate": "max", "return_scores": True}
"""The body of a plain select: no steering option shows up in it."""


def reply_for(method: str) -> httpx.Response:
    if method == "select":
        return httpx.Response(200, json=SELECT_RESPONSE)
    return httpx.Response(202, json=job("queued"))


@pytest.mark.parametrize("method", ["select", "create_job"])
def test_every_option_in_the_body(api, method):
    h = api(reply_for(method))
    getattr(h, method)(
        "pool-a",
        [TARGET],
        k=10,
        explain=True,
        filter={
            "lang": FieldCondition(in_=["en", "fr"]),
            "n_tokens": {"gte": 8, "lt": 2048},
            "source": {"not_in": ["sharegpt"]},
            "verified": FieldCondition(eq=True),
        },
        token_budget=50_000,
        balance="subtask",
        max_similarity=0.9,
        avoid=[TargetExample(**AVOID), {"messages": [{"role": "assistant", "content": "no"}]}],
        avoid_weight=0.5,
    )
    endpoint = "select" if method == "select" else "jobs"
    assert h.server.paths() == [f"POST /v1/datastores/pool-a/{endpoint}"]
    assert h.server.bodies() == [
        {
            "targets": [TARGET],
            "k": 10,
            "aggregate": "max",
            "return_scores": True,
            "explain": True,
            "filter": {
                "lang": {"in": ["en", "fr"]},
                "n_tokens": {"gte": 8.0, "lt": 2048.0},
                "source": {"not_in": ["sharegpt"]},
                "verified": {"eq": True},
            },
            "token_budget": 50_000,
            "balance": "subtask",
            "max_similarity": 0.9,
            "avoid": [AVOID, {"messages": [{"role": "assistant", "content": "no"}]}],
            "avoid_weight": 0.5,
        }
    ]
    raw = h.server.requests[0].content
    assert b'"lang":{"in":["en","fr"]}' in raw  # the wire name, never the attribute `in_`
    assert b"in_" not in raw


@pytest.mark.parametrize(
    ("options", "sent"),
    [
        ({"explain": True}, {"explain": True}),
        ({"filter": {"lang": {"eq": "en"}}}, {"filter": {"lang": {"eq": "en"}}}),
        ({"filter": {"lang": {"in": ["en"]}}}, {"filter": {"lang": {"in": ["en"]}}}),
        ({"filter": {"x": FieldCondition(**{"in": [1, 2]})}}, {"filter": {"x": {"in": [1, 2]}}}),
        (
            {"filter": parse_filter_expressions(["lang=en|fr", "n<10"])},
            {"filter": {"lang": {"in": ["en", "fr"]}, "n": {"lt": 10}}},
        ),
        ({"balance": "subtask"}, {"balance": "subtask"}),
        ({"max_similarity": 0.95}, {"max_similarity": 0.95}),
        ({"max_similarity": -0.5}, {"max_similarity": -0.5}),
        ({"avoid": [AVOID]}, {"avoid": [AVOID]}),
        ({"avoid": [AVOID], "avoid_weight": 2.0}, {"avoid": [AVOID], "avoid_weight": 2.0}),
        ({"avoid_weight": 0.0}, {"avoid_weight": 0.0}),
        # At their defaults the options are not sent: the body is a plain request's.
        ({"explain": False, "balance": "none", "avoid_weight": 1.0}, {}),
        ({"filter": None, "avoid": None, "max_similarity": None}, {}),
    ],
)
def test_each_option_alone(api, options, sent):
    h = api(httpx.Response(200, json=SELECT_RESPONSE))
    h.select("pool-a", [TARGET], **options)
    assert h.server.bodies() == [{**PLAIN, **sent}]


def test_a_token_budget_alone_sets_the_size(api):
    h = api(httpx.Response(200, json=SELECT_RESPONSE))
    h.select("pool-a", [TARGET], token_budget=1000)
    body = h.server.bodies()[0]
    assert body["token_budget"] == 1000
    assert "fraction" not in body and "k" not in body


def test_a_ready_request_with_options_is_sent_as_it_is(api):
    h = api(httpx.Response(200, json=SELECT_RESPONSE))
    request = SelectRequest.model_validate(
        {"targets": [TARGET], "k": 3, "explain": True, "filter": {"lang": {"in": ["en"]}}}
    )
    h.select("pool-a", request)
    assert h.server.bodies()[0] == {
        "targets": [TARGET],
        "k": 3,
        "aggregate": "max",
        "return_scores": True,
        "explain": True,
        "filter": {"lang": {"in": ["en"]}},
    }


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"filter": {}}, "filter"),
        ({"filter": {"lang": {}}}, "a condition needs one of"),
        ({"filter": {"lang": {"like": "e%"}}}, "like"),
        ({"filter": {"n": {"gt": float("nan")}}}, "filter.n.gt"),
        ({"filter": {f"f{i}": {"eq": 1} for i in range(17)}}, "filter"),
        ({"token_budget": 0}, "token_budget"),
        ({"balance": "team"}, "balance"),
        ({"max_similarity": 1.5}, "max_similarity"),
        ({"max_similarity": -1.0}, "max_similarity"),
        ({"avoid": []}, "avoid"),
        ({"avoid": [{"prompt": "no completion"}]}, "avoid"),
        ({"avoid_weight": -1.0}, "avoid_weight"),
        ({"explain": "yes"}, "explain"),
    ],
)
def test_bad_options_are_refused_without_sending(api, options, field):
    h = api()
    with pytest.raises(ValidationError, match=field):
        h.select("pool-a", [TARGET], k=1, **options)
    assert h.server.requests == []


def test_explanations_are_parsed(api):
    h = api(httpx.Response(200, json=SELECT_EXPLAINED))
    result = h.select("pool-a", [TARGET], k=2, explain=True)
    first, second = result.selected
    assert isinstance(first.explanation, Explanation)
    assert first.explanation.model_dump() == EXPLANATION
    assert [c.checkpoint for c in first.explanation.checkpoints] == ["ckpt-1", "ckpt-2"]
    assert first.explanation.closest_target.similarity == 0.97
    assert second.explanation is None
    assert (result.n_candidates, result.n_tokens) == (400, 99)


def test_job_result_lines_carry_explanations(api):
    line = (
        '{"id": "ex-7", "score": 0.91, "subtask": "arith", "explanation": '
        + Explanation.model_validate(EXPLANATION).model_dump_json()
        + "}\n"
    )
    h = api(httpx.Response(200, text=line + '{"id": "ex-2", "score": 0.5, "subtask": null}\n'))
    first, second = h.job_results("job-1")
    assert first.explanation is not None
    assert first.explanation.metadata == EXPLANATION["metadata"]
    assert second.explanation is None


def test_get_fields(api):
    h = api(httpx.Response(200, json=FIELDS))
    fields = h.get_fields("team/pool a")
    assert h.server.paths() == ["GET /v1/datastores/team%2Fpool%20a/fields"]
    assert h.server.requests[0].content == b""
    assert isinstance(fields, DatastoreFields)
    assert (fields.datastore, fields.version, fields.n_examples) == ("pool-a", "v3", 1000)
    lang, n_tokens, verified = fields.fields
    assert (lang.name, lang.kind, lang.n_missing, lang.n_distinct) == ("lang", "string", 10, 2)
    assert [(v.value, v.count) for v in lang.top_values] == [("en", 900), ("fr", 90)]
    assert (n_tokens.kind, n_tokens.min, n_tokens.max, n_tokens.top_values) == (
        "int",
        3,
        2048,
        [],
    )
    assert [v.value for v in verified.top_values] == [True, False]


def test_get_fields_of_an_unknown_datastore(api):
    h = api(error(404, "not_found", "no datastore 'nope'"))
    with pytest.raises(NotFoundError, match="no datastore 'nope'"):
        h.get_fields("nope")
