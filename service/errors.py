"""One place that turns every failure into the JSON error body ``{error: {code, message}}``.

Library errors (``LessError`` subclasses), request validation errors, HTTP exceptions and the
service's own ``ServiceError`` each map to a status and an ``ErrorCode``; anything else is a
500 ``internal`` whose traceback goes to the log, never to the client.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from client.schemas import ErrorBody, ErrorResponse
from less_core.errors import (
    CheckpointNotFoundError,
    IndexMismatchError,
    IndexNotFoundError,
    IntegrityError,
    LessError,
)

log = logging.getLogger(__name__)

_CODE_BY_STATUS = {
    400: "invalid_request",
    401: "unauthorized",
    404: "not_found",
    405: "invalid_request",
    409: "conflict",
    413: "invalid_request",
    415: "invalid_request",
    422: "invalid_request",
    429: "rate_limited",
    503: "overloaded",
    504: "timeout",
}


class ServiceError(Exception):
    """An error answer decided by the service (auth, limits, overload, timeouts, jobs).

    Args:
        status: HTTP status.
        code: ``ErrorCode`` for the body.
        message: Human-readable reason.
        retry_after: Seconds for a ``Retry-After`` header (429, 503), if any.
    """

    def __init__(self, status: int, code: str, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


def unauthorized(message: str = "missing or invalid API key") -> ServiceError:
    return ServiceError(401, "unauthorized", message)


def not_found(message: str) -> ServiceError:
    return ServiceError(404, "not_found", message)


def invalid(message: str) -> ServiceError:
    return ServiceError(400, "invalid_request", message)


def error_response(
    status: int, code: str, message: str, retry_after: int | None = None
) -> JSONResponse:
    """The JSON error answer, with ``Retry-After`` when given."""
    body = ErrorResponse(error=ErrorBody(code=code, message=message))
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def less_error_status(exc: LessError) -> tuple[int, str]:
    """Status and code of a library error."""
    if isinstance(exc, IndexNotFoundError):
        return 404, "not_found"
    if isinstance(exc, IndexMismatchError):
        return 409, "conflict"
    if isinstance(exc, IntegrityError):
        return 500, "internal"
    if isinstance(exc, CheckpointNotFoundError):
        return 400, "invalid_request"
    return (
        400,
        "invalid_request",
    )  # ConfigError, DataError: the request asked for something impossible


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        loc = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
        msg = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts) or "invalid request"


async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
    return error_response(exc.status, exc.code, exc.message, exc.retry_after)


async def _less_error(request: Request, exc: LessError) -> JSONResponse:
    status, code = less_error_status(exc)
    if status >= 500:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return error_response(status, code, "internal error")
    return error_response(status, code, str(exc))


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    return error_response(422, "invalid_request", _validation_message(exc))


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = _CODE_BY_STATUS.get(
        exc.status_code, "internal" if exc.status_code >= 500 else "invalid_request"
    )
    return error_response(exc.status_code, code, str(exc.detail))


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal", "internal error")


def install_error_handlers(app: FastAPI) -> None:
    """Registers the handlers above on ``app``."""
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(LessError, _less_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _internal_error)
