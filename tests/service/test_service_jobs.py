"""Jobs: create, poll, JSONL result equal to select; team scoping; survival across restarts."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from less_wire import SelectRequest
from service.app import create_app
from service.jobs import JobStore
from tests.service.conftest import JOB_TIMEOUT_S, TARGETS, auth, make_settings, wait_job, wait_ready


def result_lines(client: TestClient, job_id: str) -> list[dict]:
    response = client.get(f"/v1/jobs/{job_id}/result", headers=auth("alpha"))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in response.text.splitlines() if line]


def test_job_result_equals_select(client):
    body = {"targets": TARGETS, "fraction": 0.5}
    created = client.post("/v1/datastores/tiny/jobs", headers=auth("alpha"), json=body)
    assert created.status_code == 202, created.text
    job = created.json()
    assert job["status"] in ("queued", "running", "succeeded") and job["datastore"] == "tiny"
    done = wait_job(client, job["id"])
    assert done["status"] == "succeeded" and done["progress"] == 1.0 and done["n_selected"] == 24

    selected = client.post("/v1/datastores/tiny/select", headers=auth("alpha"), json=body).json()[
        "selected"
    ]
    # Selection-file lines carry no "explanation" key when there is none (the API says null).
    assert all(example.pop("explanation") is None for example in selected)
    assert result_lines(client, job["id"]) == [
        {"rank": rank, **example} for rank, example in enumerate(selected, 1)
    ]


def test_jobs_are_team_scoped(client):
    job = client.post(
        "/v1/datastores/tiny/jobs", headers=auth("alpha"), json={"targets": TARGETS, "k": 2}
    ).json()
    for path in (f"/v1/jobs/{job['id']}", f"/v1/jobs/{job['id']}/result"):
        response = client.get(path, headers=auth("beta"))
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert client.get("/v1/jobs/no-such-job", headers=auth("alpha")).status_code == 404


def test_bad_job_request_is_refused_up_front(client):
    response = client.post(
        "/v1/datastores/tiny/jobs", headers=auth("alpha"), json={"targets": TARGETS, "k": 49}
    )
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_request"


def test_jobs_survive_a_restart(datastore_root, tiny_model_dir, tmp_path):
    # Rows a previous process left behind: one queued, one interrupted while running, and one
    # whose request became impossible (k > N) so that it fails with a reason.
    store = JobStore(tmp_path)
    queued = store.create("alpha", "tiny", SelectRequest(targets=TARGETS, k=5))
    running = store.create("alpha", "tiny", SelectRequest(targets=TARGETS[:1], k=4))
    store.update(running.id, status="running", progress=0.5)
    doomed = store.create("alpha", "tiny", SelectRequest(targets=TARGETS, k=49))

    with TestClient(create_app(make_settings(datastore_root, tiny_model_dir, tmp_path))) as client:
        wait_ready(client)
        assert wait_job(client, queued.id)["status"] == "succeeded"
        assert wait_job(client, running.id)["status"] == "succeeded"
        failed = wait_job(client, doomed.id)
        assert failed["status"] == "failed" and failed["error"]["code"] == "invalid_request"
        conflict = client.get(f"/v1/jobs/{doomed.id}/result", headers=auth("alpha"))
        assert conflict.status_code == 409 and conflict.json()["error"]["code"] == "conflict"

        select = client.post(
            "/v1/datastores/tiny/select", headers=auth("alpha"), json={"targets": TARGETS, "k": 5}
        )
        assert [
            {k: v for k, v in line.items() if k != "rank"}
            for line in result_lines(client, queued.id)
        ] == [  # a file line has no "explanation" key when there is none; the API says null
            {k: v for k, v in row.items() if k != "explanation"}
            for row in select.json()["selected"]
        ]
        assert len(result_lines(client, running.id)) == 4


def test_gradient_hook_runs_once_before_the_result(client):
    services = client.app.state.services
    calls = []
    prepared = services.selector.prepare("tiny", SelectRequest(targets=TARGETS, k=3))
    _, future = services.selector.submit(prepared, on_gradients=lambda: calls.append(future.done()))
    selection = future.result(timeout=JOB_TIMEOUT_S)
    assert calls == [False] and len(selection.ids) == 3
