"""``POST /classify`` with a raw image body, answered without FastAPI's per-request machinery.

The FastAPI route in routes.py documents ``/classify`` (OpenAPI) and answers multipart uploads and every other
content type; a raw image body (what wrk, load balancers' health checks and most clients send) is answered here,
one middleware below the request-id/metrics middleware: the same admission, decoding, batching, disconnect
handling and JSON, the same typed errors (``errors.response_for``), without FastAPI's parameter solving, exception
middleware, routing and response validation. On the 2-core development machine those cost ~0.2 ms of event-loop
CPU per request of ~3.5 ms in all (docs/benchmarks.md, "The HTTP layer's CPU"): with decoding and inference
sharing two cores, every request pays for it in throughput.
"""

from __future__ import annotations

from types import SimpleNamespace

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import InvalidParameter, response_for
from .routes import RAW_CONTENT_TYPES, classify_one, content_type

# What RequestContextMiddleware reads for the route label of its metrics (FastAPI sets the matched route there).
CLASSIFY_ROUTE = SimpleNamespace(path="/classify")


def _number(text: str | None, kind: type, where: str) -> int | float | None:
    if text is None:
        return None
    try:
        value = kind(text)
    except ValueError:
        raise InvalidParameter(f"{where}: expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
    return value


async def classify_raw(request: Request) -> dict:
    """``routes.classify`` with its parameters read by hand (the last of repeated query parameters wins, as in
    FastAPI)."""
    query = request.query_params
    top_k = _number(query.get("top_k"), int, "query.top_k")
    version = _number(query.get("version"), int, "query.version")
    timeout_ms = _number(request.headers.get("x-request-timeout-ms"), float, "header.x-request-timeout-ms")
    return await classify_one(request, query.get("model"), version, top_k, timeout_ms)


class RawClassifyMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/classify" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        if content_type(request) not in RAW_CONTENT_TYPES:  # multipart, or a type the route refuses with 415
            await self.app(scope, receive, send)
            return
        scope["route"] = CLASSIFY_ROUTE
        try:
            response = JSONResponse(await classify_raw(request))
        except Exception as exc:  # mapped to its status in one place; 500 for the unexpected
            response = response_for(
                exc, scope.get("state", {}).get("request_id"), request.app.state.service.metrics.count_rejection
            )
        await response(scope, receive, send)
