"""``create_app(settings)``: the FastAPI application, built on demand (never at import time)."""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from . import __version__, admin_api, classify_api, v2_api
from .errors import install_error_handlers
from .imaging import decoding_worker_ready
from .inference import InferenceCore
from .metrics import Metrics
from .middleware import RequestContextMiddleware
from .model_manager import ModelManager
from .openapi import install_openapi
from .routes import STATIC, router
from .settings import Settings
from .state import ServiceState
from .transport import PlainRoutes

log = logging.getLogger("resnet_serve")


async def decoding_pool(settings: Settings) -> Executor:
    """Threads, or with ``preprocess_processes`` worker processes (started now, not on the first requests), which
    decode in parallel past the GIL that Pillow's Python layers hold for ~13% of a decode: the ceiling of a
    many-core GPU server, where threads topped out near 900 img/s on 14 cores."""
    workers = settings.preprocess_threads  # reads the CPU affinity and cgroup limit: once
    if not settings.preprocess_processes:
        return ThreadPoolExecutor(workers, "preprocess")
    # spawn, not fork: the parent already runs threads (ONNX Runtime's, the event loop's helpers).
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    loop = asyncio.get_running_loop()
    pids = await asyncio.gather(*(loop.run_in_executor(pool, decoding_worker_ready) for _ in range(workers)))
    log.info("decoding in %d worker processes", len(set(pids)))
    return pool


class ServiceApp(FastAPI):
    """FastAPI behind our own front door: every request passes ``RequestContextMiddleware`` (request ids, the body
    limits, metrics, the access log), then the inference routes are answered (``PlainRoutes``) and everything else
    goes on to FastAPI. An inference request so passes none of FastAPI's and Starlette's own layers (their error,
    body-limit and telemetry wrappers, which cost ~10% of the event loop's CPU per /classify request: serving-log
    "The HTTP tax"); FastAPI's handlers still answer what its routes raise."""

    front: ASGIApp

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self  # what Request.app reads (Starlette sets it on the way in, which these routes skip)
        await self.front(scope, receive, send)


def create_app(settings: Settings | None = None) -> ServiceApp:
    settings = settings or Settings()
    inference_routes = classify_api.ROUTES + v2_api.ROUTES
    metrics = Metrics(frozenset(r.path for r in inference_routes if "POST" in (r.methods or ())))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        large_decodes = ThreadPoolExecutor(settings.max_large_decodes, "decode-large")
        state = ServiceState(settings, metrics, ModelManager(settings, metrics), await decoding_pool(settings), large_decodes)
        app.state.service = state
        app.state.core = InferenceCore(state)
        metrics.inflight.set_function(lambda: state.admission.inflight)  # read at scrape time only
        # Start-up serves each model's recorded (or newest) version; newer ones are gated by the poller's first
        # round, right after, so readiness does not wait for an evaluation.
        outcome = await state.rollouts.refresh(candidates=False)
        log.info("model repository %s: %s", settings.model_repository, outcome or "empty")
        # What start-up made (modules, the app, loaded models) lives as long as the process: moved out of the
        # collector's generations, full collections stop scanning it. On the 2-core development machine that was
        # 0.02-0.08 ms of event-loop CPU per /classify request (bench/event_loop_cost.py, docs/experiments/serving-log.md).
        gc.collect()
        gc.freeze()
        poller = asyncio.create_task(state.rollouts.poll(settings.poll_interval_s))  # 0: only the round start-up left
        try:
            yield
        finally:
            poller.cancel()
            await state.admission.drain(settings.drain_timeout_s)
            await state.models.drain_all(settings.drain_timeout_s)
            state.preprocess_pool.shutdown(wait=False)
            state.large_decode_pool.shutdown(wait=False)

    app = ServiceApp(
        title="resnet-serve",
        version=__version__,
        description="Image classification with the ResNets of He et al. (2015): dynamic batching onto ONNX Runtime.",
        lifespan=lifespan,
    )
    install_error_handlers(app, count=metrics.count_rejection)

    app.include_router(router)
    app.include_router(admin_api.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    install_openapi(app)
    app.front = RequestContextMiddleware(
        PlainRoutes(partial(FastAPI.__call__, app), inference_routes),
        metrics=metrics,
        max_body_bytes=settings.max_body_bytes,
        body_read_timeout_s=settings.body_read_timeout_s,
    )
    return app
