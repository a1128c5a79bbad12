"""Integration: the SDK over HTTP against a real ``python -m service`` uvicorn process."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest

from less_client import AsyncLessClient, AuthenticationError, LessClient, RateLimitError
from less_core.config import SelectionConfig
from less_core.data import Example
from service.launcher import service_process
from tests.service.conftest import KEYS, TARGETS, make_settings

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 90
N_CONCURRENT = 32


@pytest.fixture(scope="module")
def server(datastore_root, tiny_model_dir, tmp_path_factory):
    """A real server on a free loopback port; always terminated at teardown."""
    workdir = tmp_path_factory.mktemp("server")
    settings = make_settings(datastore_root, tiny_model_dir, workdir / "jobs")
    with service_process(
        settings.model_dump(mode="json"), workdir, ready_timeout_s=START_TIMEOUT_S
    ) as url:
        yield url


def library(reference_engine, targets, k):
    examples = [Example.from_dict(t, require_id=False) for t in targets]
    return reference_engine.select(examples, SelectionConfig(k=k))


def test_sdk_select_equals_library(server, reference_engine):
    with LessClient(server, api_key=KEYS["alpha"], timeout=30) as less:
        assert [d.name for d in less.list_datastores()] == ["tiny"]
        result = less.select("tiny", TARGETS, k=6)
    expected = library(reference_engine, TARGETS, 6)
    assert [s.id for s in result.selected] == expected.ids
    assert [s.score for s in result.selected] == pytest.approx(expected.scores, abs=1e-6)


def test_32_concurrent_async_queries(server, reference_engine):
    # 32 distinct requests (no cache hits): three target sets, k = 1..32.
    subsets = [[TARGETS[j % 3], TARGETS[(j + 1) % 3]] for j in range(3)]
    requests = [(i % 3, 1 + i) for i in range(N_CONCURRENT)]
    # Top-k is a prefix of the full ranking, so one library call per target set suffices.
    full = [library(reference_engine, targets, reference_engine.n) for targets in subsets]

    async def run_all():
        async with AsyncLessClient(server, api_key=KEYS["alpha"], timeout=60) as less:
            return await asyncio.gather(
                *(less.select("tiny", subsets[j], k=k) for j, k in requests)
            )

    results = asyncio.run(asyncio.wait_for(run_all(), timeout=120))
    for (j, k), result in zip(requests, results):
        assert [s.id for s in result.selected] == full[j].ids[:k]
        assert [s.score for s in result.selected] == pytest.approx(full[j].scores[:k], abs=1e-6)


def test_sdk_retries_on_429_then_succeeds(server):
    # Team "slow" has a burst of 1 and refills one token per second.
    with LessClient(server, api_key=KEYS["slow"], timeout=30, max_retries=0) as strict:
        strict.list_datastores()
        with pytest.raises(RateLimitError):
            strict.list_datastores()
    with LessClient(server, api_key=KEYS["slow"], timeout=30, max_retries=3) as less:
        less.list_datastores()  # may itself wait for a token
        start = time.monotonic()
        assert [d.name for d in less.list_datastores()] == ["tiny"]
        assert time.monotonic() - start >= 0.5  # it waited for Retry-After


def test_wrong_key_raises_authentication_error(server):
    with LessClient(server, api_key="not-a-key", timeout=30) as less:
        with pytest.raises(AuthenticationError):
            less.list_datastores()


def test_server_errors_are_json(server):
    response = httpx.post(
        f"{server}/v1/datastores/tiny/select",
        timeout=30,
        headers={"Authorization": f"Bearer {KEYS['alpha']}"},
        content=b"[",
    )
    assert response.status_code == 422
    assert json.loads(response.content)["error"]["code"] == "invalid_request"
