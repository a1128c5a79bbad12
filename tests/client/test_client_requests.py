"""What the clients send and how they read answers; each test runs on the sync and async client."""

from __future__ import annotations

import httpx
import pytest
from pydantic import ValidationError
from sdk_fakes import API_KEY, DATASTORE, SELECT_RESPONSE, job

from less_client import (
    APIResponseValidationError,
    AsyncLessClient,
    DatastoreSummary,
    LessClient,
    Message,
    SelectRequest,
    SelectResponse,
    TargetExample,
)
from less_client._constants import DEFAULT_TIMEOUT, USER_AGENT

CHAT = {
    "messages": [
        {"role": "user", "content": "What is 2+3?"},
        {"role": "assistant", "content": "5"},
    ]
}


def test_select_sends_body_and_headers_and_parses_response(api):
    h = api(httpx.Response(200, json=SELECT_RESPONSE))
    result = h.select(
        "pool-a",
        [
            TargetExample(id="t1", messages=[Message(**m) for m in CHAT["messages"]]),
            {"prompt": "Capital of France?", "completion": "Paris", "subtask": "geo"},
        ],
        k=3,
        checkpoints=["ckpt-1"],
        aggregate="mean",
        return_scores=False,
    )

    (request,) = h.server.requests
    assert request.method == "POST"
    assert str(request.url) == "http://less.test/v1/datastores/pool-a/select"
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["accept"] == "application/json"
    assert request.headers["user-agent"] == USER_AGENT
    assert h.server.bodies() == [
        {
            "targets": [
                {"id": "t1", **CHAT},
                {"prompt": "Capital of France?", "completion": "Paris", "subtask": "geo"},
            ],
            "k": 3,
            "checkpoints": ["ckpt-1"],
            "aggregate": "mean",
            "return_scores": False,
        }
    ]
    assert isinstance(result, SelectResponse)
    assert [(s.id, s.score, s.subtask) for s in result.selected] == [
        ("ex-7", 0.91, "arith"),
        ("ex-2", 0.5, None),
    ]
    assert result.datastore_version == "v3"
    assert result.n_candidates == 1000
    assert result.timings.gradient_ms == 12.5
    assert result.timings.queue_ms == 0
    assert result.cached is False


def test_select_defaults_to_five_percent_and_states_it(api):
    h = api(httpx.Response(200, json=SELECT_RESPONSE))
    h.select("pool-a", [CHAT])
    assert h.server.bodies() == [
        {"targets": [CHAT], "fraction": 0.05, "aggregate": "max", "return_scores": True}
    ]


def test_select_accepts_a_ready_request(api):
    h = api(httpx.Response(200, json=SELECT_RESPONSE))
    h.select("pool-a", SelectRequest(targets=[CHAT], fraction=0.2))
    assert h.server.bodies()[0]["fraction"] == 0.2


@pytest.mark.parametrize(
    ("targets", "options", "field"),
    [
        ([CHAT], {"k": 5, "fraction": 0.1}, "not both"),
        ([CHAT], {"k": 0}, "k"),
        ([CHAT], {"fraction": 1.5}, "fraction"),
        ([], {"k": 1}, "targets"),
        ([{"prompt": "only a prompt"}], {"k": 1}, "completion"),
    ],
)
def test_select_refuses_bad_arguments_without_sending(api, targets, options, field):
    h = api()
    with pytest.raises(ValidationError, match=field):
        h.select("pool-a", targets, **options)
    assert h.server.requests == []


def test_names_are_quoted_into_one_path_segment(api):
    h = api(httpx.Response(200, json=SELECT_RESPONSE), httpx.Response(200, json=job("queued")))
    h.select("team/pool a", [CHAT], k=1)
    h.get_job("../admin")
    assert h.server.paths() == [
        "POST /v1/datastores/team%2Fpool%20a/select",
        "GET /v1/jobs/..%2Fadmin",
    ]


def test_no_key_means_no_authorization_header(api):
    h = api(httpx.Response(200, json={"datastores": []}), api_key=None)
    assert h.list_datastores() == []
    assert "authorization" not in h.server.requests[0].headers


def test_base_url_and_key_come_from_the_environment(api, monkeypatch):
    monkeypatch.setenv("LESS_BASE_URL", "https://less.example.org/api/")
    monkeypatch.setenv("LESS_API_KEY", "sk-env")
    h = api(httpx.Response(200, json={"datastores": []}), base_url=None, api_key=None)
    h.list_datastores()
    request = h.server.requests[0]
    assert str(request.url) == "https://less.example.org/api/v1/datastores"
    assert request.headers["authorization"] == "Bearer sk-env"


def test_argument_beats_environment(monkeypatch):
    monkeypatch.setenv("LESS_BASE_URL", "http://env:1")
    monkeypatch.setenv("LESS_API_KEY", "sk-env")
    client = LessClient("http://arg:2", "sk-arg")
    assert (client.base_url, client.api_key) == ("http://arg:2", "sk-arg")
    assert "sk-arg" not in repr(client)
    client.close()


def test_defaults_without_environment():
    client = LessClient()
    assert client.base_url == "http://127.0.0.1:8000"
    assert client.api_key is None
    assert client.timeout == DEFAULT_TIMEOUT
    assert client.max_retries == 2
    client.close()


def test_timeout_is_sent_with_each_request(api):
    h = api(httpx.Response(200, json={"datastores": []}), timeout=7.5)
    h.list_datastores()
    assert h.server.requests[0].extensions["timeout"] == {
        "connect": 7.5,
        "read": 7.5,
        "write": 7.5,
        "pool": 7.5,
    }


def test_negative_max_retries_is_refused():
    with pytest.raises(ValueError, match="max_retries"):
        LessClient(max_retries=-1)


def test_list_and_get_datastores(api):
    h = api(
        httpx.Response(200, json={"datastores": [DATASTORE]}),
        httpx.Response(200, json={**DATASTORE, "added_later": True}),
    )
    (listed,) = h.list_datastores()
    got = h.get_datastore("pool-a")
    assert h.server.paths() == ["GET /v1/datastores", "GET /v1/datastores/pool-a"]
    assert isinstance(got, DatastoreSummary)
    assert listed == got  # an unknown field from a newer server is ignored
    assert got.checkpoints[0].lr == 2e-5
    assert got.projector.dim == 8192


def test_unexpected_success_body_is_a_validation_error(api):
    h = api(httpx.Response(200, json={"datastore": "pool-a"}))
    with pytest.raises(APIResponseValidationError, match="SelectResponse") as info:
        h.select("pool-a", [CHAT], k=1)
    assert info.value.response.status_code == 200


def test_non_json_success_body_is_a_validation_error(api):
    h = api(httpx.Response(200, text="<html>proxy</html>"))
    with pytest.raises(APIResponseValidationError):
        h.get_datastore("pool-a")


def test_probes(api):
    h = api(
        httpx.Response(200, json={"status": "ok"}),
        httpx.Response(200, json={"status": "ready", "datastores": ["pool-a"]}),
    )
    assert h.healthz() == {"status": "ok"}
    assert h.readyz() == {"status": "ready", "datastores": ["pool-a"]}
    assert h.server.paths() == ["GET /healthz", "GET /readyz"]


def test_owned_http_client_is_closed_injected_one_is_not():
    owned = LessClient()
    with owned:
        pass
    assert owned._http.is_closed
    injected = httpx.Client()
    with LessClient(http_client=injected):
        pass
    assert not injected.is_closed
    injected.close()


def test_async_client_closes_owned_http_client():
    import asyncio

    async def scenario() -> bool:
        async with AsyncLessClient() as less:
            pass
        return less._http.is_closed

    assert asyncio.run(scenario()) is True


def test_unknown_option_is_a_type_error(api):
    h = api()
    with pytest.raises(TypeError, match="unexpected selection option.*: top_k"):
        h.select("pool-a", [CHAT], top_k=5)
    with pytest.raises(TypeError, match="inside the SelectRequest"):
        h.select("pool-a", SelectRequest(targets=[CHAT]), k=5)
    assert h.server.requests == []


def test_checkpoints_may_be_any_sequence_and_none_means_default(api):
    h = api(httpx.Response(200, json=SELECT_RESPONSE))
    h.select("pool-a", [CHAT], k=2, fraction=None, checkpoints=("c1", "c2"))
    assert h.server.bodies()[0] == {
        "targets": [CHAT],
        "k": 2,
        "checkpoints": ["c1", "c2"],
        "aggregate": "max",
        "return_scores": True,
    }
