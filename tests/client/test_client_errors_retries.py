"""Error statuses → exceptions, and the retry policy; each client test runs sync and async."""

from __future__ import annotations

import email.utils
import random
import time

import httpx
import pytest
from sdk_fakes import SELECT_RESPONSE, error

from less_client import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RetryPolicy,
    ServiceUnavailableError,
    UnprocessableEntityError,
)
from less_client._exceptions import make_status_error, parse_retry_after

TARGETS = [{"prompt": "2+2=", "completion": "4"}]
OK = {"datastores": []}


def ok() -> httpx.Response:
    return httpx.Response(200, json=OK)


def no_jitter(h, max_retries: int = 2) -> None:
    h.raw.retry_policy = RetryPolicy(max_retries=max_retries, jitter=0.0)


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (400, "invalid_request", BadRequestError),
        (401, "unauthorized", AuthenticationError),
        (403, "forbidden", PermissionDeniedError),
        (404, "not_found", NotFoundError),
        (409, "conflict", ConflictError),
        (422, "invalid_request", UnprocessableEntityError),
        (429, "rate_limited", RateLimitError),
        (500, "internal", InternalServerError),
        (503, "overloaded", ServiceUnavailableError),
        (504, "timeout", InternalServerError),
    ],
)
def test_each_error_status_raises_its_class(api, status, code, cls):
    h = api(error(status, code, f"it went wrong ({status})"), max_retries=0)
    with pytest.raises(cls) as info:
        h.select("pool-a", TARGETS, k=1)
    exc = info.value
    assert type(exc) is cls
    assert (exc.status_code, exc.code, exc.message) == (status, code, f"it went wrong ({status})")
    assert str(exc) == f"{status} {code}: it went wrong ({status})"
    assert exc.response.status_code == status


def test_service_unavailable_is_a_server_error():
    assert issubclass(ServiceUnavailableError, InternalServerError)
    assert issubclass(APITimeoutError, APIConnectionError)


@pytest.mark.parametrize(
    ("response", "cls", "code", "message"),
    [
        (
            httpx.Response(502, text="<html>Bad Gateway</html>"),
            InternalServerError,
            "internal",
            "<html>Bad Gateway</html>",
        ),
        (
            httpx.Response(404, json={"detail": "Not Found"}),
            NotFoundError,
            "not_found",
            "Not Found",
        ),
        (
            httpx.Response(422, json={"detail": [{"loc": ["body", "k"], "msg": "bad"}]}),
            UnprocessableEntityError,
            "invalid_request",
            '[{"loc": ["body", "k"], "msg": "bad"}]',
        ),
        (
            httpx.Response(418, json=["not", "an", "object"]),
            APIStatusError,
            "http_error",
            '["not","an","object"]',
        ),  # the raw body text
        (httpx.Response(503), ServiceUnavailableError, "overloaded", "Service Unavailable"),
        (
            httpx.Response(400, json={"error": {"message": "no code given"}}),
            BadRequestError,
            "invalid_request",
            "no code given",
        ),
    ],
)
def test_factory_tolerates_other_bodies(response, cls, code, message):
    exc = make_status_error(response)
    assert type(exc) is cls
    assert (exc.code, exc.message) == (code, message)


def test_factory_truncates_long_text_bodies():
    exc = make_status_error(httpx.Response(500, text="x" * 1000))
    assert exc.message == "x" * 300 + "..."


def test_retry_after_parsing():
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 42, usegmt=True)
    assert parse_retry_after(httpx.Headers({"Retry-After": "3"}), now) == 3.0
    assert parse_retry_after(httpx.Headers({"Retry-After": "1.5"}), now) == 1.5
    assert parse_retry_after(httpx.Headers({"Retry-After": date}), now) == 42.0
    past = email.utils.formatdate(now - 10, usegmt=True)
    assert parse_retry_after(httpx.Headers({"Retry-After": past}), now) == 0.0
    assert parse_retry_after(httpx.Headers({"Retry-After": "-5"}), now) == 0.0
    assert parse_retry_after(httpx.Headers({"Retry-After": "soon"}), now) is None
    assert parse_retry_after(httpx.Headers({}), now) is None


def test_rate_limit_error_carries_retry_after(api):
    h = api(error(429, "rate_limited", "slow down", **{"Retry-After": "7"}), max_retries=0)
    with pytest.raises(RateLimitError) as info:
        h.list_datastores()
    assert info.value.retry_after == 7.0


def test_429_is_retried_after_retry_after_seconds(api):
    h = api(
        error(429, "rate_limited", "slow down", **{"Retry-After": "2"}),
        error(429, "rate_limited", "slow down", **{"Retry-After": "3.5"}),
        httpx.Response(200, json=SELECT_RESPONSE),
    )
    result = h.select("pool-a", TARGETS, k=2)
    assert [s.id for s in result.selected] == ["ex-7", "ex-2"]
    assert h.sleeps == [2.0, 3.5]
    assert len(h.server.requests) == 3
    assert h.server.bodies()[0] == h.server.bodies()[2]  # the same body is sent again


def test_retry_after_as_http_date(api):
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    h = api(error(429, "rate_limited", "slow down", **{"Retry-After": when}), ok())
    h.list_datastores()
    (delay,) = h.sleeps
    assert 28.0 < delay <= 30.0  # the date has whole-second resolution


def test_retry_after_beyond_the_cap_is_raised_at_once(api):
    h = api(error(429, "rate_limited", "come back later", **{"Retry-After": "120"}), ok())
    with pytest.raises(RateLimitError) as info:
        h.list_datastores()
    assert info.value.retry_after == 120.0
    assert h.sleeps == []
    assert len(h.server.requests) == 1


def test_503_is_retried_with_exponential_backoff(api):
    h = api(error(503, "overloaded", "busy"), error(503, "overloaded", "busy"), ok())
    no_jitter(h)
    assert h.list_datastores() == []
    assert h.sleeps == [0.5, 1.0]


def test_backoff_is_capped_and_jittered():
    policy = RetryPolicy(max_retries=10, initial_delay=0.5, max_delay=8.0, jitter=0.25)
    rng = random.Random(1234)
    busy = httpx.Response(503)
    delays = [policy.delay(n, busy, rng) for n in range(8)]
    ceilings = [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0]
    for delay, ceiling in zip(delays, ceilings):
        assert 0.75 * ceiling <= delay <= ceiling
    assert len(set(delays)) == len(delays)  # jittered, not a fixed schedule


@pytest.mark.parametrize("status", [408, 502, 504])
def test_other_transient_statuses_are_retried(api, status):
    h = api(httpx.Response(status), ok())
    assert h.list_datastores() == []
    assert len(h.server.requests) == 2


def test_connection_errors_are_retried(api):
    h = api(httpx.ConnectError("refused"), httpx.ReadError("reset"), ok())
    no_jitter(h)
    assert h.list_datastores() == []
    assert h.sleeps == [0.5, 1.0]
    assert len(h.server.requests) == 3


def test_gives_up_after_max_retries_on_status(api):
    h = api(*[error(503, "overloaded", f"busy {i}") for i in range(4)], max_retries=3)
    no_jitter(h, max_retries=3)
    with pytest.raises(ServiceUnavailableError, match="busy 3"):
        h.list_datastores()
    assert len(h.server.requests) == 4
    assert h.sleeps == [0.5, 1.0, 2.0]


def test_gives_up_after_max_retries_on_connection_error(api):
    h = api(*[httpx.ConnectError("refused") for _ in range(3)])
    with pytest.raises(APIConnectionError, match="refused") as info:
        h.list_datastores()
    assert type(info.value) is APIConnectionError
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    assert len(h.server.requests) == 3


def test_timeouts_become_api_timeout_error(api):
    h = api(*[httpx.ReadTimeout("slow") for _ in range(3)])
    with pytest.raises(APITimeoutError, match="to http://less.test timed out: slow") as info:
        h.select("pool-a", TARGETS, k=1)
    assert info.value.request.url.path == "/v1/datastores/pool-a/select"
    assert len(h.server.requests) == 3


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (404, NotFoundError),
        (409, ConflictError),
        (422, UnprocessableEntityError),
    ],
)
def test_client_errors_are_not_retried(api, status, cls):
    h = api(error(status, "x", "no"), ok())
    with pytest.raises(cls):
        h.select("pool-a", TARGETS, k=1)
    assert len(h.server.requests) == 1
    assert h.sleeps == []


def test_500_is_retried_on_get_but_not_on_post(api):
    h = api(error(500, "internal", "bug"), ok(), error(500, "internal", "bug"), ok())
    assert h.list_datastores() == []
    with pytest.raises(InternalServerError):
        h.select("pool-a", TARGETS, k=1)
    assert h.server.paths() == [
        "GET /v1/datastores",
        "GET /v1/datastores",
        "POST /v1/datastores/pool-a/select",
    ]


def test_unsupported_scheme_is_not_retried(api):
    h = api(httpx.UnsupportedProtocol("ftp"), ok())
    with pytest.raises(APIConnectionError):
        h.list_datastores()
    assert len(h.server.requests) == 1


def test_max_retries_zero_disables_retrying(api):
    h = api(error(503, "overloaded", "busy"), ok(), max_retries=0)
    with pytest.raises(ServiceUnavailableError):
        h.list_datastores()
    assert len(h.server.requests) == 1


def test_probes_are_not_retried(api):
    h = api(error(503, "overloaded", "loading indexes"), ok())
    with pytest.raises(ServiceUnavailableError, match="loading indexes"):
        h.readyz()
    assert len(h.server.requests) == 1
    assert h.sleeps == []


def test_retries_are_logged(api, caplog):
    h = api(error(503, "overloaded", "busy"), ok())
    with caplog.at_level("INFO", logger="less_client"):
        h.list_datastores()
    assert "retrying GET /v1/datastores" in caplog.text
    assert "status 503" in caplog.text
