"""The request path in front of the routes (service/middleware.py, service/transport.py, app.ServiceApp), driven as
ASGI in process: the body deadline across reads, the hang-up watch, and the answer to a fault nothing handled."""

from __future__ import annotations

import asyncio

import pytest
from conftest import client_for, jpeg_bytes
from starlette.requests import Request

from service.errors import ClientClosedRequest, RequestTimeout
from service.metrics import Metrics
from service.middleware import RequestContextMiddleware
from service.transport import PlainRoute, unless_client_leaves

SCOPE = {"type": "http", "method": "POST", "path": "/x", "headers": [], "query_string": b""}


def trickle(chunks: list[bytes], gap_s: float):
    """An ASGI receive giving ``chunks`` ``gap_s`` apart, the last one ending the body; then it never returns."""
    sent = iter(enumerate(chunks))

    async def receive() -> dict:
        try:
            i, chunk = next(sent)
        except StopIteration:
            await asyncio.Event().wait()
        await asyncio.sleep(gap_s)
        return {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}

    return receive


async def read_body(app_receive, pause_s: float = 0.0) -> bytes:
    body = b""
    while True:
        message = await app_receive()
        body += message["body"]
        if not message["more_body"]:
            return body
        await asyncio.sleep(pause_s)  # work between reads (a multipart parser), not waiting on the client


def run_middleware(app, receive, timeout_s: float) -> tuple[list[dict], list[BaseException]]:
    raised: list[BaseException] = []

    async def guarded(scope, app_receive, send):
        try:
            await app(scope, app_receive, send)
        except Exception as exc:
            raised.append(exc)
            raise

    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    middleware = RequestContextMiddleware(guarded, Metrics(), max_body_bytes=1 << 20, body_read_timeout_s=timeout_s)
    asyncio.run(middleware(dict(SCOPE), receive, send))
    return sent, raised


@pytest.mark.parametrize(("gap_s", "pause_s"), [(0.15, 0.0), (0.0, 0.3)])
def test_the_body_deadline_covers_the_whole_body_across_reads(gap_s, pause_s):
    # Each chunk comes well within the deadline; the body as a whole does not. With pause_s the deadline passes
    # while the app works between reads, not while it waits for the client: the next read fails.
    async def app(scope, receive, send):
        await read_body(receive, pause_s)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    sent, raised = run_middleware(app, trickle([b"a"] * 8, gap_s), timeout_s=0.5)
    assert len(raised) == 1 and isinstance(raised[0], RequestTimeout), raised
    assert sent[0]["status"] == 408  # the app let it through: the middleware answers it as what it is


def test_a_complete_body_is_not_timed_out_by_slow_work_after_it():
    async def app(scope, receive, send):
        assert await read_body(receive) == b"ab"
        await asyncio.sleep(0.6)  # past the body deadline: the body is done, so nothing is cancelled
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    sent, raised = run_middleware(app, trickle([b"a", b"b"], 0.05), timeout_s=0.3)
    assert not raised and sent[0]["status"] == 200
    assert (b"x-request-id", sent[0]["headers"][-1][1]) in sent[0]["headers"]


def test_a_hang_up_cancels_the_work_and_answers_499_and_the_task_is_not_left_cancelled():
    cleaned_up = []

    async def work():
        try:
            await asyncio.sleep(30)
        finally:
            cleaned_up.append(True)  # a work slot or queue place released as the cancellation unwinds

    async def main():
        hang_up = asyncio.Event()

        async def receive():
            await hang_up.wait()
            return {"type": "http.disconnect"}

        request = Request(dict(SCOPE), receive)
        asyncio.get_running_loop().call_later(0.1, hang_up.set)
        with pytest.raises(ClientClosedRequest):
            await unless_client_leaves(request, work())
        assert asyncio.current_task().cancelling() == 0  # so a later timeout in this task still works
        async with asyncio.timeout(0.05):
            await asyncio.sleep(0.01)

    asyncio.run(main())
    assert cleaned_up == [True]


def test_a_cancellation_that_is_not_a_hang_up_stays_a_cancellation():
    async def main():
        async def receive():
            await asyncio.Event().wait()

        request = Request(dict(SCOPE), receive)
        task = asyncio.ensure_future(unless_client_leaves(request, asyncio.sleep(30)))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_the_answer_comes_through_the_watch_unchanged():
    async def main():
        async def receive():
            await asyncio.Event().wait()

        async def work():
            await asyncio.sleep(0.01)
            return 42

        assert await unless_client_leaves(Request(dict(SCOPE), receive), work()) == 42

    asyncio.run(main())


def test_a_fault_before_any_route_is_our_typed_500_with_the_request_id(toy_repository, monkeypatch):
    def broken(self, scope):
        raise RuntimeError("routing broke")

    with client_for(toy_repository) as c:
        monkeypatch.setattr(PlainRoute, "matches", broken)
        r = c.post("/classify", content=jpeg_bytes(), headers={"Content-Type": "image/jpeg", "X-Request-Id": "abc"})
        monkeypatch.undo()
        assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error", r.text
        assert r.json()["error"]["request_id"] == "abc" == r.headers["X-Request-ID"]
        ok = c.post("/classify", content=jpeg_bytes(), headers={"Content-Type": "image/jpeg"})
        assert ok.status_code == 200  # and the server goes on serving
