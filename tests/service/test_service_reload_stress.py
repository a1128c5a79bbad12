"""Several publishes while selects stream in: every answer is a whole answer of one version."""

from __future__ import annotations

import threading
import time

from fastapi.testclient import TestClient

from indexer.datastore import current_version, publish_pointer
from service.app import create_app
from tests.conftest import make_rows, write_jsonl
from tests.indexer.test_append import append, copy_store
from tests.service.conftest import TARGETS, auth, make_settings, wait_ready

N_APPENDS = 3
N_STREAMS = 4
ROUNDS = 2
WAIT_S = 60
BODIES = [{"targets": TARGETS, "k": 6}, {"targets": TARGETS[1:], "k": 9, "aggregate": "mean"}]


def answer(body: dict) -> dict:
    return {k: v for k, v in body.items() if k not in ("timings", "cached")}


def test_concurrent_selects_across_several_publishes(
    tmp_path, datastore_root, tiny_model_dir, warmup_dir
):
    root = copy_store(datastore_root, tmp_path / "tiny")
    versions = [current_version(root)]
    for i in range(N_APPENDS):
        # Rows shaped like the targets, new ids per version: each version's answer differs.
        rows = make_rows(1, seed=30 + i, prefix=f"v{i}-")
        rows += [{**t, "id": f"v{i}-target-{j}"} for j, t in enumerate(TARGETS)]
        for row in rows:
            row.pop("subtask", None)
        append(root, tiny_model_dir, warmup_dir, write_jsonl(tmp_path / f"v{i}.jsonl", rows))
        versions.append(current_version(root))
    assert len(set(versions)) == N_APPENDS + 1

    settings = make_settings(
        root, tiny_model_dir, tmp_path / "jobs", reload_interval_s=0, cache_size=0
    )
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        registry = client.app.state.services.registry

        def post(b: int):
            return client.post("/v1/datastores/tiny/select", headers=auth("alpha"), json=BODIES[b])

        def switch(version: str) -> None:
            publish_pointer(root, version)
            result = registry.reload("tiny")["tiny"]
            assert result == "unchanged" or result.startswith("reloaded"), result

        expected: dict[tuple[int, str], dict] = {}
        for version in versions:
            switch(version)
            for b in range(len(BODIES)):
                got = answer(post(b).json())
                assert got["datastore_version"] == version
                expected[(b, version)] = got
        assert len({str(v) for v in expected.values()}) == len(expected)  # all distinct

        answers: list[tuple[int, int, dict]] = []
        stop = threading.Event()

        def stream(s: int) -> None:
            while not stop.is_set():
                response = post(s % len(BODIES))
                answers.append((s % len(BODIES), response.status_code, response.json()))

        threads = [threading.Thread(target=stream, args=(s,)) for s in range(N_STREAMS)]
        for thread in threads:
            thread.start()
        try:
            for _ in range(ROUNDS):
                for version in versions[1:] + versions[:1]:
                    seen = len(answers)
                    switch(version)
                    deadline = time.monotonic() + WAIT_S
                    while len(answers) < seen + N_STREAMS and time.monotonic() < deadline:
                        time.sleep(0.01)
        finally:
            stop.set()
            for thread in threads:
                thread.join(WAIT_S)

    bad = [(status, body) for _, status, body in answers if status != 200]
    assert bad == [], bad[:3]
    seen_versions = set()
    for b, _, body in answers:
        got = answer(body)
        assert got == expected[(b, got["datastore_version"])]
        seen_versions.add(got["datastore_version"])
    assert seen_versions == set(versions), seen_versions
    assert len(answers) >= ROUNDS * len(versions) * N_STREAMS
