"""Admission and drain: how much work the service takes at once, and how it stops taking it.

The service's only admission limits, both service-wide. ``work_capacity`` units of work (an image or a tensor row)
are decoded, queued in a batcher or running at once: beyond two batches' worth, decoding ahead only takes CPU from
inference (both share the cores) and lengthens the tail. Up to ``queue_size`` more wait, undecoded, in FIFO order
for a work slot; beyond that a request is refused at once with 503 (``admit``). Draining refuses new work and
waits, bounded, until the admitted work is done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from .errors import NotReady, Overloaded, PayloadTooLarge
from .settings import Settings


def work_capacity(settings: Settings) -> int:
    """Units of work decoded, queued or running at once: ``max_concurrent_work``, else two batches per instance."""
    return settings.max_concurrent_work or 2 * settings.max_batch_size * settings.instances


class Admission:
    def __init__(self, settings: Settings) -> None:
        self.work_capacity = work_capacity(settings)
        self.max_inflight = self.work_capacity + settings.queue_size  # holding a work slot, plus a full wait queue
        self.inflight = 0  # units of work admitted and not answered yet
        self.draining = False
        self._idle = asyncio.Event()
        self._slots = asyncio.Semaphore(self.work_capacity)

    def admit(self, weight: int = 1) -> Admitted:
        """``with admission.admit(n):`` counts ``n`` units of work in flight; refused at once while draining (503,
        not_ready), over the limit (503, overloaded), or when ``n`` could never fit (413)."""
        return Admitted(self, weight)

    def work_slot(self, remaining_s: float, deadline_error: Callable[[], Exception]) -> WorkSlot:
        """``async with admission.work_slot(...)``: hold one work slot (decoding, queued, running);
        ``deadline_error()`` is raised if none frees within ``remaining_s``."""
        return WorkSlot(self._slots, remaining_s, deadline_error)

    async def drain(self, timeout_s: float) -> bool:
        """Refuse new work from now on; True once the admitted work is done, False if ``timeout_s`` passed first."""
        self.draining = True
        if self.inflight == 0:
            return True
        self._idle.clear()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
            return True
        except TimeoutError:
            return False


class Admitted:
    def __init__(self, admission: Admission, weight: int) -> None:
        self.admission, self.weight = admission, weight

    def __enter__(self) -> None:
        a = self.admission
        if a.draining:
            raise NotReady("the server is shutting down", retry_after_s=5)
        if self.weight > a.max_inflight:  # would never fit: retrying cannot help, so not 503
            raise PayloadTooLarge(f"{self.weight} images in one request; this server admits {a.max_inflight} at once")
        if a.inflight + self.weight > a.max_inflight:
            raise Overloaded(f"{a.inflight} requests in flight (limit {a.max_inflight}); retry later")
        a.inflight += self.weight

    def __exit__(self, *exc: object) -> None:
        a = self.admission
        a.inflight -= self.weight
        if a.inflight == 0:
            a._idle.set()


class WorkSlot:
    """One work slot, held for an ``async with`` block. A class rather than an ``asynccontextmanager``, and no
    timeout while a slot is free: it is taken once per image, on the event loop."""

    __slots__ = ("deadline_error", "remaining_s", "slots")

    def __init__(self, slots: asyncio.Semaphore, remaining_s: float, deadline_error: Callable[[], Exception]) -> None:
        self.slots, self.remaining_s, self.deadline_error = slots, remaining_s, deadline_error

    async def __aenter__(self) -> None:
        if not self.slots.locked():
            await self.slots.acquire()  # free and nobody waiting ahead: returns without suspending
            return
        try:
            async with asyncio.timeout(self.remaining_s):
                await self.slots.acquire()
        except TimeoutError:
            raise self.deadline_error() from None

    async def __aexit__(self, *exc: object) -> None:
        self.slots.release()
