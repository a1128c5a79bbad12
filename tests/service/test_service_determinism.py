"""Same request, same answer: across a restart, alone or batched, repeated, as a job; CPU vs GPU.

On one device the answer is identical to the last bit: ids and the float64 bits of every score
(compared as ``float.hex``; JSON floats round-trip exactly). The service is a real
``python -m service`` uvicorn process, started twice, one after the other, on the same datastore.
Across devices (a datastore built on the CPU and one built on a CUDA GPU, each queried on its own
device) the ids are identical and the scores agree within ``CPU_GPU_SCORE_ATOL``.
"""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from indexer.datastore import Datastore
from indexer.query import QueryEngine
from less_core.config import SelectionConfig
from less_core.data import Example
from service.launcher import service_process
from tests.conftest import build_tiny_datastore
from tests.service.conftest import KEYS, TARGETS, make_settings

START_TIMEOUT_S = 120
HTTP_TIMEOUT_S = 60
JOB_TIMEOUT_S = 120
#: Scores of a CPU-built vs a GPU-built datastore: float32 features of unit rows, summed over the
#: checkpoints with their learning-rate weights; different reduction orders give ~1e-6.
CPU_GPU_SCORE_ATOL = 1e-4

REQUESTS: list[dict[str, Any]] = [
    {"targets": TARGETS, "k": 48},  # the whole pool, ranked
    {"targets": TARGETS[:2], "k": 10, "aggregate": "mean"},
    {"targets": [TARGETS[2]], "k": 5, "checkpoints": ["checkpoint-6"]},
    {"targets": TARGETS[1:], "fraction": 0.25},
]

Answer = tuple[str, list[str], list[str]]  # (datastore version, ids, scores as float.hex)


def answer(body: dict[str, Any]) -> Answer:
    selected = body["selected"]
    return (
        body["datastore_version"],
        [s["id"] for s in selected],
        [float(s["score"]).hex() for s in selected],
    )


def batch_calls(http: httpx.Client) -> float | None:
    """Engine calls so far (``less_batch_size_count`` of /metrics); None where not readable."""
    resp = http.get("/metrics")
    if resp.status_code != 200:
        return None
    m = re.search(r"^less_batch_size_count (\S+)$", resp.text, re.M)
    return float(m.group(1)) if m else None


def job_answer(http: httpx.Client, body: dict[str, Any], version: str) -> Answer:
    created = http.post("/v1/datastores/tiny/jobs", json=body)
    assert created.status_code == 202, created.text
    job_id = created.json()["id"]
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while (job := http.get(f"/v1/jobs/{job_id}").json())["status"] not in ("succeeded", "failed"):
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
    assert job["status"] == "succeeded", job
    result = http.get(f"/v1/jobs/{job_id}/result")
    assert result.status_code == 200, result.text
    rows = [json.loads(line) for line in result.text.splitlines()]  # one SelectedExample each
    return version, [r["id"] for r in rows], [float(r["score"]).hex() for r in rows]


def answers_of_one_process(url: str) -> dict[str, list[Answer]]:
    """Each request alone, again (recomputed: no cache), all at once (batched), and as a job."""
    headers = {"Authorization": f"Bearer {KEYS['alpha']}"}
    with httpx.Client(base_url=url, headers=headers, timeout=HTTP_TIMEOUT_S) as http:

        def select(body: dict[str, Any]) -> Answer:
            resp = http.post("/v1/datastores/tiny/select", json=body)
            assert resp.status_code == 200, resp.text
            assert not resp.json()["cached"]
            return answer(resp.json())

        alone = [select(body) for body in REQUESTS]
        again = [select(body) for body in REQUESTS]
        calls = batch_calls(http)
        with ThreadPoolExecutor(len(REQUESTS)) as pool:
            batched = list(pool.map(select, REQUESTS))
        if calls is not None:
            after = batch_calls(http)
            assert after is not None and after - calls < len(REQUESTS), "no batching happened"
        job = [job_answer(http, REQUESTS[0], alone[0][0])]
    return {"alone": alone, "again": again, "batched": batched, "job": job}


def test_identical_answers_across_a_restart_batching_repeats_and_jobs(
    datastore_root, tiny_model_dir, tmp_path
):
    runs = []
    for i in range(2):  # two processes, one after the other, on the same datastore
        workdir = tmp_path / f"server-{i}"
        # No cache: every select is computed; a wide window: requests sent together batch.
        settings = make_settings(
            datastore_root, tiny_model_dir, workdir / "jobs", cache_size=0, batch_window_ms=300
        )
        with service_process(
            settings.model_dump(mode="json"), workdir, ready_timeout_s=START_TIMEOUT_S
        ) as url:
            runs.append(answers_of_one_process(url))

    first = runs[0]["alone"]
    assert [len(ids) for _, ids, _ in first] == [48, 10, 5, 12]
    for run in runs:
        assert run["again"] == first
        assert run["batched"] == first
        assert run["job"] == first[:1]
    assert runs[1]["alone"] == first


# --------------------------------------------------------------------------- CPU vs GPU


@pytest.mark.cuda
def test_cpu_and_gpu_builds_give_the_same_ids(tiny_model_dir, pool_path, warmup_dir, tmp_path):
    cpu_root = build_tiny_datastore(tmp_path / "cpu", tiny_model_dir, pool_path, warmup_dir, "cpu")
    gpu_root = build_tiny_datastore(tmp_path / "gpu", tiny_model_dir, pool_path, warmup_dir, "cuda")
    cpu = QueryEngine(Datastore.open(cpu_root), tiny_model_dir, "cpu")
    gpu = QueryEngine(Datastore.open(gpu_root), tiny_model_dir, "cuda")
    assert cpu.store.ids == gpu.store.ids
    for body in REQUESTS:
        examples = [Example.from_dict(t, require_id=False) for t in body["targets"]]
        config = SelectionConfig(
            k=body.get("k"),
            fraction=body.get("fraction"),
            checkpoints=tuple(body["checkpoints"]) if "checkpoints" in body else None,
            aggregate=body.get("aggregate", "max"),
        )
        on_cpu, on_gpu = cpu.select(examples, config), gpu.select(examples, config)
        assert on_gpu.ids == on_cpu.ids, (body, on_cpu.scores, on_gpu.scores)
        assert on_gpu.scores == pytest.approx(on_cpu.scores, abs=CPU_GPU_SCORE_ATOL)
