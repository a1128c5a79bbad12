"""Per-team job limits (429 with Retry-After), jobs that keep killing the service end failed with
the reason, and a job with saved target features only searches again."""

from __future__ import annotations

import json
import logging
import time

import pytest
from fastapi.testclient import TestClient

from indexer.query import QueryEngine
from less_core.config import SelectionConfig
from less_core.data import Example
from less_wire import SelectRequest
from service.app import create_app
from service.errors import ServiceError
from service.jobs import JobLimits, JobStore
from tests.service.conftest import JOB_TIMEOUT_S, TARGETS, auth, make_settings, wait_job, wait_ready


def create(client: TestClient, team: str, datastore: str, body: dict):
    return client.post(f"/v1/datastores/{datastore}/jobs", headers=auth(team), json=body)


def test_team_job_limits_answer_429_with_retry_after(datastore_root, tiny_model_dir, tmp_path):
    settings = make_settings(
        datastore_root,
        tiny_model_dir,
        tmp_path,
        max_jobs_per_team=2,
        max_job_targets_per_team=5,
        retry_after_jobs_s=7,
    )
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        runner = client.app.state.services.job_runner
        runner.stop()  # nothing finishes: every job created stays unfinished
        one = {"targets": TARGETS[:1], "k": 2}
        three = {"targets": TARGETS, "k": 2}
        assert create(client, "alpha", "tiny", three).status_code == 202  # 3 targets
        over = create(client, "alpha", "tiny", three)  # 6 > 5 targets
        assert over.status_code == 429 and over.headers["Retry-After"] == "7"
        assert "exceed the limit of 5" in over.json()["error"]["message"]
        assert create(client, "alpha", "tiny", one).status_code == 202  # 4 targets, 2 jobs
        full = create(client, "alpha", "tiny", one)
        assert full.status_code == 429 and full.headers["Retry-After"] == "7"
        assert full.json()["error"]["code"] == "rate_limited"
        assert "2 unfinished jobs" in full.json()["error"]["message"]
        # Another team's limits are its own.
        assert create(client, "beta", "other", three).status_code == 202

        runner.start()
        jobs = client.app.state.services.jobs
        deadline = time.monotonic() + JOB_TIMEOUT_S
        while jobs.next_queued() is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        again = create(client, "alpha", "tiny", one)
        assert again.status_code == 202, again.text
        assert wait_job(client, again.json()["id"])["status"] == "succeeded"


def test_job_limits_are_checked_with_the_insert(tmp_path):
    store = JobStore(tmp_path)
    limits = JobLimits(max_jobs=1, max_targets=None, retry_after_s=3)
    request = SelectRequest(targets=TARGETS, k=2)
    store.create("alpha", "tiny", request, limits)
    with pytest.raises(ServiceError) as info:
        store.create("alpha", "tiny", request, limits)
    assert (info.value.status, info.value.retry_after) == (429, 3)
    store.create("beta", "tiny", request, limits)
    assert store.create("alpha", "tiny", request).status == "queued"  # no limits given


def test_a_job_interrupted_too_often_is_failed_with_the_reason(
    datastore_root, tiny_model_dir, tmp_path
):
    settings = make_settings(datastore_root, tiny_model_dir, tmp_path, job_max_attempts=2)
    store = JobStore(tmp_path)
    doomed = store.create("alpha", "tiny", SelectRequest(targets=TARGETS, k=3))
    again = store.create("alpha", "tiny", SelectRequest(targets=TARGETS, k=4))
    for job in (doomed, again):  # as if a previous process died while running them
        store.start(job.id)
    store.start(doomed.id)  # and doomed once more: its second start
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        failed = wait_job(client, doomed.id)
        assert failed["status"] == "failed" and failed["error"]["code"] == "internal"
        assert "stopped 2 times while running this job" in failed["error"]["message"]
        assert wait_job(client, again.id)["status"] == "succeeded"


def test_a_job_with_saved_features_only_searches_again(
    datastore_root, tiny_model_dir, tmp_path, reference_engine, monkeypatch, caplog
):
    """The state a job killed after its gradients leaves: the saved features are used as they
    are (the gradients are not computed again) and the result is the uninterrupted one."""
    request = SelectRequest(targets=TARGETS, k=6)
    examples = [Example.from_dict(t, require_id=False) for t in TARGETS]
    expected = reference_engine.select(examples, SelectionConfig(k=6))
    names = tuple(reference_engine.store.checkpoint_names)
    features = reference_engine.target_features(
        [reference_engine.tokenize_targets(examples)], names
    )[0]
    store = JobStore(tmp_path)
    job = store.create("alpha", "tiny", request)
    store.start(job.id)
    store.save_features(job.id, reference_engine.store.version, names, features)
    stale = store.create("alpha", "tiny", request)  # features of another version: recomputed
    store.save_features(stale.id, "another-version", names, features)

    computed: list[int] = []
    original = QueryEngine.target_features

    def counting(self, groups, *args, **kwargs):
        computed.extend(len(g) for g in groups)
        return original(self, groups, *args, **kwargs)

    monkeypatch.setattr(QueryEngine, "target_features", counting)
    caplog.set_level(logging.INFO, logger="service.jobs")
    with TestClient(create_app(make_settings(datastore_root, tiny_model_dir, tmp_path))) as client:
        wait_ready(client)
        assert wait_job(client, job.id)["status"] == "succeeded"
        body = client.get(f"/v1/jobs/{job.id}/result", headers=auth("alpha")).text
        assert wait_job(client, stale.id)["status"] == "succeeded"
        assert computed == [len(TARGETS)]  # the stale job's gradients only
        assert f"job {job.id} resumed from its saved target features" in caplog.text
        assert f"job {stale.id} resumed" not in caplog.text
        stale_body = client.get(f"/v1/jobs/{stale.id}/result", headers=auth("alpha")).text
    rows = [json.loads(line) for line in body.splitlines()]
    assert [r["id"] for r in rows] == expected.ids
    assert [r["score"] for r in rows] == expected.scores
    assert stale_body == body
    assert not store.features_path(job.id).exists()
