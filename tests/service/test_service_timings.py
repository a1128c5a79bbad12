"""A select's timings are the wall times it waited for, not its share of its micro-batch's."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient

from indexer.query import QueryEngine
from indexer.search import ShardSearcher
from service.app import create_app
from tests.service.conftest import TARGETS, auth, make_settings, wait_ready

N_REQUESTS = 4
GRADIENT_S = 0.4  # added to each engine call's target gradients
SEARCH_S = 0.2  # added to each engine call's search


@pytest.fixture
def slow_engine(monkeypatch):
    """Every engine call's gradient and search phases take at least GRADIENT_S and SEARCH_S."""
    target_features, search = QueryEngine.target_features, ShardSearcher.search

    def slow_features(self, *args, **kwargs):
        time.sleep(GRADIENT_S)
        return target_features(self, *args, **kwargs)

    def slow_search(self, *args, **kwargs):
        time.sleep(SEARCH_S)
        return search(self, *args, **kwargs)

    monkeypatch.setattr(QueryEngine, "target_features", slow_features)
    monkeypatch.setattr(ShardSearcher, "search", slow_search)


@pytest.fixture
def batching_client(datastore_root, tiny_model_dir, tmp_path, slow_engine):
    # A wide window: requests sent together from threads land in one batch.
    settings = make_settings(
        datastore_root, tiny_model_dir, tmp_path / "jobs", batch_window_ms=1000, cache_size=0
    )
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        yield client


def test_batched_requests_report_the_batch_wall_times(batching_client):
    metrics = batching_client.app.state.services.metrics
    calls_before = metrics.batch_size.count()

    def post(i: int):
        body = {"targets": [TARGETS[i % 3]], "k": 2 + i}
        return batching_client.post("/v1/datastores/tiny/select", headers=auth("alpha"), json=body)

    with ThreadPoolExecutor(N_REQUESTS) as pool:
        responses = list(pool.map(post, range(N_REQUESTS)))
    assert [r.status_code for r in responses] == [200] * N_REQUESTS, [r.text for r in responses]
    calls = metrics.batch_size.count() - calls_before
    assert calls == 1, f"{N_REQUESTS} requests took {calls} engine calls; the test needs one"

    for response in responses:
        t = response.json()["timings"]
        # Each request waited for the whole batch's gradients and search: not 1/N of them.
        assert t["gradient_ms"] >= GRADIENT_S * 1000, t
        assert t["search_ms"] >= SEARCH_S * 1000, t
        # The phases follow one another inside the request's total.
        assert t["queue_ms"] + t["gradient_ms"] + t["search_ms"] <= t["total_ms"] + 1, t


def test_a_cached_answer_reports_no_compute(datastore_root, tiny_model_dir, tmp_path):
    settings = make_settings(datastore_root, tiny_model_dir, tmp_path / "jobs")
    body = {"targets": TARGETS[:2], "k": 3}
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        first, again = (
            client.post("/v1/datastores/tiny/select", headers=auth("alpha"), json=body).json()
            for _ in range(2)
        )
    assert not first["cached"] and first["timings"]["gradient_ms"] > 0
    assert again["cached"]
    assert again["timings"]["gradient_ms"] == again["timings"]["search_ms"] == 0
