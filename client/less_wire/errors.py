"""Error codes of the HTTP API and their statuses, in one table both sides read.

The service answers every error with `{"error": {"code": ..., "message": ...}}`; the code is an
`ErrorCode`. The service picks the code from the status it answers with (`code_for_status`);
the SDK does the same for bodies that carry no code (a proxy's page, a framework default).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import Enum
from typing import Any

__all__ = ["ErrorCode", "code_for_status", "describe_validation_errors"]


class ErrorCode(str, Enum):
    """Machine-readable error codes; the value is what goes over the wire."""

    INVALID_REQUEST = "invalid_request"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    RATE_LIMITED = "rate_limited"
    INTERNAL = "internal"
    OVERLOADED = "overloaded"
    TIMEOUT = "timeout"
    HTTP_ERROR = "http_error"

    def __str__(self) -> str:
        return self.value


_CODE_FOR_STATUS: dict[int, ErrorCode] = {
    400: ErrorCode.INVALID_REQUEST,
    401: ErrorCode.UNAUTHORIZED,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.INVALID_REQUEST,
    409: ErrorCode.CONFLICT,
    413: ErrorCode.INVALID_REQUEST,
    415: ErrorCode.INVALID_REQUEST,
    422: ErrorCode.INVALID_REQUEST,
    429: ErrorCode.RATE_LIMITED,
    500: ErrorCode.INTERNAL,
    503: ErrorCode.OVERLOADED,
    504: ErrorCode.TIMEOUT,
}


def code_for_status(status: int) -> ErrorCode:
    """The error code of an HTTP error status (`internal` for other 5xx, `http_error` for 4xx)."""
    code = _CODE_FOR_STATUS.get(status)
    if code is not None:
        return code
    return ErrorCode.INTERNAL if status >= 500 else ErrorCode.HTTP_ERROR


def describe_validation_errors(
    errors: Iterable[Mapping[str, Any]], skip_locations: Iterable[str] = ("body",)
) -> str:
    """One line naming each invalid field and why, e.g. ``"k: Input should be >= 1"``.

    Args:
        errors: pydantic's `ValidationError.errors()` (FastAPI's `RequestValidationError`
            gives the same shape).
        skip_locations: location parts left out (FastAPI prefixes body fields with "body").
    """
    skip = set(skip_locations)
    parts = []
    for error in errors:
        location = ".".join(str(part) for part in error.get("loc", ()) if part not in skip)
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{location}: {message}" if location else message)
    return "; ".join(parts) or "invalid request"
