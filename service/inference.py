"""The inference core: what every transport (our ``/classify``, the Open Inference Protocol) calls, knowing no HTTP.

Like KServe's ``DataPlane``: a transport parses its wire format, calls one of these operations and encodes the
answer; typed errors (``errors.py``) leave here and each transport maps them to its status codes in one place.
The core owns model and version resolution, parameter validation (before any work slot is taken), admission,
decoding, submission to the batcher, the retry across a hot reload and post-processing (the manifest's output
kind: logits get a softmax, probabilities do not).

Every image or tensor row is one unit of work: it counts once against admission, takes one work slot, and is
batched with all other traffic, whichever transport brought it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .admission import Admitted
from .batcher import BatcherClosed
from .errors import DeadlineExceeded, InvalidInput, InvalidParameter, ServiceError
from .imaging import LargeDecode, image_to_input
from .model_manager import LoadedModel
from .state import ServiceState

DEFAULT_TOP_K = 5
RELOAD_ATTEMPTS = 3  # a version swap mid-request re-resolves the model; more than two swaps in one request is a fault


class Deadline:
    """When a request's answer is due: its budget starts when the core takes the request, not while its body is read."""

    __slots__ = ("budget_s", "due", "started")

    def __init__(self, budget_s: float) -> None:
        self.budget_s, self.started = budget_s, time.perf_counter()
        self.due = self.started + budget_s

    def remaining(self) -> float:
        return self.due - time.perf_counter()

    def exceeded(self, waiting_for: str = "") -> DeadlineExceeded:
        where = f" ({waiting_for})" if waiting_for else ""
        return DeadlineExceeded(f"no result within {self.budget_s * 1000:.4g} ms{where}")


@dataclass(slots=True)
class Prediction:
    """One image's (or tensor row's) answer: the model version that ran it and its (C,) probabilities."""

    model: str
    version: int
    labels: list[str]
    probabilities: np.ndarray  # (C,) float64
    order: np.ndarray  # (C,) class indices, most probable first (ties: lower index first)
    timing_ms: dict[str, float]  # queue, inference (the batcher's), preprocess, total

    def top(self, k: int) -> list[tuple[int, float]]:
        """The k most probable classes as (index, probability), most probable first."""
        best = self.order[:k]
        return list(zip(best.tolist(), self.probabilities[best].tolist(), strict=True))


class InferenceCore:
    def __init__(self, state: ServiceState) -> None:
        self.state = state

    # ------------------------------------------------------------------ validation (no work slot held)
    def resolve(self, name: str | None, version: int | None) -> LoadedModel:
        """The loaded model a request names (the default model, its served version); 404 (NotFound) otherwise."""
        return self.state.models.get(name, version)

    @staticmethod
    def check_top_k(model: LoadedModel, top_k: int | None) -> int:
        classes = model.manifest.num_classes
        if top_k is None:
            return min(DEFAULT_TOP_K, classes)
        if not 1 <= top_k <= classes:
            raise InvalidParameter(f"top_k must be an integer in 1..{classes}, got {top_k}")
        return top_k

    def budget_s(self, client_timeout_ms: float | None) -> float:
        """The request's time budget: the server's ``request_timeout_ms``, lowered by the client's if it sends one."""
        limit = self.state.settings.request_timeout_ms
        if client_timeout_ms is not None:
            if not client_timeout_ms > 0 or math.isinf(client_timeout_ms):  # also refuses NaN
                raise InvalidParameter("the request timeout must be a positive number of milliseconds")
            limit = min(limit, client_timeout_ms)
        return limit / 1000

    @staticmethod
    def check_tensor(model: LoadedModel, tensor: np.ndarray) -> None:
        """A preprocessed batch must be float32 (N, 3, crop, crop) for this model's manifest."""
        size = model.manifest.input_size
        expected = f"FP32 [N, 3, {size}, {size}]"
        if tensor.dtype != np.float32:
            raise InvalidInput(f"{model.name} takes {expected}, got {tensor.dtype}")
        if tensor.ndim != 4 or tensor.shape[1:] != (3, size, size) or tensor.shape[0] == 0:
            raise InvalidInput(f"{model.name} takes {expected}, got shape {list(tensor.shape)}")
        if not np.isfinite(tensor).all():
            raise InvalidInput("the input tensor holds NaN or infinite values")

    # ------------------------------------------------------------------ admission
    def admit(self, weight: int = 1) -> Admitted:
        """Count ``weight`` units of work in flight; refused at once while draining or over the limit."""
        return self.state.admission.admit(weight)

    # ------------------------------------------------------------------ operations
    async def classify(
        self, images: Sequence[bytes], name: str | None, version: int | None, deadline: Deadline, key: str | None = None
    ) -> list[Prediction | ServiceError]:
        """Encoded images -> one Prediction or typed error per image, in order (anything else, a fault, is returned
        too: the transport raises it). The caller holds ``admit(len(images))``. ``key`` (the request id) picks the
        version during a canary: the same key always lands on the same version."""
        return await self._each(images, (name, version, key), deadline, self._decode)

    async def infer(
        self, tensor: np.ndarray, name: str | None, version: int | None, deadline: Deadline, key: str | None = None
    ) -> list[Prediction]:
        """A preprocessed (N, 3, H, W) float32 batch -> N Predictions; the first failure fails the request.
        Its rows join dynamic batches one by one, like images. The caller holds ``admit(len(tensor))``."""
        self.check_tensor(self.resolve(name, version), tensor)
        return every_prediction(await self._each(list(tensor), (name, version, key), deadline, self._as_is))

    # ------------------------------------------------------------------ one unit of work
    async def _each(self, items: Sequence, target: tuple, deadline: Deadline, prepare: Callable) -> list:
        """``target``: (model name, version, routing key) as the request gave them."""
        if len(items) == 1:  # the common case: no gather, no extra task
            try:
                return [await self._one(items[0], target, deadline, prepare)]
            except ServiceError as exc:
                return [exc]
        return list(await asyncio.gather(*(self._one(item, target, deadline, prepare) for item in items), return_exceptions=True))

    async def _one(self, item, target: tuple, deadline: Deadline, prepare: Callable) -> Prediction:
        async with self.state.admission.work_slot(deadline.remaining(), lambda: deadline.exceeded("waiting for a work slot")):
            return await self._run(item, target, deadline, prepare)

    async def _run(self, item, target: tuple, deadline: Deadline, prepare: Callable) -> Prediction:
        models = self.state.models
        prepared: dict = {}  # network input per preprocess spec, reused if a reload swaps the model mid-way
        for attempt in range(RELOAD_ATTEMPTS):
            model = models.get(*target)
            spec = model.manifest.preprocess
            with model.batcher.expecting():
                if spec not in prepared:
                    began = time.perf_counter()
                    x = await prepare(item, model)
                    prepared[spec] = (x, (time.perf_counter() - began) * 1000)
            x, preprocess_ms = prepared[spec]
            remaining = deadline.remaining()
            if remaining <= 0:
                raise deadline.exceeded()
            try:
                (probabilities, order), timings = await model.batcher.submit(x, remaining)
                break
            except BatcherClosed:  # the version was swapped out after we resolved it: resolve again
                if attempt == RELOAD_ATTEMPTS - 1 or self.state.admission.draining:
                    raise
            except Exception:  # the version's own failure (deadline, inference): the canary counts it
                models.observe(model, False, time.perf_counter() - deadline.started)
                raise
        models.observe(model, True, time.perf_counter() - deadline.started)
        return Prediction(
            model.name,
            model.version,
            model.manifest.labels,
            probabilities,
            order,
            {**timings, "preprocess": preprocess_ms, "total": (time.perf_counter() - deadline.started) * 1000},
        )

    async def _decode(self, data: bytes, model: LoadedModel) -> np.ndarray:
        """Decode on the decoding pool; an image too large for it (LargeDecode, from its header) on the pool of
        ``max_large_decodes`` threads, which bounds the memory of large decodes without holding up small ones.

        While the request is alone (nothing else admitted in the service) and its model idle
        (``DynamicBatcher.idle``: its last batch of one), a baseline JPEG of at most ``idle_inline_decode_bytes``
        decoded bytes is decoded here, on the event loop (anything else, whose decoding may cost more than its
        size says, on the pool as usual): the lone request of a client at concurrency 1 then skips the hand-off
        to a decoding thread and back (a thread, and on a VM a vCPU, to wake; p50 -0.4 to -0.6 ms for the bundled
        CIFAR model, -0.2 ms for ResNet-18 int8: docs/experiments/serving-log.md, "ASGI servers and latency at
        concurrency 1"), and nothing else waits on the loop meanwhile but new arrivals, held up by at most one
        small decode (a photo's ~3 ms).
        Under load decoding never runs on the loop.
        """
        loop, s, spec = asyncio.get_running_loop(), self.state.settings, model.manifest.preprocess
        limits = (s.max_pixels, s.max_decoded_bytes)
        inline_limit = min(s.idle_inline_decode_bytes, s.large_decode_bytes)
        # Alone in the whole service, not only for this model: the loop is every model's and every version's (a
        # canary's requests found their own batcher idle while the serving version's kept the loop busy).
        if inline_limit and self.state.admission.inflight <= 1 and model.batcher.idle:
            with contextlib.suppress(LargeDecode):  # too large to decode on the loop: a pool decodes it
                return image_to_input(data, spec, *limits, inline_limit, True)
        try:
            return await loop.run_in_executor(
                self.state.preprocess_pool, image_to_input, data, spec, *limits, s.large_decode_bytes
            )
        except LargeDecode:
            return await loop.run_in_executor(self.state.large_decode_pool, image_to_input, data, spec, *limits)

    async def _as_is(self, row: np.ndarray, model: LoadedModel) -> np.ndarray:
        if row.shape != (3, model.manifest.input_size, model.manifest.input_size):  # a reload changed the input size
            raise InvalidInput(f"{model.name} version {model.version} takes {model.manifest.input_size}-pixel inputs")
        return row


def every_prediction(results: list[Prediction | BaseException]) -> list[Prediction]:
    """``results`` when every one is a Prediction; else raise the first failure (for protocols whose request
    succeeds or fails whole)."""
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results  # type: ignore[return-value]
