"""One pure-ASGI middleware for every HTTP request: request id, the body's size and time limits while reading,
metrics and the access log, and the answers no route gives: an early 413 (with a lingering read of the body) and
the 503 of a request the server cancels at shutdown. (Pure ASGI rather than BaseHTTPMiddleware: no extra task or
body copy per request.)"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import time

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import NotReady, PayloadTooLarge, RequestTimeout, error_body, response_for
from .metrics import Metrics
from .transport import awaited_unless_cancelled_for

access_log = logging.getLogger("resnet_serve.access")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


_request_ids = random.Random()  # seeded from os.urandom, once per process


def new_request_id() -> str:
    """32 random hex digits, like ``uuid.uuid4().hex`` but without its ``os.urandom`` call per request: that call
    drops the GIL in the event-loop thread, which then waits behind the decoding threads to get it back (uuid4
    was 9% of the event loop's samples at c=32)."""
    return f"{_request_ids.getrandbits(128):032x}"


# An early 413 reads (and drops) what the client still sends, up to this much and this long, before closing: a
# client that writes its whole body before reading the answer (urllib, http.client) then sees the 413, not a reset.
LINGER_BYTES = 256 * 1024 * 1024
LINGER_S = 10.0


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics, max_body_bytes: int, body_read_timeout_s: float = 30.0) -> None:
        self.app, self.metrics, self.max_body_bytes = app, metrics, max_body_bytes
        self.body_read_timeout_s = body_read_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        given = headers.get("x-request-id", "")
        request_id = given if _REQUEST_ID.match(given) else new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status, responded = 500, False
        id_header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status, responded
            if message["type"] == "http.response.start":
                status, responded = message["status"], True
                message["headers"] = [*message.get("headers", ()), id_header]  # the app never sets its own
            await send(message)

        received, body_done, late = 0, False, False
        reader: asyncio.Task | None = None  # the task waiting for the body right now, if one is

        def body_late() -> None:  # the body deadline passed: fail the read under way, or the next one
            nonlocal late
            late = True
            if reader is not None:
                reader.cancel()

        # One timer for the whole body rather than a timeout around each read: cheaper on the event loop.
        body_timer = asyncio.get_running_loop().call_later(self.body_read_timeout_s, body_late)

        async def limited_receive() -> Message:
            """The body, bounded in bytes (413) and in time until its last chunk (408): a client that sends headers
            and then a trickle or nothing cannot hold a request open for long. After the body, ``receive`` waits
            for the hang-up (routes watch for it) without a time limit."""
            nonlocal received, body_done, reader
            if body_done:
                return await receive()
            if late:
                raise self._too_slow()
            reader = asyncio.current_task()
            try:
                message = await awaited_unless_cancelled_for(receive(), lambda: late, self._too_slow)
            finally:
                reader = None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if body_done:
                    body_timer.cancel()
                if received > self.max_body_bytes:
                    raise PayloadTooLarge(f"request body over the {self.max_body_bytes}-byte limit")
            return message

        try:
            declared = headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > self.max_body_bytes:
                # Refuse before reading a byte of the body.
                await self._refuse_too_large(int(declared), request_id, send_with_id, receive)
                return
            await self.app(scope, limited_receive, send_with_id)
        except asyncio.CancelledError:
            # uvicorn cancels the requests still running when its graceful-shutdown time (the drain) runs out: they
            # get the 503 a draining server gives, not uvicorn's plain-text 500. Nothing awaits this task's result.
            if responded:
                raise
            refused = NotReady("the server shut down before this request finished; retry", retry_after_s=1)
            self.metrics.count_rejection(refused.code)
            content = error_body(refused.code, refused.message, request_id)
            body = await _start_json(send_with_id, refused.status, content, refused.headers)
            await send_with_id({"type": "http.response.body", "body": body})
        except Exception as exc:
            # A fault past every handler (the routes answer their own exceptions; this middleware sits in front of
            # FastAPI's): answered as our typed error (an untyped one logged, 500) while nothing has been sent.
            if responded:
                raise
            await response_for(exc, request_id, self.metrics.count_rejection)(scope, receive, send_with_id)
        finally:
            body_timer.cancel()
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

    def _too_slow(self) -> RequestTimeout:
        return RequestTimeout(f"the request body did not arrive within {self.body_read_timeout_s:g} s")

    async def _refuse_too_large(self, declared: int, request_id: str, send: Send, receive: Receive) -> None:
        """413 from Content-Length alone, then nginx's lingering close: the headers go out at once, the body the
        client is still writing is read and dropped (up to LINGER_BYTES and LINGER_S), and only then does the
        answer end and the connection close. Closing unread would reset the connection under a client that writes
        its whole body before reading, which would then never see the 413."""
        message = f"request body of {declared} bytes is over the {self.max_body_bytes}-byte limit"
        self.metrics.count_rejection(PayloadTooLarge.code)
        body = await _start_json(send, 413, error_body(PayloadTooLarge.code, message, request_id), {"Connection": "close"})
        dropped = 0
        try:
            async with asyncio.timeout(LINGER_S):
                while dropped < min(declared, LINGER_BYTES):
                    chunk = await receive()
                    if chunk["type"] != "http.request":
                        break
                    dropped += len(chunk.get("body", b""))
                    if not chunk.get("more_body", False):
                        break
        except TimeoutError:
            pass
        await send({"type": "http.response.body", "body": body})


async def _start_json(send: Send, status: int, content: dict, headers: dict[str, str]) -> bytes:
    """Send the start of a JSON answer (status, headers with its length); returns the body, for the caller to
    send when it is done (the early 413 reads the rest of the request first)."""
    body = json.dumps(content).encode()
    extra = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    start = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": start})
    return body


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
