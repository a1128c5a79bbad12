"""Selection jobs: creation, polling to success or failure, JSONL results (sync and async)."""

from __future__ import annotations

import httpx
import pytest
from sdk_fakes import error, job

from less_client import (
    APIResponseValidationError,
    ConflictError,
    Job,
    JobFailedError,
    JobTimeoutError,
    SelectedExample,
)
from less_client._base import JobWaiter

TARGETS = [{"prompt": "2+2=", "completion": "4", "subtask": "math"}]


def test_create_job_posts_the_selection(api):
    h = api(httpx.Response(202, json=job("queued")))
    created = h.create_job("pool-a", TARGETS, fraction=0.5, aggregate="mean")
    assert h.server.paths() == ["POST /v1/datastores/pool-a/jobs"]
    assert h.server.bodies() == [
        {"targets": TARGETS, "fraction": 0.5, "aggregate": "mean", "return_scores": True}
    ]
    assert isinstance(created, Job)
    assert (created.id, created.status, created.progress) == ("job-1", "queued", 0.0)


def test_wait_for_job_polls_until_success(api):
    h = api(
        httpx.Response(200, json=job("queued")),
        httpx.Response(200, json=job("running", 0.25)),
        httpx.Response(200, json=job("running", 0.75)),
        httpx.Response(200, json=job("succeeded", 1.0, n_selected=50)),
    )
    seen: list[tuple[str, float]] = []
    done = h.wait_for_job(
        "job-1", poll_interval=0.2, on_progress=lambda j: seen.append((j.status, j.progress))
    )
    assert done.status == "succeeded"
    assert done.n_selected == 50
    assert seen == [("queued", 0.0), ("running", 0.25), ("running", 0.75), ("succeeded", 1.0)]
    assert h.sleeps == [0.2, 0.2, 0.2]
    assert h.server.paths() == ["GET /v1/jobs/job-1"] * 4


def test_wait_for_job_raises_the_servers_error_on_failure(api):
    failed = job("failed", 0.4, error={"code": "internal", "message": "CUDA out of memory"})
    h = api(httpx.Response(200, json=job("running", 0.4)), httpx.Response(200, json=failed))
    with pytest.raises(JobFailedError) as info:
        h.wait_for_job("job-1")
    exc = info.value
    assert (exc.code, exc.message) == ("internal", "CUDA out of memory")
    assert exc.job.status == "failed"
    assert str(exc) == "job job-1 failed: internal: CUDA out of memory"


def test_failed_job_without_error_body(api):
    h = api(httpx.Response(200, json=job("failed")))
    with pytest.raises(JobFailedError, match="without an error message"):
        h.wait_for_job("job-1")


def test_wait_for_job_times_out_on_the_clock(api):
    h = api(*[httpx.Response(200, json=job("running", 0.1)) for _ in range(3)])
    clock = [100.0]
    h.raw._clock = lambda: clock[0]
    sleep = h.raw._sleep

    def advance(delay: float):
        clock[0] += delay
        return sleep(delay)

    h.raw._sleep = advance
    with pytest.raises(JobTimeoutError, match="still running") as info:
        h.wait_for_job("job-1", poll_interval=1.0, timeout=1.5)
    assert isinstance(info.value, TimeoutError)
    assert h.sleeps == [1.0, 0.5]  # the last wait is cut to the deadline
    assert len(h.server.requests) == 3


def test_waiter_refuses_bad_settings():
    with pytest.raises(ValueError, match="poll_interval"):
        JobWaiter(0, None, None, lambda: 0.0)
    with pytest.raises(ValueError, match="timeout"):
        JobWaiter(1, -1, None, lambda: 0.0)


def test_job_errors_come_through_as_status_errors(api):
    h = api(error(404, "not_found", "no job 'nope'"))
    with pytest.raises(Exception, match="404 not_found: no job 'nope'"):
        h.wait_for_job("nope")


def test_job_results_parse_jsonl(api):
    body = (
        '{"id": "ex-3", "score": 0.9, "subtask": "math"}\n'
        "\n"
        '{"id": "ex-1", "score": null, "subtask": null}\n'
    )
    h = api(httpx.Response(200, text=body, headers={"content-type": "application/x-ndjson"}))
    results = h.job_results("job-1")
    assert h.server.paths() == ["GET /v1/jobs/job-1/result"]
    assert results == [
        SelectedExample(id="ex-3", score=0.9, subtask="math"),
        SelectedExample(id="ex-1", score=None, subtask=None),
    ]


def test_iter_job_results_streams(api):
    lines = "".join(f'{{"id": "ex-{i}", "score": {i / 10}, "subtask": null}}\n' for i in range(5))
    h = api(httpx.Response(200, text=lines))
    assert [r.id for r in h.iter_job_results("job-1")] == [f"ex-{i}" for i in range(5)]


def test_malformed_result_line_names_the_line(api):
    h = api(httpx.Response(200, text='{"id": "ex-1", "score": 1, "subtask": null}\n{"score": 2}\n'))
    with pytest.raises(APIResponseValidationError, match="line 2"):
        h.job_results("job-1")


def test_results_of_an_unfinished_job_conflict(api):
    h = api(error(409, "conflict", "job job-1 is running"))
    with pytest.raises(ConflictError, match="is running"):
        h.job_results("job-1")
