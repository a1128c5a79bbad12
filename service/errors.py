"""One place that turns every failure into the JSON error body ``{error: {code, message}}``.

Library errors (``LessError`` subclasses), request validation errors, HTTP exceptions and the
service's own ``ServiceError`` each map to a status; the body's code is the wire contract's
``code_for_status`` of it. Anything else is a 500 ``internal`` whose traceback goes to the log,
never to the client.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from less_core.errors import (
    IndexMismatchError,
    IndexNotFoundError,
    IntegrityError,
    LessError,
)
from less_wire import (
    ErrorBody,
    ErrorCode,
    ErrorResponse,
    code_for_status,
    describe_validation_errors,
)

log = logging.getLogger(__name__)


class ServiceError(Exception):
    """An error answer decided by the service (auth, limits, overload, timeouts, jobs).

    Args:
        status: HTTP status; the body's ``ErrorCode`` follows from it.
        message: Human-readable reason.
        retry_after: Seconds for a ``Retry-After`` header (429, 503), if any.
    """

    def __init__(self, status: int, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after

    @property
    def code(self) -> ErrorCode:
        return code_for_status(self.status)


def unauthorized(message: str = "missing or invalid API key") -> ServiceError:
    return ServiceError(401, message)


def not_found(message: str) -> ServiceError:
    return ServiceError(404, message)


def invalid(message: str) -> ServiceError:
    return ServiceError(400, message)


def error_response(
    status: int,
    message: str,
    retry_after: int | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """The JSON error answer, with ``Retry-After`` when given and any other ``headers``."""
    body = ErrorResponse(error=ErrorBody(code=code_for_status(status).value, message=message))
    extra = dict(headers or {})
    if retry_after is not None:
        extra["Retry-After"] = str(retry_after)
    return JSONResponse(body.model_dump(), status_code=status, headers=extra or None)


def less_error_status(exc: LessError) -> int:
    """HTTP status of a library error."""
    if isinstance(exc, IndexNotFoundError):
        return 404
    if isinstance(exc, IndexMismatchError):
        return 409
    if isinstance(exc, IntegrityError):
        return 500
    return 400  # ConfigError, DataError, CheckpointNotFoundError: asked for something impossible


async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
    return error_response(exc.status, exc.message, exc.retry_after)


async def _less_error(request: Request, exc: LessError) -> JSONResponse:
    status = less_error_status(exc)
    if status >= 500:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return error_response(status, "internal error")
    return error_response(status, str(exc))


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    return error_response(422, describe_validation_errors(exc.errors()))


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    # The exception's headers too: a 405 carries its ``Allow`` header.
    return error_response(exc.status_code, str(exc.detail), headers=exc.headers)


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal error")


def install_error_handlers(app: FastAPI) -> None:
    """Registers the handlers above on ``app``."""
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(LessError, _less_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _internal_error)
