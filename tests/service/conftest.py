"""Service fixtures: settings over the shared tiny datastore, in-process app, reference engine."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from indexer.datastore import Datastore
from indexer.query import QueryEngine
from service.app import create_app
from service.settings import ServiceSettings, hash_key

KEYS = {"alpha": "alpha-key", "beta": "beta-key", "slow": "slow-key"}
READY_TIMEOUT_S = 60
JOB_TIMEOUT_S = 30


def auth(team: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[team]}"}


def make_settings(
    datastore_root: Path, model_dir: Path, jobs_dir: Path, **overrides
) -> ServiceSettings:
    """Two datastores over the same files: alpha may use 'tiny', beta only 'other'."""
    ds = {"path": str(datastore_root), "model_dir": str(model_dir)}
    teams = {
        "alpha": {"key_sha256": [hash_key(KEYS["alpha"])], "datastores": ["tiny"]},
        "beta": {"key_sha256": [hash_key(KEYS["beta"])], "datastores": ["other"]},
        # One token, refilled in ~1 s: the second quick request is rate limited.
        "slow": {
            "key_sha256": [hash_key(KEYS["slow"])],
            "datastores": ["tiny"],
            "rate_per_minute": 60,
            "burst": 1,
        },
    }
    values = dict(
        datastores={"tiny": ds, "other": ds}, teams=teams, jobs_dir=str(jobs_dir), device="cpu"
    )
    values.update(overrides)
    return ServiceSettings(**values)


def wait_ready(client: TestClient, timeout: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get("/readyz").status_code == 200:
            return
        time.sleep(0.05)
    raise TimeoutError(f"service not ready after {timeout} s: {client.get('/readyz').json()}")


def wait_job(client: TestClient, job_id: str, team: str = "alpha") -> dict:
    """Polls a job until it succeeded or failed; TimeoutError after ``JOB_TIMEOUT_S``."""
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}", headers=auth(team)).json()
        if job["status"] in ("succeeded", "failed"):
            return job
        time.sleep(0.05)
    raise TimeoutError(f"job {job_id} unfinished after {JOB_TIMEOUT_S} s")


@pytest.fixture(scope="session")
def reference_engine(datastore_root, tiny_model_dir) -> QueryEngine:
    return QueryEngine(Datastore.open(datastore_root), tiny_model_dir, "cpu")


@pytest.fixture(scope="module")
def client(datastore_root, tiny_model_dir, tmp_path_factory):
    """One ready in-process app per test module (the lifespan runs inside ``with``)."""
    settings = make_settings(datastore_root, tiny_model_dir, tmp_path_factory.mktemp("jobs"))
    with TestClient(create_app(settings)) as test_client:
        wait_ready(test_client)
        yield test_client


TARGETS = [
    {"prompt": "add 3 and 4 = ", "completion": "7", "subtask": "math"},
    {
        "messages": [
            {"role": "user", "content": "reverse abcde"},
            {"role": "assistant", "content": "edcba"},
        ],
        "subtask": "strings",
    },
    {
        "messages": [
            {"role": "user", "content": "shout hijk"},
            {"role": "assistant", "content": "HIJK!"},
        ]
    },
]

# Longer than the tiny datastore's max_length (64 tokens), the default per-target limit.
LONG_TARGET = {"prompt": "add " * 200, "completion": "1"}
