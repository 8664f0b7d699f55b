"""Typed errors and their one mapping to HTTP status codes and the error body.

Body: ``{"error": {"code": ..., "message": ..., "request_id": ...}}``. Nothing answers 500 except a real
internal fault.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

log = logging.getLogger("resnet_serve")


class ServiceError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class InvalidInput(ServiceError):
    status, code = 400, "invalid_input"


class Unauthorized(ServiceError):
    status, code = 401, "unauthorized"


class Forbidden(ServiceError):
    status, code = 403, "forbidden"


class NotFound(ServiceError):
    status, code = 404, "not_found"


class MethodNotAllowed(ServiceError):
    status, code = 405, "method_not_allowed"


class Conflict(ServiceError):
    """An admin request the model's state does not allow (nothing to roll back to, a version that cannot load)."""

    status, code = 409, "conflict"


class RequestTimeout(ServiceError):
    """The body did not arrive in time (``body_read_timeout_s``); the connection is closed after the answer."""

    status, code = 408, "request_timeout"

    def __init__(self, message: str) -> None:
        super().__init__(message, {"Connection": "close"})


class PayloadTooLarge(ServiceError):
    status, code = 413, "payload_too_large"


class UnsupportedMedia(ServiceError):
    status, code = 415, "unsupported_media_type"


class InvalidParameter(ServiceError):
    status, code = 422, "invalid_parameter"


class ClientClosedRequest(ServiceError):
    """The client hung up before its answer was ready (nginx's 499): its work was cancelled; nobody reads this."""

    status, code = 499, "client_closed_request"


class InferenceFailed(ServiceError):
    status, code = 500, "inference_failed"


class Overloaded(ServiceError):
    status, code = 503, "overloaded"

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message, {"Retry-After": str(retry_after_s)})


class NotReady(Overloaded):
    code = "not_ready"


class StateNotSaved(ServiceError):
    """The rollout state file could not be written: the admin change was not made (a read-only repository?)."""

    status, code = 503, "state_not_saved"


class DeadlineExceeded(ServiceError):
    status, code = 504, "deadline_exceeded"


def request_id_of(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def error_body(code: str, message: str, request_id: str | None) -> dict:
    return {"error": {"code": code, "message": message, "request_id": request_id}}


def error_response(exc: ServiceError, request_id: str | None) -> JSONResponse:
    return JSONResponse(error_body(exc.code, exc.message, request_id), status_code=exc.status, headers=exc.headers)


def typed_error(exc: BaseException, request_id: str | None, count: Callable[[str], None] | None = None) -> ServiceError:
    """The typed error an exception answers as, logged and counted once: every transport encodes this in its own
    shape (``response_for``: ours; ``v2_api``: the Open Inference Protocol's). ``count(code)`` is called for each
    typed refusal; anything untyped is a fault of ours, logged with its traceback and answered 500."""
    if isinstance(exc, ClientDisconnect):  # the client hung up while sending its body: nobody reads the answer
        exc = ClientClosedRequest("the client disconnected while sending the request")
    elif isinstance(exc, RequestValidationError):
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        exc = InvalidParameter(problems)
    elif isinstance(exc, StarletteHTTPException):  # Starlette's own 404 (no route), 405, ...
        kind = {404: NotFound, 405: MethodNotAllowed}.get(exc.status_code)
        error = (kind or ServiceError)(str(exc.detail), getattr(exc, "headers", None))
        if kind is None:
            error.status, error.code = exc.status_code, "http_error"
        return error
    elif not isinstance(exc, ServiceError):
        log.error("request %s: internal error", request_id, exc_info=exc)
        return ServiceError(f"internal error: {type(exc).__name__}")
    if count:
        count(exc.code)
    if exc.status >= 500 and not isinstance(exc, Overloaded):
        log.error("request %s failed: %s", request_id, exc.message)
    return exc


def response_for(exc: BaseException, request_id: str | None, count: Callable[[str], None] | None = None) -> JSONResponse:
    """Our API's answer to an exception: FastAPI's handlers and the plain /classify routes map errors here."""
    return error_response(typed_error(exc, request_id, count), request_id)


def install_error_handlers(app: FastAPI, count: Callable[[str], None] | None = None) -> None:
    async def handle(request: Request, exc: Exception) -> JSONResponse:
        return response_for(exc, request_id_of(request), count)

    for kind in (ServiceError, RequestValidationError, StarletteHTTPException, Exception):
        app.add_exception_handler(kind, handle)
