"""The service picks up a newly published (appended) version atomically, without a restart."""

from __future__ import annotations

import threading
import time

import pytest
from fastapi.testclient import TestClient

from indexer.datastore import Datastore, current_version, publish_pointer
from indexer.query import QueryEngine
from less_core.config import SelectionConfig
from less_core.data import Example
from less_wire import SelectRequest
from service.app import create_app
from service.errors import ServiceError
from service.worker import WorkItem
from tests.conftest import write_jsonl
from tests.indexer.test_append import append, copy_store, new_rows
from tests.service.conftest import TARGETS, auth, make_settings, wait_ready

K = 6
WAIT_S = 60
# Appended rows with the targets' own contents: their gradients match, so they get selected.
TARGET_ROWS = [{**t, "id": f"n-target-{i}"} for i, t in enumerate(TARGETS)]
for row in TARGET_ROWS:
    row.pop("subtask", None)


def rows_to_append() -> list[dict]:
    return new_rows(1) + TARGET_ROWS


def post(client: TestClient, k: int = K):
    return client.post(
        "/v1/datastores/tiny/select", headers=auth("alpha"), json={"targets": TARGETS, "k": k}
    )


def answer(body: dict) -> dict:
    """What must be identical between two answers of one version (timings aside)."""
    return {k: v for k, v in body.items() if k not in ("timings", "cached")}


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.02)


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory, datastore_root, tiny_model_dir, warmup_dir):
    """A datastore copy holding the base and an appended version, CURRENT on the base."""
    root = copy_store(datastore_root, tmp_path_factory.mktemp("reload") / "tiny")
    old = current_version(root)
    rows = write_jsonl(root.parent / "new.jsonl", rows_to_append())
    append(root, tiny_model_dir, warmup_dir, rows)
    new = current_version(root)
    publish_pointer(root, old)
    return root, old, new


def test_reload_switches_to_an_appended_version(
    tmp_path, datastore_root, tiny_model_dir, warmup_dir
):
    root = copy_store(datastore_root, tmp_path / "tiny")
    old = current_version(root)
    settings = make_settings(root, tiny_model_dir, tmp_path / "jobs", reload_interval_s=0)
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        registry = client.app.state.services.registry
        before = post(client).json()
        assert before["datastore_version"] == old and before["n_candidates"] == 48
        assert registry.reload() == {"tiny": "unchanged", "other": "unchanged"}

        append(
            root, tiny_model_dir, warmup_dir, write_jsonl(tmp_path / "n.jsonl", rows_to_append())
        )
        new = current_version(root)
        assert post(client).json()["datastore_version"] == old  # not before the reload
        assert registry.reload("tiny") == {"tiny": f"reloaded {old} -> {new}"}

        after = post(client).json()
        assert after["datastore_version"] == new
        assert after["n_candidates"] == 48 + len(rows_to_append())
        appended_ids = {r["id"] for r in rows_to_append()}
        assert appended_ids & {s["id"] for s in after["selected"]}
        summary = client.get("/v1/datastores/tiny", headers=auth("alpha")).json()
        assert (summary["version"], summary["n_examples"]) == (new, after["n_candidates"])
        assert client.get("/readyz").status_code == 200
        # "other" shares the root but was not reloaded: still the old version until it is.
        assert registry.store("other").version == old
        assert registry.reload() == {"tiny": "unchanged", "other": f"reloaded {old} -> {new}"}

    # The service's answer is the library's on the new version.
    engine = QueryEngine(Datastore.open(root, new), tiny_model_dir, "cpu")
    examples = [Example.from_dict(t, require_id=False) for t in TARGETS]
    expected = engine.select(examples, SelectionConfig(k=K))
    assert [s["id"] for s in after["selected"]] == expected.ids
    assert [s["score"] for s in after["selected"]] == pytest.approx(expected.scores, abs=1e-6)


def test_selects_during_the_switch_are_whole_answers_of_one_version(
    two_versions, tiny_model_dir, tmp_path
):
    """Streams of selects while the new engine loads and is swapped in: every answer is the old
    version's or the new one's, never an error or a mix."""
    root, old, new = two_versions
    publish_pointer(root, old)
    settings = make_settings(
        root,
        tiny_model_dir,
        tmp_path / "jobs",
        reload_interval_s=0,
        cache_size=0,
        batch_window_ms=20,
    )
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        registry = client.app.state.services.registry
        old_answer = answer(post(client).json())
        answers: list[tuple[int, dict]] = []
        stop = threading.Event()

        def stream() -> None:
            while not stop.is_set():
                response = post(client)
                answers.append((response.status_code, response.json()))

        threads = [threading.Thread(target=stream) for _ in range(3)]
        for thread in threads:
            thread.start()
        try:
            wait_for(lambda: len(answers) >= 6, "old answers")
            publish_pointer(root, new)
            assert registry.reload("tiny") == {"tiny": f"reloaded {old} -> {new}"}
            switched = len(answers)
            wait_for(lambda: len(answers) >= switched + 6, "new answers")
        finally:
            stop.set()
            for thread in threads:
                thread.join(WAIT_S)
        new_answer = answer(post(client).json())

    assert new_answer["datastore_version"] == new and old_answer["datastore_version"] == old
    assert new_answer != old_answer
    statuses = [status for status, _ in answers]
    assert statuses == [200] * len(answers), [body for status, body in answers if status != 200]
    seen = {old: 0, new: 0}
    for _, body in answers:
        got = answer(body)
        expected = old_answer if got["datastore_version"] == old else new_answer
        assert got == expected
        seen[got["datastore_version"]] += 1
    assert seen[old] >= 6 and seen[new] >= 6, seen


def test_a_request_prepared_before_the_switch_is_answered_by_its_version(
    two_versions, tiny_model_dir, tmp_path
):
    root, old, new = two_versions
    publish_pointer(root, old)
    settings = make_settings(root, tiny_model_dir, tmp_path / "jobs", reload_interval_s=0)
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        services = client.app.state.services
        request = SelectRequest(targets=TARGETS, k=48)  # every row of the old version
        prepared = services.selector.prepare("tiny", request)
        publish_pointer(root, new)
        services.registry.reload("tiny")
        _, future = services.selector.submit(prepared)
        selection = future.result(timeout=WAIT_S)
        assert prepared.version == old and selection.n_candidates == 48
        assert not any(i.startswith("n-") for i in selection.ids)
        # An item checked against the old version but not pinned to its engine: retry, not a mix.
        stale = WorkItem("tiny", [], ("checkpoint-6",), (1.0,), k=1, aggregate="max", max_tokens=64)
        stale.version = old
        error = services.worker.submit(stale).exception(timeout=WAIT_S)
        assert isinstance(error, ServiceError) and error.status == 503
        assert f"moved from version {old} to {new}" in error.message


def test_the_watch_thread_picks_up_a_new_version(two_versions, tiny_model_dir, tmp_path):
    root, old, new = two_versions
    publish_pointer(root, old)
    settings = make_settings(root, tiny_model_dir, tmp_path / "jobs", reload_interval_s=0.1)
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        registry = client.app.state.services.registry
        assert post(client).json()["datastore_version"] == old
        publish_pointer(root, new)
        wait_for(
            lambda: {registry.store(n).version for n in ("tiny", "other")} == {new},
            "the watch to reload both datastores",
        )
        assert post(client).json()["datastore_version"] == new


def test_a_version_that_fails_to_load_leaves_the_old_one_serving(
    two_versions, tiny_model_dir, tmp_path, caplog
):
    root, old, _ = two_versions
    publish_pointer(root, old)
    settings = make_settings(root, tiny_model_dir, tmp_path / "jobs", reload_interval_s=0)
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        registry = client.app.state.services.registry
        publish_pointer(root, "no-such-version")
        try:
            result = registry.reload("tiny")
        finally:
            publish_pointer(root, old)
        assert result["tiny"].startswith("failed no-such-version")
        assert registry.reload("tiny", retry_failed=False) == {"tiny": "unchanged"}
        response = post(client)
        assert response.status_code == 200 and response.json()["datastore_version"] == old
        assert client.get("/readyz").status_code == 200
