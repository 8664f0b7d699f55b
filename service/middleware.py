"""One pure-ASGI middleware for every HTTP request: request id, body-size limit while reading, metrics and
the access log. (Pure ASGI rather than BaseHTTPMiddleware: no extra task or body copy per request.)"""

from __future__ import annotations

import json
import logging
import random
import re
import time

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import PayloadTooLarge, error_body
from .metrics import Metrics

access_log = logging.getLogger("resnet_serve.access")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


_request_ids = random.Random()  # seeded from os.urandom, once per process


def new_request_id() -> str:
    """32 random hex digits, like ``uuid.uuid4().hex`` but without its ``os.urandom`` call per request: that call
    drops the GIL in the event-loop thread, which then waits behind the decoding threads to get it back (uuid4
    was 9% of the event loop's samples at c=32)."""
    return f"{_request_ids.getrandbits(128):032x}"


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics, max_body_bytes: int) -> None:
        self.app, self.metrics, self.max_body_bytes = app, metrics, max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        given = headers.get("x-request-id", "")
        request_id = given if _REQUEST_ID.match(given) else new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500
        id_header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]  # the app never sets its own
            await send(message)

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise PayloadTooLarge(f"request body over the {self.max_body_bytes}-byte limit")
            return message

        try:
            declared = headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > self.max_body_bytes:
                # Refuse before reading a byte of the body.
                await self._refuse_too_large(int(declared), request_id, send_with_id)
                return
            await self.app(scope, limited_receive, send_with_id)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            elapsed = time.perf_counter() - started
            self.metrics.count_request(path, status, elapsed)
            if access_log.isEnabledFor(logging.INFO):
                access_log.info(
                    "%s %s %d %.1fms",
                    scope["method"],
                    scope["path"],
                    status,
                    elapsed * 1000,
                    extra={"request_id": request_id, "status": status, "duration_ms": round(elapsed * 1000, 2)},
                )

    async def _refuse_too_large(self, declared: int, request_id: str, send: Send) -> None:
        message = f"request body of {declared} bytes is over the {self.max_body_bytes}-byte limit"
        body = json.dumps(error_body(PayloadTooLarge.code, message, request_id)).encode()
        self.metrics.count_rejection(PayloadTooLarge.code)
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line, with the request id and any structured extras."""

    EXTRAS = ("request_id", "status", "duration_ms")

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: getattr(record, k) for k in self.EXTRAS if hasattr(record, k)})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


class TextLogFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        rid = getattr(record, "request_id", None)
        return f"{line} request_id={rid}" if rid else line


def configure_logging(fmt: str, level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonLogFormatter() if fmt == "json" else TextLogFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger("resnet_serve")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
