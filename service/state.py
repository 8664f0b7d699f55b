"""What one app instance holds: settings, metrics, loaded models, the preprocessing pool, drain state."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from .metrics import Metrics
from .model_manager import ModelManager
from .settings import Settings


@dataclass
class ServiceState:
    settings: Settings
    metrics: Metrics
    models: ModelManager
    preprocess_pool: ThreadPoolExecutor
    draining: bool = False
    inflight: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    work_slots: asyncio.Semaphore | None = None

    def __post_init__(self) -> None:
        # Requests decoded, queued or running at once. Beyond two batches' worth, decoding ahead only takes CPU
        # from inference (both share the cores) and lengthens the tail; the rest wait, undecoded, in FIFO order.
        s = self.settings
        self.work_slots = asyncio.Semaphore(s.max_concurrent_work or 2 * s.max_batch_size * s.instances)

    @property
    def max_inflight(self) -> int:
        """Requests admitted at once: a full queue plus the batches being run."""
        s = self.settings
        return s.queue_size + s.max_batch_size * s.instances

    async def wait_idle(self, timeout_s: float) -> bool:
        if self.inflight == 0:
            return True
        self.idle.clear()
        try:
            await asyncio.wait_for(self.idle.wait(), timeout_s)
            return True
        except TimeoutError:
            return False
