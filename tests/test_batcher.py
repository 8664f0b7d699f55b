"""The dynamic batcher with fake runners: batching, N-in/N-out, order, back-pressure, deadlines, isolation."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from service.batcher import BatcherClosed, DynamicBatcher
from service.errors import DeadlineExceeded, InferenceFailed


class RecordingRunner:
    """Returns each input's first pixel as its output row, records batch sizes, optionally slow or failing."""

    def __init__(self, delay_s: float = 0.0, fail_when=None):
        self.delay_s, self.fail_when = delay_s, fail_when
        self.sizes: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        with self.lock:
            self.sizes.append(len(batch))
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail_when is not None and self.fail_when(batch):
            raise RuntimeError("simulated inference failure")
        return batch[:, 0, 0, :2].copy()  # (N, 2)


def item(value: float) -> np.ndarray:
    return np.full((3, 2, 2), value, np.float32)


def run(coro):
    return asyncio.run(coro)


def test_concurrent_requests_form_batches_and_each_gets_its_own_result():
    async def main():
        runner = RecordingRunner(delay_s=0.02)
        batcher = DynamicBatcher(runner, max_batch_size=8, max_delay_ms=20)
        batcher.start()
        results = await asyncio.gather(*(batcher.submit(item(i), 5.0) for i in range(32)))
        await batcher.drain(1.0)
        return runner, results

    runner, results = run(main())
    assert sum(runner.sizes) == 32
    assert max(runner.sizes) == 8 and len(runner.sizes) <= 8  # batches formed, none over the limit
    for i, (row, timings) in enumerate(results):
        assert row.tolist() == [i, i]  # exactly its own output, in order
        assert timings["queue"] >= 0 and timings["inference"] > 0


def test_lone_request_does_not_wait_but_an_expected_one_is_waited_for():
    async def main():
        runner = RecordingRunner()
        batcher = DynamicBatcher(runner, max_batch_size=8, max_delay_ms=300)
        batcher.start()
        started = time.perf_counter()
        await batcher.submit(item(1), 5.0)  # nothing else queued or on its way: no delay
        alone = time.perf_counter() - started

        async def late_arrival():
            with batcher.expecting():  # being decoded...
                await asyncio.sleep(0.05)
            return await batcher.submit(item(3), 5.0)

        late = asyncio.ensure_future(late_arrival())
        await asyncio.sleep(0.01)
        first = await batcher.submit(item(2), 5.0)  # waits for the expected request, within max_delay
        await late
        await batcher.drain(1.0)
        return alone, runner.sizes, first

    alone, sizes, first = run(main())
    assert alone < 0.15  # far below max_delay_ms (0.3 s)
    assert sizes == [1, 2]  # the expected request joined the second batch
    assert first[0].tolist() == [2, 2]


def test_deadline_gives_504_and_expired_requests_are_not_run():
    async def main():
        runner = RecordingRunner(delay_s=0.2)
        batcher = DynamicBatcher(runner, max_batch_size=1, max_delay_ms=0)
        batcher.start()
        slow = asyncio.ensure_future(batcher.submit(item(0), 5.0))
        await asyncio.sleep(0.02)
        with pytest.raises(DeadlineExceeded):
            await batcher.submit(item(1), 0.05)  # expires while queued behind the slow one
        await slow
        await asyncio.sleep(0.05)
        await batcher.drain(1.0)
        return runner.sizes

    assert run(main()) == [1]  # the expired request never reached the runner


def test_failing_batch_fails_only_its_own_requests():
    async def main():
        runner = RecordingRunner(fail_when=lambda b: (b[:, 0, 0, 0] == 13).any())
        batcher = DynamicBatcher(runner, max_batch_size=4, max_delay_ms=0)
        batcher.start()
        bad = await asyncio.gather(batcher.submit(item(13), 5.0), return_exceptions=True)
        good = await asyncio.gather(*(batcher.submit(item(i), 5.0) for i in range(6)))
        await batcher.drain(1.0)
        return bad, good

    bad, good = run(main())
    assert isinstance(bad[0], InferenceFailed) and "simulated" in bad[0].message
    assert [r[0][0] for r in good] == list(range(6))  # the batcher kept serving


def test_runner_returning_wrong_count_is_an_error_not_a_mixup():
    async def main():
        batcher = DynamicBatcher(lambda b: b[:1, 0, 0, :2], max_batch_size=4, max_delay_ms=30)
        batcher.start()
        results = await asyncio.gather(*(batcher.submit(item(i), 5.0) for i in range(3)), return_exceptions=True)
        await batcher.drain(1.0)
        return results

    results = run(main())
    assert all(isinstance(r, InferenceFailed) for r in results)


def test_drain_finishes_queued_work_then_refuses():
    async def main():
        runner = RecordingRunner(delay_s=0.05)
        batcher = DynamicBatcher(runner, max_batch_size=2, max_delay_ms=0, instances=2)
        batcher.start()
        pending = [asyncio.ensure_future(batcher.submit(item(i), 5.0)) for i in range(6)]
        await asyncio.sleep(0)
        drained = await batcher.drain(5.0)
        with pytest.raises(BatcherClosed):
            await batcher.submit(item(9), 1.0)
        return drained, await asyncio.gather(*pending)

    drained, results = run(main())
    assert drained and [r[0][0] for r in results] == list(range(6))


def test_idle_means_a_client_alone():
    """``idle`` (where the core decodes a lone request on the event loop): nothing queued or running, nobody else
    on the way, and the last batch held one request, so the first of a crowd just answered does not count."""

    async def main():
        runner = RecordingRunner(delay_s=0.05)
        batcher = DynamicBatcher(runner, max_batch_size=4, max_delay_ms=20)
        batcher.start()
        seen = {"at start": batcher.idle}
        with batcher.expecting():
            seen["the caller on its way"] = batcher.idle
            with batcher.expecting():
                seen["another on its way"] = batcher.idle
        lone = asyncio.ensure_future(batcher.submit(item(0), 5.0))
        await asyncio.sleep(0.01)
        seen["a batch running"] = batcher.idle
        await lone
        seen["after a batch of one"] = batcher.idle
        await asyncio.gather(*(batcher.submit(item(i), 5.0) for i in range(3)))
        seen["after a batch of three"] = batcher.idle
        await batcher.submit(item(9), 5.0)
        seen["after one again"] = batcher.idle
        await batcher.drain(1.0)
        return seen, runner.sizes

    seen, sizes = run(main())
    assert sizes == [1, 3, 1]
    assert seen == {
        "at start": True,
        "the caller on its way": True,
        "another on its way": False,
        "a batch running": False,
        "after a batch of one": True,
        "after a batch of three": False,
        "after one again": True,
    }
