"""Unit tests of service parts: settings, token bucket, metrics text, overload, timeout."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from less_core.config import SelectionConfig
from less_core.data import Example
from less_core.errors import ConfigError
from service.app import create_app
from service.auth import TokenBucket
from service.errors import ServiceError
from service.metrics import Metrics
from service.registry import default_engine_factory
from service.settings import hash_key, load_settings
from service.worker import Worker, WorkItem
from tests.service.conftest import TARGETS, auth, make_settings, wait_ready

DS = {"path": "/nowhere/ds", "model_dir": "/nowhere/model"}
TEAM = {"key_sha256": [hash_key("k")], "datastores": ["a"]}


def test_settings_file_env_and_defaults(tmp_path, monkeypatch):
    config = tmp_path / "service.json"
    config.write_text(json.dumps({"datastores": {"a": DS}, "teams": {"t": TEAM}, "queue_max": 7}))
    monkeypatch.setenv("LESS_QUEUE_MAX", "9")  # the environment beats the file
    settings = load_settings(config)
    assert settings.queue_max == 9
    assert settings.max_targets == 64 and settings.batch_window_ms == 5
    assert settings.resolved_jobs_dir.name == "less-jobs"


@pytest.mark.parametrize(
    ("teams", "needle"),
    [
        ({"t": {**TEAM, "datastores": ["b"]}}, "unknown datastore"),
        ({"t": {**TEAM, "key_sha256": ["not-hex"]}}, "64 hex digits"),
        ({"t": TEAM, "u": TEAM}, "one API key is configured for teams"),
    ],
)
def test_settings_errors_are_clear(teams, needle):
    with pytest.raises(ConfigError, match=needle):
        load_settings(datastores={"a": DS}, teams=teams)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_settings(tmp_path / "absent.json", datastores={"a": DS}, teams={"t": TEAM})


def test_token_bucket_refills():
    now = [0.0]
    bucket = TokenBucket(rate_per_minute=60, burst=2, clock=lambda: now[0])
    assert bucket.take() == 0 and bucket.take() == 0
    assert bucket.take() == pytest.approx(1.0)
    now[0] = 0.5
    assert bucket.take() == pytest.approx(0.5)
    now[0] = 1.0
    assert bucket.take() == 0


def test_metrics_render_format():
    metrics = Metrics(queue_depth=lambda: 3, gpu_memory=lambda: None)
    metrics.requests.inc("GET", "/x", "200")
    metrics.batch_size.observe(4)
    text = metrics.render()
    assert 'less_http_requests_total{method="GET",route="/x",status="200"} 1' in text
    assert 'less_batch_size_bucket{le="2"} 0' in text and 'less_batch_size_bucket{le="4"} 1' in text
    assert 'less_batch_size_bucket{le="+Inf"} 1' in text and "less_batch_size_sum 4" in text
    assert (
        "less_queue_depth 3" in text and "less_gpu_memory" not in text.split("# TYPE less_gpu")[1]
    )


def test_full_queue_is_503_with_retry_after(datastore_root, tiny_model_dir, tmp_path):
    settings = make_settings(datastore_root, tiny_model_dir, tmp_path, queue_max=1)
    metrics = Metrics(queue_depth=lambda: None, gpu_memory=lambda: None)
    worker = Worker(settings, registry=None, metrics=metrics)  # not started: nothing drains

    def item_for_tiny() -> WorkItem:
        return WorkItem("tiny", [], ("checkpoint-1",), (1.0,), k=1, aggregate="max", max_tokens=64)

    item = item_for_tiny()
    worker.submit(item)
    with pytest.raises(ServiceError) as info:
        worker.submit(item_for_tiny())
    assert (info.value.status, info.value.code, info.value.retry_after) == (503, "overloaded", 1)
    worker.stop(timeout=1)
    assert isinstance(item.future.exception(timeout=1), ServiceError)


def test_request_timeout_is_504(datastore_root, tiny_model_dir, tmp_path):
    settings = make_settings(datastore_root, tiny_model_dir, tmp_path, request_timeout_s=0.001)
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        response = client.post(
            "/v1/datastores/tiny/select", headers=auth("alpha"), json={"targets": TARGETS, "k": 2}
        )
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "timeout"


@pytest.mark.cuda
def test_select_on_cuda_matches_cpu_library(
    datastore_root, tiny_model_dir, tmp_path, reference_engine
):
    settings = make_settings(datastore_root, tiny_model_dir, tmp_path, device="cuda")
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        body = client.post(
            "/v1/datastores/tiny/select", headers=auth("alpha"), json={"targets": TARGETS, "k": 10}
        ).json()
        assert "less_gpu_memory_allocated_bytes " in client.get("/metrics").text
    examples = [Example.from_dict(t, require_id=False) for t in TARGETS]
    expected = reference_engine.select(examples, SelectionConfig(k=10))
    # Different devices: same ranking expected, scores to float32 accumulation tolerance.
    assert [s["id"] for s in body["selected"]] == expected.ids
    assert [s["score"] for s in body["selected"]] == pytest.approx(expected.scores, abs=1e-4)


def test_unexpected_error_is_json_500(datastore_root, tiny_model_dir, tmp_path, caplog):
    def broken_engine(store, config, device):
        engine = default_engine_factory(store, config, device)

        def boom(requests, on_gradients=None):
            raise RuntimeError("simulated engine failure")

        engine.select_each = boom
        return engine

    settings = make_settings(datastore_root, tiny_model_dir, tmp_path)
    app = create_app(settings, engine_factory=broken_engine)
    # The server re-raises after answering; the client should only see the JSON body.
    with TestClient(app, raise_server_exceptions=False) as client:
        wait_ready(client)
        response = client.post(
            "/v1/datastores/tiny/select", headers=auth("alpha"), json={"targets": TARGETS, "k": 2}
        )
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal"
    assert response.json()["error"]["message"].startswith("internal error")
    assert "simulated engine failure" not in response.text
    assert "simulated engine failure" in caplog.text


def test_a_team_holds_at_most_its_share_of_pending_selects(
    datastore_root, tiny_model_dir, tmp_path
):
    from service.auth import Team
    from service.selector import Selector

    settings = make_settings(
        datastore_root, tiny_model_dir, tmp_path, max_pending_selects_per_team=2
    )
    metrics = Metrics(queue_depth=lambda: None, gpu_memory=lambda: None)
    selector = Selector(settings, registry=None, worker=None, cache=None, metrics=metrics)
    alpha, beta = Team("alpha", frozenset()), Team("beta", frozenset())
    with selector._team_slot(alpha), selector._team_slot(alpha):
        with pytest.raises(ServiceError) as info:
            with selector._team_slot(alpha):
                pass
        assert (info.value.status, info.value.code, info.value.retry_after) == (
            429,
            "rate_limited",
            settings.retry_after_busy_s,
        )
        assert "2 selects in flight (limit 2)" in info.value.message
        with selector._team_slot(beta):  # another team is not held up
            pass
    with selector._team_slot(alpha), selector._team_slot(alpha):  # slots come back
        pass
    assert 'reason="team_pending"' in metrics.render()
