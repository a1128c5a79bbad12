"""A scripted fake LESS server behind `httpx.MockTransport`, and canned API payloads.

`Harness` wraps `LessClient` or `AsyncLessClient` in one blocking surface, so the two clients
are held to one set of expectations (see the `api` fixture in conftest.py).
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Callable
from typing import Any

import httpx

from less_client import AsyncLessClient, LessClient

BASE_URL = "http://less.test"
API_KEY = "sk-test-123"

Reply = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


class FakeServer:
    """Answers requests with scripted replies, in order, and records what it was sent."""

    def __init__(self, replies: list[Reply]) -> None:
        self.replies = list(replies)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if not self.replies:
            raise AssertionError(f"unexpected request {request.method} {request.url}")
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        if callable(reply):
            return reply(request)
        return reply

    def bodies(self) -> list[Any]:
        return [json.loads(r.content) if r.content else None for r in self.requests]

    def paths(self) -> list[str]:
        return [f"{r.method} {r.url.raw_path.decode()}" for r in self.requests]


class Harness:
    """A client of either kind over a `FakeServer`, with sleeps recorded instead of slept."""

    def __init__(self, kind: str, replies: list[Reply], **kwargs: Any) -> None:
        self.kind = kind
        self.server = FakeServer(replies)
        self.sleeps: list[float] = []
        kwargs.setdefault("base_url", BASE_URL)
        kwargs.setdefault("api_key", API_KEY)
        transport = httpx.MockTransport(self.server)
        if kind == "sync":
            self.raw: LessClient | AsyncLessClient = LessClient(
                http_client=httpx.Client(transport=transport), **kwargs
            )
            self.raw._sleep = self.sleeps.append  # type: ignore[method-assign]
        else:
            self.raw = AsyncLessClient(http_client=httpx.AsyncClient(transport=transport), **kwargs)

            async def record_sleep(delay: float) -> None:
                self.sleeps.append(delay)

            self.raw._sleep = record_sleep  # type: ignore[method-assign]

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.raw, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            result = attribute(*args, **kwargs)
            if inspect.iscoroutine(result):
                return asyncio.run(result)
            if inspect.isasyncgen(result):
                return asyncio.run(_collect(result))
            if inspect.isgenerator(result):
                return list(result)
            return result

        return call


async def _collect(items: Any) -> list[Any]:
    return [item async for item in items]


def error(status: int, code: str, message: str, **headers: str) -> httpx.Response:
    """An error answer in the service's `{error: {code, message}}` format."""
    return httpx.Response(
        status, json={"error": {"code": code, "message": message}}, headers=headers
    )


def job(status: str, progress: float = 0.0, **extra: Any) -> dict[str, Any]:
    return {
        "id": "job-1",
        "datastore": "pool-a",
        "status": status,
        "progress": progress,
        "created_at": "2025-01-01T00:00:00Z",
        "updated_at": "2025-01-01T00:00:05Z",
        **extra,
    }


SELECT_RESPONSE: dict[str, Any] = {
    "datastore": "pool-a",
    "datastore_version": "v3",
    "selected": [
        {"id": "ex-7", "score": 0.91, "subtask": "arith"},
        {"id": "ex-2", "score": 0.5, "subtask": None},
    ],
    "n_candidates": 1000,
    "timings": {"gradient_ms": 12.5, "search_ms": 3.0, "total_ms": 16.0},
}

DATASTORE: dict[str, Any] = {
    "name": "pool-a",
    "version": "v3",
    "model_id": "smollm2-135m",
    "n_examples": 1000,
    "checkpoints": [{"name": "ckpt-1", "lr": 2e-5, "weight": 0.5}],
    "projector": {"kind": "rademacher", "dim": 8192, "seed": 0, "scope": "per-layer"},
    "feature_dtype": "float16",
    "created_at": "2025-01-01T00:00:00Z",
}

EXPLANATION: dict[str, Any] = {
    "checkpoints": [
        {"checkpoint": "ckpt-1", "weight": 0.5, "score": 0.41},
        {"checkpoint": "ckpt-2", "weight": 0.5, "score": 0.5},
    ],
    "subtasks": [{"subtask": "arith", "score": 0.91}, {"subtask": "geo", "score": 0.2}],
    "closest_target": {"index": 0, "id": "t1", "subtask": "arith", "similarity": 0.97},
    "avoid_similarity": 0.1,
    "n_tokens": 57,
    "metadata": {"lang": "en", "n_turns": 2, "verified": True, "note": None},
    "preview": "What is 7*6? 42",
}
"""One row's `explanation`, every field filled."""

SELECT_EXPLAINED: dict[str, Any] = {
    **SELECT_RESPONSE,
    "selected": [
        {"id": "ex-7", "score": 0.91, "subtask": "arith", "explanation": EXPLANATION},
        {"id": "ex-2", "score": 0.5, "subtask": None},
    ],
    "n_candidates": 400,
    "n_tokens": 99,
}
"""A select answer to `explain: true` (the second row has no explanation, as an old server)."""

FIELDS: dict[str, Any] = {
    "datastore": "pool-a",
    "version": "v3",
    "n_examples": 1000,
    "fields": [
        {
            "name": "lang",
            "kind": "string",
            "n_missing": 10,
            "n_distinct": 2,
            "top_values": [{"value": "en", "count": 900}, {"value": "fr", "count": 90}],
        },
        {
            "name": "n_tokens",
            "kind": "int",
            "n_missing": 0,
            "n_distinct": 412,
            "min": 3,
            "max": 2048,
        },
        {
            "name": "verified",
            "kind": "bool",
            "n_missing": 0,
            "n_distinct": 2,
            "top_values": [{"value": True, "count": 600}, {"value": False, "count": 400}],
        },
    ],
}
"""Body of `GET /v1/datastores/pool-a/fields`."""
