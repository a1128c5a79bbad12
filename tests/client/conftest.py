"""Fixtures of the SDK tests; the fake server itself is in sdk_fakes.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sdk_fakes import Harness, Reply


@pytest.fixture(params=["sync", "async"])
def api(request: pytest.FixtureRequest) -> Callable[..., Harness]:
    """Builds a `Harness` of each client kind: `api(reply, reply, ..., max_retries=...)`."""

    def make(*replies: Reply, **kwargs: Any) -> Harness:
        return Harness(request.param, list(replies), **kwargs)

    return make


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LESS_API_KEY", raising=False)
    monkeypatch.delenv("LESS_BASE_URL", raising=False)
