"""What the HTTP transports share: plain routes, the client-hang-up watch, query and header parsing.

The inference routes (``/classify``, ``/classify/batch``, ``/v2/...``) are plain Starlette routes rather than
FastAPI ones: FastAPI's per-request parameter solving, exception middleware and response validation cost ~0.2 ms
of event-loop CPU per request (docs/experiments/serving-log.md, "The HTTP layer's CPU"), and with decoding and inference
sharing two cores every request pays for that in throughput. Their OpenAPI description is given by hand
(``openapi.py``).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import TypeVar

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import ClientClosedRequest, InvalidParameter, MethodNotAllowed, ServiceError, request_id_of
from .inference import InferenceCore

T = TypeVar("T")
Endpoint = Callable[[Request], Awaitable[Response]]
# (exception, request id, count(code)) -> the transport's error response
ErrorEncoder = Callable[[BaseException, "str | None", "Callable[[str], None] | None"], Response]

_INTEGER = re.compile(r"[+-]?[0-9]+", re.ASCII)
_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?", re.ASCII)


class PlainRoute(Route):
    """A Starlette route whose endpoint returns a Response or raises; what it raises is answered by the transport's
    ``errors`` encoder (one mapping per transport), and counted in the metrics under this route's path."""

    def __init__(self, path: str, endpoint: Endpoint, methods: list[str], errors: ErrorEncoder) -> None:
        super().__init__(path, endpoint, methods=methods, include_in_schema=False)
        self.errors = errors

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            scope["route"] = self  # the metrics' route label (FastAPI's router sets it only for its own routes)
            request = Request(scope, receive, send)
            try:
                response = await endpoint(request)
            except Exception as exc:
                service = request.app.state.service
                response = errors(exc, request_id_of(request), service.metrics.count_rejection)
            await response(scope, receive, send)

        self.app = app


class PlainRoutes:
    """ASGI middleware that answers its routes itself and passes every other request to the FastAPI app.

    Placed inside RequestContextMiddleware (request ids, the body limit and metrics apply) and in front of the whole
    FastAPI app (``app.ServiceApp``): a request to an inference route passes nothing of FastAPI's or Starlette's.
    A path that matches with another method is answered 405 here.
    """

    def __init__(self, app: ASGIApp, routes: list[PlainRoute]) -> None:
        self.app, self.routes = app, routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for route in self.routes:
                match, child_scope = route.matches(scope)
                if match is Match.FULL:
                    scope.update(child_scope)
                    await route.app(scope, receive, send)
                    return
                if match is Match.PARTIAL:
                    allowed = ", ".join(sorted(route.methods or ()))
                    error = MethodNotAllowed(f"{scope['method']} is not allowed here (allowed: {allowed})", {"Allow": allowed})
                    await route.errors(error, scope.get("state", {}).get("request_id"), None)(scope, receive, send)
                    return
        await self.app(scope, receive, send)


class JSON(Response):
    """A JSON response encoded by orjson: ~10x faster than the standard library's json that Starlette's
    JSONResponse uses (~40 us of event-loop CPU per /classify answer), with the same shortest-round-trip floats."""

    media_type = "application/json"

    def render(self, content: object) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def core_of(request: Request) -> InferenceCore:
    return request.app.state.core


def content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _parsed(text: str | None, where: str, pattern: re.Pattern, kind: type, expected: str):
    if text is None:
        return None
    if not pattern.fullmatch(text):
        raise InvalidParameter(f"{where}: expected {expected}, got {text!r}")
    return kind(text)


def integer(text: str | None, where: str) -> int | None:
    """An optional ASCII decimal integer (``3``, ``-1``; not ``3.0``, ``³`` or ``0x3``)."""
    return _parsed(text, where, _INTEGER, int, "an integer")


def number(text: str | None, where: str) -> float | None:
    """An optional ASCII decimal number (``250``, ``2.5e2``; not ``nan``, ``inf`` or non-ASCII digits)."""
    return _parsed(text, where, _NUMBER, float, "a number")


async def _client_hung_up(request: Request) -> None:
    """Returns when the client disconnects. Call only after the body is read: then the server's ``receive``
    has nothing more to give until the connection closes (or the response is complete)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_client_leaves(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``, cancelling it if the client disconnects first.

    A request nobody waits for then leaves the work-slot queue or the batch queue without being decoded or run
    (a client that timed out would otherwise still cost a place in a batch); one already in a running batch
    finishes there and its row is dropped. The work runs in the request's own task, which a watcher cancels on the
    hang-up: one extra task per request, not two and an ``asyncio.wait``.
    """
    task = asyncio.current_task()
    assert task is not None
    hung_up = False

    async def watch() -> None:
        nonlocal hung_up
        await _client_hung_up(request)
        hung_up = True
        task.cancel()

    watcher = asyncio.ensure_future(watch())
    try:
        # The work's own clean-up (work slot, queue place) runs as the cancellation unwinds it.
        return await awaited_unless_cancelled_for(
            work, lambda: hung_up, lambda: ClientClosedRequest("the client disconnected before the answer was ready")
        )
    finally:
        watcher.cancel()


async def awaited_unless_cancelled_for(work: Awaitable[T], ours: Callable[[], bool], error: Callable[[], Exception]) -> T:
    """Await ``work`` in this task; a cancellation of this task that was ours (``ours()``: a hang-up, a late body)
    is answered as the typed ``error()`` instead. Anyone else's cancellation (the server shutting down) stays one."""
    try:
        return await work
    except asyncio.CancelledError:
        if not ours():
            raise
        asyncio.current_task().uncancel()  # answered as an error: later timeouts in this task must not see it
        raise error() from None


def raise_faults(results: list) -> None:
    """Raise the first result that is an exception but not a typed refusal (a fault of ours: answered 500)."""
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, ServiceError):
            raise result
