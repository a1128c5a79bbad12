"""Steering options over HTTP: the service answers what the engine answers alone, in select and
in jobs; bad options are JSON 4xx naming the problem; GET .../fields describes the metadata."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from indexer.requests import examples_from_targets, search_params, selection_config, steering_of
from indexer.selection_io import selected_examples
from less_wire import SelectRequest
from tests.service.conftest import TARGETS, auth, wait_job

AVOID = [{"prompt": "count to 4", "completion": "1 2 3 4"}]

STEERED = [
    {"k": 5, "filter": {"task": {"in": ["rev", "count"]}}, "explain": True},
    {"k": 6, "balance": "subtask", "max_similarity": 0.95},
    {"token_budget": 120, "avoid": AVOID, "avoid_weight": 0.5, "explain": True},
    {"fraction": 0.5, "filter": {"n_tokens": {"lte": 20}, "task": {"not_in": ["add"]}}},
]


def engine_answer(engine, body: dict) -> list[dict]:
    request = SelectRequest.model_validate({"targets": TARGETS, **body})
    selection = engine.select_many(
        [
            engine.prepare(
                examples_from_targets(request.targets),
                selection_config(request),
                search=search_params(request),
                avoid=examples_from_targets(request.avoid or []),
                steering=steering_of(request),
            )
        ]
    )[0]
    return [s.model_dump(mode="json") for s in selected_examples(selection)]


@pytest.mark.parametrize("options", STEERED)
def test_select_equals_the_engine_alone(client, reference_engine, options):
    response = client.post(
        "/v1/datastores/tiny/select", headers=auth("alpha"), json={"targets": TARGETS, **options}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    want = engine_answer(reference_engine, options)
    assert [s["id"] for s in body["selected"]] == [s["id"] for s in want]
    for got, ref in zip(body["selected"], want):
        assert got["score"] == pytest.approx(ref["score"], abs=1e-6)
        assert got["subtask"] == ref["subtask"]
        assert (got.get("explanation") is None) == (not options.get("explain"))
    assert body["n_tokens"] == sum(
        int(reference_engine.store.metadata.n_tokens[reference_engine.store.ids.index(s["id"])])
        for s in body["selected"]
    )


def test_filter_keeps_only_matching_rows_and_counts_candidates(client):
    body = {"targets": TARGETS, "fraction": 1.0, "filter": {"task": {"eq": "rev"}}}
    response = client.post("/v1/datastores/tiny/select", headers=auth("alpha"), json=body)
    assert response.status_code == 200, response.text
    out = response.json()
    assert out["n_candidates"] == 12 and len(out["selected"]) == 12
    assert all(s["id"].startswith("p-rev") for s in out["selected"])


def test_explanation_has_every_part(client):
    body = {"targets": TARGETS, "k": 3, "explain": True, "avoid": AVOID}
    out = client.post("/v1/datastores/tiny/select", headers=auth("alpha"), json=body).json()
    for row in out["selected"]:
        ex = row["explanation"]
        assert sum(c["score"] for c in ex["checkpoints"]) == pytest.approx(row["score"], abs=1e-5)
        assert {s["subtask"] for s in ex["subtasks"]} == {"math", "strings", "default"}
        assert 0 <= ex["closest_target"]["index"] < len(TARGETS)
        assert ex["avoid_similarity"] is not None and ex["n_tokens"] > 0
        assert ex["metadata"]["task"] == row["id"].split("-")[1]
        assert ex["preview"]


def test_steered_job_result_equals_select(client):
    body = {"targets": TARGETS, **STEERED[0]}
    job = client.post("/v1/datastores/tiny/jobs", headers=auth("alpha"), json=body).json()
    assert wait_job(client, job["id"])["status"] == "succeeded"
    lines = client.get(f"/v1/jobs/{job['id']}/result", headers=auth("alpha")).text.splitlines()
    selected = client.post("/v1/datastores/tiny/select", headers=auth("alpha"), json=body).json()
    assert [json.loads(line) for line in lines] == [
        {"rank": rank, **row} for rank, row in enumerate(selected["selected"], 1)
    ]


@pytest.mark.parametrize(
    "options, status, fragment",
    [
        ({"filter": {"task": {"eq": "nope"}}}, 400, "matches none"),
        ({"filter": {"colour": {"eq": "red"}}}, 400, "colour"),
        ({"filter": {"task": {"gte": 2}}}, 400, "task"),
        ({"filter": {"n_tokens": {"eq": "ten"}}}, 400, "n_tokens"),
        ({"k": 13, "filter": {"task": {"eq": "add"}}}, 400, "pass the filter"),
        ({"token_budget": 1}, 400, "smallest eligible row"),
        ({"filter": {"task": {}}}, 422, "filter.task"),
        ({"filter": {"task": {"in": []}}}, 422, "filter.task.in"),
        ({"balance": "tasks"}, 422, "balance"),
        ({"max_similarity": 1.5}, 422, "max_similarity"),
        ({"avoid": []}, 422, "avoid"),
        ({"avoid_weight": -1.0}, 422, "avoid_weight"),
        ({"token_budget": 0}, 422, "token_budget"),
        ({"avoid": [{"prompt": "x"}]}, 422, "avoid.0"),
        ({"explain": "yes"}, 422, "explain"),
    ],
)
def test_bad_options_are_clear_4xx(client, options, status, fragment):
    for route in ("select", "jobs"):
        response = client.post(
            f"/v1/datastores/tiny/{route}",
            headers=auth("alpha"),
            json={"targets": TARGETS, **options},
        )
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert fragment in error["message"]


def test_avoid_examples_count_against_the_target_limit(client):
    many = [{"prompt": f"p{i}", "completion": "c"} for i in range(64)]
    response = client.post(
        "/v1/datastores/tiny/select",
        headers=auth("alpha"),
        json={"targets": TARGETS, "avoid": many},
    )
    assert response.status_code == 400 and "at most 64" in response.json()["error"]["message"]


def test_fields_describe_the_pool(client, pool_path):
    response = client.get("/v1/datastores/tiny/fields", headers=auth("alpha"))
    assert response.status_code == 200, response.text
    fields = {f["name"]: f for f in response.json()["fields"]}
    rows = [json.loads(line) for line in pool_path.read_text().splitlines()]
    task = fields["task"]
    assert task["kind"] == "string" and task["n_missing"] == 0
    assert {v["value"]: v["count"] for v in task["top_values"]} == Counter(r["task"] for r in rows)
    assert fields["n_tokens"]["kind"] == "int" and fields["n_tokens"]["min"] >= 1
    summary = client.get("/v1/datastores/tiny", headers=auth("alpha")).json()
    assert "task" in summary["fields"] and summary["size_bytes"] > 0 and summary["n_shards"] == 1
    assert client.get("/v1/datastores/other/fields", headers=auth("alpha")).status_code == 404
    assert client.get("/v1/datastores/tiny/fields").status_code == 401


def test_infinite_filter_values_are_refused(client):
    """JSON's 1e400 parses as infinity: refused at the wire (a stored job request must read
    back as it was sent)."""
    for route in ("select", "jobs"):
        response = client.post(
            f"/v1/datastores/tiny/{route}",
            headers={**auth("alpha"), "Content-Type": "application/json"},
            content=b'{"targets": [{"prompt": "a", "completion": "b"}], "k": 1, '
            b'"filter": {"n_tokens": {"not_in": [1e400]}}}',
        )
        assert response.status_code == 422, response.text
        assert "filter.n_tokens.not_in" in response.json()["error"]["message"]


def test_a_stored_job_request_that_does_not_read_back_fails_alone(tmp_path):
    """A queued job whose stored request no longer validates fails with a reason instead of
    stopping the queue: the next queued job is handed out."""
    from service.jobs import JobStore

    store = JobStore(tmp_path)
    bad = store.create("alpha", "tiny", SelectRequest(targets=TARGETS, k=1))
    good = store.create("alpha", "tiny", SelectRequest(targets=TARGETS, k=2))
    with store._db() as db:
        db.execute("UPDATE jobs SET request = ? WHERE id = ?", ('{"targets": []}', bad.id))
    job_id, _, request = store.next_queued()
    assert job_id == good.id and request.k == 2
    failed = store.get(bad.id, "alpha")
    assert failed.status == "failed" and "read back" in failed.error.message


def test_explained_selects_are_capped_jobs_are_not(datastore_root, tiny_model_dir, tmp_path):
    from fastapi.testclient import TestClient

    from service.app import create_app
    from tests.service.conftest import make_settings, wait_ready

    settings = make_settings(
        datastore_root, tiny_model_dir, tmp_path, max_explained_rows=5, max_k=10
    )
    with TestClient(create_app(settings)) as capped:
        wait_ready(capped)
        body = {"targets": TARGETS, "k": 6, "explain": True}
        response = capped.post("/v1/datastores/tiny/select", headers=auth("alpha"), json=body)
        assert response.status_code == 400 and "use a job" in response.json()["error"]["message"]
        job = capped.post("/v1/datastores/tiny/jobs", headers=auth("alpha"), json=body).json()
        assert wait_job(capped, job["id"])["status"] == "succeeded"
        # A token budget alone: its upper bound on rows is capped by max_k, not refused.
        budget = {"targets": TARGETS, "token_budget": 10_000}
        response = capped.post("/v1/datastores/tiny/select", headers=auth("alpha"), json=budget)
        assert response.status_code == 200, response.text
        assert len(response.json()["selected"]) == 10
