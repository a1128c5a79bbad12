"""In-process API tests: auth, listing, selection equal to the library, cache, errors, limits."""

from __future__ import annotations

import pytest

from less_core.config import SelectionConfig
from less_core.data import Example
from tests.service.conftest import LONG_TARGET, TARGETS, auth


def library_select(engine, targets, **config):
    examples = [Example.from_dict(t, require_id=False) for t in targets]
    return engine.select(examples, SelectionConfig(**config))


def error_code(response) -> str:
    return response.json()["error"]["code"]


def test_health_and_ready(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["ready"] is True


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic alpha-key"}]
)
def test_auth_required(client, headers):
    response = client.get("/v1/datastores", headers=headers)
    assert response.status_code == 401
    assert error_code(response) == "unauthorized"


def test_list_shows_only_granted(client, datastore_root):
    body = client.get("/v1/datastores", headers=auth("alpha")).json()
    assert [d["name"] for d in body["datastores"]] == ["tiny"]
    summary = body["datastores"][0]
    assert summary["n_examples"] == 48 and summary["model_id"] == "tiny-llama"
    assert [c["name"] for c in summary["checkpoints"]] == ["checkpoint-6", "checkpoint-12"]
    assert client.get("/v1/datastores/tiny", headers=auth("alpha")).json() == summary


@pytest.mark.parametrize("name", ["other", "missing"])
def test_other_team_or_unknown_datastore_is_404(client, name):
    responses = [
        client.get(f"/v1/datastores/{name}", headers=auth("alpha")),
        client.post(
            f"/v1/datastores/{name}/select",
            headers=auth("alpha"),
            json={"targets": TARGETS, "k": 3},
        ),
        client.post(
            f"/v1/datastores/{name}/jobs", headers=auth("alpha"), json={"targets": TARGETS, "k": 3}
        ),
    ]
    for response in responses:
        assert response.status_code == 404, response.request.url
        assert error_code(response) == "not_found"
        assert "not found" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    "options",
    [
        {"k": 5},
        {"fraction": 0.25, "aggregate": "mean"},
        {"k": 48, "checkpoints": ["checkpoint-12"]},
    ],
)
def test_select_equals_library(client, reference_engine, options):
    response = client.post(
        "/v1/datastores/tiny/select", headers=auth("alpha"), json={"targets": TARGETS, **options}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    config = {k: (tuple(v) if isinstance(v, list) else v) for k, v in options.items()}
    expected = library_select(reference_engine, TARGETS, **config)
    assert [s["id"] for s in body["selected"]] == expected.ids
    assert [s["subtask"] for s in body["selected"]] == expected.subtasks
    assert [s["score"] for s in body["selected"]] == pytest.approx(expected.scores, abs=1e-6)
    assert body["datastore_version"] == reference_engine.store.version
    assert body["n_candidates"] == 48
    assert set(body["timings"]) >= {"gradient_ms", "search_ms", "queue_ms", "total_ms"}


def test_second_identical_request_is_cached(client):
    body = {"targets": TARGETS[:2], "k": 7, "return_scores": True}
    first = client.post("/v1/datastores/tiny/select", headers=auth("alpha"), json=body).json()
    second = client.post("/v1/datastores/tiny/select", headers=auth("alpha"), json=body).json()
    assert first["cached"] is False and second["cached"] is True
    assert second["selected"] == first["selected"]


def test_return_scores_false(client):
    body = client.post(
        "/v1/datastores/tiny/select",
        headers=auth("alpha"),
        json={"targets": TARGETS, "k": 2, "return_scores": False},
    ).json()
    assert [s["score"] for s in body["selected"]] == [None, None]


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"targets": [], "k": 1}, 422, "targets"),
        ({"targets": [TARGETS[0]] * 65, "k": 1}, 400, "65 targets"),
        ({"targets": [TARGETS[0], LONG_TARGET], "k": 1}, 400, "targets[1]"),
        ({"targets": TARGETS, "k": 0}, 422, "k"),
        ({"targets": TARGETS, "k": 49}, 400, "exceeds the pool size 48"),
        ({"targets": TARGETS, "k": 2, "fraction": 0.1}, 422, "not both"),
        ({"targets": TARGETS, "fraction": 0.001}, 400, "selects none"),
        ({"targets": TARGETS, "k": 2, "checkpoints": ["checkpoint-99"]}, 400, "checkpoint-99"),
        ({"targets": TARGETS, "k": 2, "colour": "red"}, 422, "colour"),
        ({"targets": [{"prompt": "x"}], "k": 2}, 422, "completion"),
    ],
)
def test_bad_inputs(client, body, status, needle):
    response = client.post("/v1/datastores/tiny/select", headers=auth("alpha"), json=body)
    assert response.status_code == status, response.text
    assert error_code(response) == "invalid_request"
    assert needle in response.json()["error"]["message"]


def test_malformed_json_body(client):
    response = client.post(
        "/v1/datastores/tiny/select",
        headers={**auth("alpha"), "Content-Type": "application/json"},
        content=b"{not json",
    )
    assert response.status_code == 422
    assert error_code(response) == "invalid_request"


def test_unknown_route_is_json_404(client):
    response = client.get("/v1/nothing-here", headers=auth("alpha"))
    assert response.status_code == 404 and error_code(response) == "not_found"


def test_rate_limit_429_with_retry_after(client):
    codes = [client.get("/v1/datastores", headers=auth("slow")) for _ in range(3)]
    limited = [r for r in codes if r.status_code == 429]
    assert limited, [r.status_code for r in codes]
    assert error_code(limited[0]) == "rate_limited"
    assert int(limited[0].headers["Retry-After"]) >= 1


def test_metrics_text(client):
    client.get("/healthz")
    text = client.get("/metrics").text
    assert "# TYPE less_http_requests_total counter" in text
    assert 'less_http_requests_total{method="GET",route="/healthz",status="200"}' in text
    assert "less_http_request_duration_seconds_bucket" in text
    assert "less_queue_depth " in text
    assert "# TYPE less_batch_size histogram" in text


def test_openapi_and_docs(client):
    spec = client.get("/openapi.json").json()
    assert "/v1/datastores/{name}/select" in spec["paths"]
    assert "SelectResponse" in spec["components"]["schemas"]
    assert client.get("/docs").status_code == 200
