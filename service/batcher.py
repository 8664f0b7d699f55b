"""Dynamic batching: concurrent requests grouped into one inference call, results split back.

Requests wait in a queue; the service bounds it by admitting only so many requests at once (``ServiceState``,
one place for every admission limit). A worker takes the first waiting request, then
gathers more until ``max_batch_size`` or until ``max_delay_ms`` after the first (but does not wait when the
queue is empty and no request is being decoded for this model), and runs the batch in a
thread (ONNX Runtime releases the GIL). Exactly N outputs come back for N inputs, each to its own
caller; a failing batch fails only its own requests. Each request has a deadline: a timer fails it with
504 when it passes, and an expired request is dropped from the queue without being run. No polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from .errors import DeadlineExceeded, InferenceFailed, NotReady

log = logging.getLogger("resnet_serve")

Runner = Callable[[np.ndarray], Sequence]  # (N, 3, H, W) -> N rows of output, one per image


class BatcherClosed(NotReady):
    """The batcher stopped taking requests (its model version is being replaced or the server drains)."""


@dataclass
class BatchStats:
    """What one batch did, for metrics: size, seconds each request waited, inference seconds."""

    size: int
    queue_waits: list[float]
    inference_s: float


@dataclass
class _Request:
    x: np.ndarray  # (3, H, W)
    future: asyncio.Future
    enqueued: float
    timer: asyncio.TimerHandle | None = None
    timings: dict = field(default_factory=dict)


class DynamicBatcher:
    def __init__(
        self,
        runner: Runner,
        max_batch_size: int = 16,
        max_delay_ms: float = 2.0,
        instances: int = 1,
        on_batch: Callable[[BatchStats], None] | None = None,
        on_depth: Callable[[int], None] | None = None,
        name: str = "model",
    ) -> None:
        self.runner, self.max_batch_size, self.max_delay = runner, max_batch_size, max_delay_ms / 1000
        self.instances, self.name = instances, name
        self.on_batch, self.on_depth = on_batch, on_depth
        self._queue: asyncio.Queue[_Request | None] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=instances, thread_name_prefix=f"infer-{name}")
        self._workers: list[asyncio.Task] = []
        self._pending = 0  # submitted and not yet answered
        self._idle = asyncio.Event()
        self._idle.set()
        self.closed = False
        self.incoming = 0  # requests admitted for this model and still being decoded (see ``expecting``)
        self.last_batch_size = 0

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._workers = [loop.create_task(self._worker(), name=f"batcher-{self.name}-{i}") for i in range(self.instances)]

    @contextlib.contextmanager
    def expecting(self) -> Iterator[None]:
        """Mark one request on its way (decoding) so a forming batch waits for it, up to ``max_delay_ms``.

        With none on the way and an empty queue, a batch goes at once: no delay at low load.
        """
        self.incoming += 1
        try:
            yield
        finally:
            self.incoming -= 1

    @property
    def idle(self) -> bool:
        """Nothing queued or running, no request on its way but the caller's (ask inside ``expecting``), and the
        last batch held one request: a client alone, not the first of a crowd whose last batch has just been
        answered and whose next requests are arriving together."""
        return self._pending == 0 and self.incoming <= 1 and self.last_batch_size <= 1

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    @property
    def pending(self) -> int:
        return self._pending

    async def submit(self, x: np.ndarray, timeout_s: float) -> tuple[object, dict]:
        """Queue one (3, H, W) input; returns its row of the runner's output and {"queue", "inference"} in ms."""
        if self.closed:
            raise BatcherClosed(f"{self.name} is not taking requests")
        loop = asyncio.get_running_loop()
        request = _Request(x, loop.create_future(), time.perf_counter())
        request.timer = loop.call_later(timeout_s, self._expire, request, timeout_s)
        self._pending += 1
        self._idle.clear()
        self._queue.put_nowait(request)
        self._report_depth()
        try:
            return await request.future
        finally:
            request.timer.cancel()
            self._pending -= 1
            if self._pending == 0:
                self._idle.set()

    def _expire(self, request: _Request, timeout_s: float) -> None:
        if not request.future.done():
            request.future.set_exception(DeadlineExceeded(f"no result within {timeout_s * 1000:.4g} ms"))

    def _report_depth(self) -> None:
        if self.on_depth:
            self.on_depth(self._queue.qsize())

    async def _next_live(self, timeout: float | None) -> _Request | None:
        """The next request whose caller still waits; None at a close sentinel or when ``timeout`` passes."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            if deadline is None:
                request = await self._queue.get()
            else:
                try:
                    request = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        return None
                    try:
                        request = await asyncio.wait_for(self._queue.get(), remaining)
                    except TimeoutError:
                        return None
            if request is None:
                self._queue.put_nowait(None)  # leave the sentinel for the other workers
                return None
            if not request.future.done():  # expired or cancelled requests leave here, unrun
                return request

    async def _worker(self) -> None:
        while True:
            first = await self._next_live(None)
            if first is None:
                return
            batch = [first]
            flush_at = asyncio.get_running_loop().time() + self.max_delay
            while len(batch) < self.max_batch_size:
                if self.incoming == 0 and self._queue.empty():
                    break  # nobody else is on the way: waiting would only add latency
                nxt = await self._next_live(max(flush_at - asyncio.get_running_loop().time(), 0))
                if nxt is None:
                    break
                batch.append(nxt)
            self._report_depth()
            await self._run(batch)

    async def _run(self, batch: list[_Request]) -> None:
        started = time.perf_counter()
        self.last_batch_size = len(batch)
        rows = [r.x for r in batch]
        try:
            # Stacked in the inference thread, not here: (16, 3, 224, 224) float32 is a 9.6 MB copy that would
            # hold up every other request's socket reads and writes on the event loop.
            out = await asyncio.get_running_loop().run_in_executor(self._executor, lambda: self.runner(np.stack(rows)))
            if len(out) != len(batch):
                raise RuntimeError(f"runner returned {len(out)} outputs for {len(batch)} inputs")
        except Exception as exc:
            log.exception("%s: batch of %d failed", self.name, len(batch))
            for r in batch:
                if not r.future.done():
                    r.future.set_exception(InferenceFailed(f"inference failed: {type(exc).__name__}: {exc}"))
            return
        inference_s = time.perf_counter() - started
        waits = [started - r.enqueued for r in batch]
        for r, row, wait in zip(batch, out, waits, strict=True):
            if not r.future.done():
                r.future.set_result((row, {"queue": wait * 1000, "inference": inference_s * 1000}))
        if self.on_batch:
            self.on_batch(BatchStats(len(batch), waits, inference_s))

    async def drain(self, timeout_s: float) -> bool:
        """Stop taking requests, let the queued ones finish (up to ``timeout_s``), stop the workers.

        Returns True when everything queued was answered in time.
        """
        self.closed = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
            drained = True
        except TimeoutError:
            drained = False
        self._queue.put_nowait(None)
        for task in self._workers:
            if not drained:
                task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        while not self._queue.empty():  # anything left was never run: fail it rather than leave it hanging
            request = self._queue.get_nowait()
            if request is not None and not request.future.done():
                request.future.set_exception(NotReady(f"{self.name} shut down before this request ran"))
        self._executor.shutdown(wait=False)
        return drained
