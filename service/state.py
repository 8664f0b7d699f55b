"""What one app instance holds: settings, metrics, loaded models, the preprocessing pool, drain state."""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from dataclasses import dataclass, field

from .metrics import Metrics
from .model_manager import ModelManager
from .rollout_control import RolloutController
from .settings import Settings


@dataclass
class ServiceState:
    settings: Settings
    metrics: Metrics
    models: ModelManager
    preprocess_pool: Executor  # threads, or processes with preprocess_processes
    large_decode_pool: Executor  # max_large_decodes threads for images over large_decode_bytes
    rollouts: RolloutController | None = None  # what serves: the rollout rules and the operator's controls
    draining: bool = False
    inflight: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    work_slots: asyncio.Semaphore | None = None

    def __post_init__(self) -> None:
        self.rollouts = self.rollouts or RolloutController(self.models)
        self.work_slots = asyncio.Semaphore(self.work_capacity)

    # The service's only admission limits, both service-wide. ``work_capacity`` requests are decoded, queued in a
    # batcher or running at once: beyond two batches' worth, decoding ahead only takes CPU from inference (both
    # share the cores) and lengthens the tail. Up to ``queue_size`` more wait, undecoded, in FIFO order for a work
    # slot; beyond that a request gets 503 at once (``InferenceCore.admit``).
    @property
    def work_capacity(self) -> int:
        s = self.settings
        return s.max_concurrent_work or 2 * s.max_batch_size * s.instances

    @property
    def max_inflight(self) -> int:
        """Requests admitted at once: those holding a work slot plus a full wait queue."""
        return self.work_capacity + self.settings.queue_size

    async def wait_idle(self, timeout_s: float) -> bool:
        if self.inflight == 0:
            return True
        self.idle.clear()
        try:
            await asyncio.wait_for(self.idle.wait(), timeout_s)
            return True
        except TimeoutError:
            return False
