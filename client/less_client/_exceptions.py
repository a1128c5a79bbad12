"""The SDK's exceptions: one tree under `LessClientError`, one class per HTTP error status.

`InputFileError` (a malformed local targets or pool file) comes from `less_wire`, where the
file formats live; it is a `ValueError`, raised before any request is sent.
"""

from __future__ import annotations

import json
import time
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING

import httpx

from less_wire import EXIT_UNEXPECTED, EXIT_USAGE, InputFileError, code_for_status

if TYPE_CHECKING:
    from less_wire import Job

__all__ = [
    "APIConnectionError",
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "InputFileError",
    "InternalServerError",
    "JobFailedError",
    "JobTimeoutError",
    "LessClientError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "ServiceUnavailableError",
    "UnprocessableEntityError",
    "exit_status",
    "make_status_error",
    "parse_retry_after",
]


class LessClientError(Exception):
    """Base class of every error the SDK raises on purpose."""


class APIConnectionError(LessClientError):
    """The server could not be reached, or the connection broke before an answer came."""

    def __init__(self, message: str = "connection error", *, request: httpx.Request) -> None:
        super().__init__(message)
        self.request = request


class APITimeoutError(APIConnectionError):
    """The request ran past its timeout."""

    def __init__(self, request: httpx.Request, message: str = "request timed out") -> None:
        super().__init__(message, request=request)


class APIResponseValidationError(LessClientError):
    """The server answered 2xx with a body that does not match the API's schema."""

    def __init__(self, message: str, *, response: httpx.Response) -> None:
        super().__init__(message)
        self.response = response


class APIStatusError(LessClientError):
    """The server answered with a 4xx or 5xx status.

    Attributes:
        status_code: The HTTP status.
        code: The service's error code (`"not_found"`, `"rate_limited"`, ...; see
            `less_wire.ErrorCode`), or one derived from the status when the body had none.
        message: The service's message, or the start of the raw body.
        response: The `httpx.Response`, body already read.
        retry_after: Seconds from the Retry-After header, or None when absent.
    """

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        response: httpx.Response,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status_code} {code}: {message}")
        self.status_code = status_code
        self.code = code
        self.message = message
        self.response = response
        self.retry_after = retry_after


class BadRequestError(APIStatusError):
    """400: the request is malformed or asks for something impossible."""


class AuthenticationError(APIStatusError):
    """401: missing or unknown API key."""


class PermissionDeniedError(APIStatusError):
    """403: the key's team is not granted this datastore."""


class NotFoundError(APIStatusError):
    """404: no such datastore, job or route."""


class ConflictError(APIStatusError):
    """409: the resource is not in a state that allows this (e.g. job result before success)."""


class UnprocessableEntityError(APIStatusError):
    """422: the body failed validation (empty targets, bad k, too many or too long targets)."""


class RateLimitError(APIStatusError):
    """429: the team's rate limit is exhausted; `retry_after` says when to come back."""


class InternalServerError(APIStatusError):
    """5xx: the server failed."""


class ServiceUnavailableError(InternalServerError):
    """503: the server is overloaded or not ready yet."""


class JobFailedError(LessClientError):
    """A selection job ended in status "failed"; `code` and `message` are the server's."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.code = job.error.code if job.error else "internal"
        self.message = job.error.message if job.error else "job failed without an error message"
        super().__init__(f"job {job.id} failed: {self.code}: {self.message}")


class JobTimeoutError(LessClientError, TimeoutError):
    """`wait_for_job` gave up before the job finished; the job itself goes on."""

    def __init__(self, job: Job, timeout: float) -> None:
        super().__init__(
            f"job {job.id} still {job.status} ({job.progress:.0%}) after {timeout:g} s"
        )
        self.job = job


_STATUS_CLASSES: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: UnprocessableEntityError,
    429: RateLimitError,
    503: ServiceUnavailableError,
}

_MAX_RAW_MESSAGE = 300


def parse_retry_after(headers: httpx.Headers, now: float | None = None) -> float | None:
    """Reads a Retry-After header given as delay-seconds or as an HTTP date.

    Args:
        headers: Response headers.
        now: Current Unix time, for tests; defaults to `time.time()`.

    Returns:
        Seconds to wait (never negative), or None when the header is absent or unreadable.
    """
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:  # RFC 9110 dates are GMT; a naive result means none was given
        return None
    return max(0.0, moment.timestamp() - (time.time() if now is None else now))


def _code_and_message(response: httpx.Response) -> tuple[str | None, str]:
    try:
        body = json.loads(response.content)
    except ValueError:  # not JSON: a proxy's error page, a plain-text body
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            code = error.get("code")
            return (code if isinstance(code, str) else None), error["message"]
        if "detail" in body:  # FastAPI's own format, for routes outside the service's handler
            detail = body["detail"]
            return None, detail if isinstance(detail, str) else json.dumps(detail)
    text = response.text.strip()
    if not text:
        return None, response.reason_phrase or "no message"
    return None, text if len(text) <= _MAX_RAW_MESSAGE else text[:_MAX_RAW_MESSAGE] + "..."


def make_status_error(response: httpx.Response) -> APIStatusError:
    """Builds the exception for an error response from its status and `{error: {code, message}}`.

    Args:
        response: A 4xx/5xx response whose body has been read. Bodies that are not JSON, or
            JSON of another shape, are tolerated: the message is then the (truncated) text.

    Returns:
        An instance of the `APIStatusError` subclass for the status (`InternalServerError` for
        other 5xx, `APIStatusError` itself for other 4xx).
    """
    status = response.status_code
    code, message = _code_and_message(response)
    cls = _STATUS_CLASSES.get(status, InternalServerError if status >= 500 else APIStatusError)
    return cls(
        status,
        code or code_for_status(status).value,
        message,
        response,
        parse_retry_after(response.headers),
    )


def exit_status(exc: LessClientError) -> int:
    """The CLI exit status (``less_wire.exit_codes``) of an SDK error: a request the server
    refused with 4xx is the user's to fix (2); a 5xx, a lost connection, a failed job is not (1).
    """
    if isinstance(exc, APIStatusError) and exc.status_code < 500:
        return EXIT_USAGE
    return EXIT_UNEXPECTED
