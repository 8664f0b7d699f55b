"""What one app instance holds: settings, metrics, admission, loaded models and their rollouts, decoding pools."""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass, field

from .admission import Admission
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
    admission: Admission = field(init=False)  # work in flight, work slots, the drain
    rollouts: RolloutController = field(init=False)  # what serves: the rollout rules and the operator's controls

    def __post_init__(self) -> None:
        self.admission = Admission(self.settings)
        self.rollouts = RolloutController(self.models)
