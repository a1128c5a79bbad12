"""Micro-batching: concurrent requests share engine calls and get the same answers as alone."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from tests.service.conftest import LONG_TARGET, TARGETS, auth, make_settings, wait_ready

N_REQUESTS = 8


def request_body(i: int) -> dict:
    # Distinct requests (no cache hits): different target subsets and k.
    return {"targets": [TARGETS[i % 3], TARGETS[(i + 1) % 3]], "k": 3 + i}


@pytest.fixture(scope="module")
def batching_client(datastore_root, tiny_model_dir, tmp_path_factory):
    # A wide window so that requests sent together from threads land in one batch.
    settings = make_settings(
        datastore_root,
        tiny_model_dir,
        tmp_path_factory.mktemp("jobs"),
        batch_window_ms=200,
        cache_size=0,
    )
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        yield client


def post(client: TestClient, body: dict):
    return client.post("/v1/datastores/tiny/select", headers=auth("alpha"), json=body)


def test_concurrent_requests_batch_and_match_sequential(batching_client):
    metrics = batching_client.app.state.services.metrics
    calls_before = metrics.batch_size.count()
    with ThreadPoolExecutor(N_REQUESTS) as pool:
        concurrent = list(
            pool.map(lambda i: post(batching_client, request_body(i)), range(N_REQUESTS))
        )
    calls = metrics.batch_size.count() - calls_before
    assert all(r.status_code == 200 for r in concurrent), [r.text for r in concurrent]
    assert calls < N_REQUESTS, f"{N_REQUESTS} requests took {calls} engine calls: no batching"
    assert 'less_batch_size_bucket{le="1"}' in batching_client.get("/metrics").text

    for i, response in enumerate(concurrent):
        alone = post(batching_client, request_body(i)).json()
        got = response.json()
        assert [s["id"] for s in got["selected"]] == [s["id"] for s in alone["selected"]]
        assert [s["score"] for s in got["selected"]] == pytest.approx(
            [s["score"] for s in alone["selected"]], abs=1e-6
        )


def test_bad_request_in_a_batch_fails_alone(batching_client):
    bodies = [request_body(i) for i in range(4)]
    bodies.insert(2, {"targets": [TARGETS[0], LONG_TARGET], "k": 2})
    with ThreadPoolExecutor(len(bodies)) as pool:
        responses = list(pool.map(lambda b: post(batching_client, b), bodies))
    assert [r.status_code for r in responses] == [200, 200, 400, 200, 200]
    assert "targets[1]" in responses[2].json()["error"]["message"]
