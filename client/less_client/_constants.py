"""Defaults of the SDK: timeouts, retry policy and the environment variables it reads."""

from __future__ import annotations

from importlib.metadata import version

import httpx

# A selection computes target gradients on the server's GPU (CPU fallback) before searching,
# so reads get a generous limit; connecting to a live server should be quick.
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=5.0)
DEFAULT_MAX_RETRIES = 2
INITIAL_RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 8.0
# A Retry-After longer than this is not slept through: the error is raised with its
# `retry_after` so the caller decides, instead of blocking for minutes (see _base.RetryPolicy).
MAX_RETRY_AFTER = 60.0
RETRY_JITTER = 0.25

BASE_URL_ENV = "LESS_BASE_URL"
API_KEY_ENV = "LESS_API_KEY"
DEFAULT_BASE_URL = "http://127.0.0.1:8000"

USER_AGENT = f"less-client/{version('less-client')}"
