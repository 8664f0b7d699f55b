"""HTTP routes: classification, model listing, probes, metrics and the admin reload."""

from __future__ import annotations

import asyncio
import hmac
import math
import time
from collections.abc import Awaitable
from typing import TypeVar

import numpy as np
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException

from model_repository.postprocess import softmax

from .batcher import BatcherClosed
from .errors import (
    ClientClosedRequest,
    DeadlineExceeded,
    Forbidden,
    InvalidInput,
    InvalidParameter,
    NotFound,
    NotReady,
    Overloaded,
    PayloadTooLarge,
    ServiceError,
    Unauthorized,
    UnsupportedMedia,
    error_body,
)
from .imaging import IMAGE_CONTENT_TYPES, image_to_input
from .schemas import ERROR_RESPONSES, BatchResponse, ClassifyResponse, ModelsResponse
from .state import ServiceState

T = TypeVar("T")
router = APIRouter()
DEFAULT_TOP_K = 5
RAW_CONTENT_TYPES = set(IMAGE_CONTENT_TYPES) | {"application/octet-stream", ""}


def service(request: Request) -> ServiceState:
    return request.app.state.service


def content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_form(request: Request, max_files: int):
    try:
        return await request.form(max_files=max_files, max_part_size=service(request).settings.max_body_bytes)
    except MultiPartException as exc:
        raise InvalidInput(f"malformed multipart body: {exc.message}") from None


def uploads(form, field_name: str = "file") -> list[UploadFile]:
    files = [f for f in form.getlist(field_name) if isinstance(f, UploadFile)]
    if not files:
        raise InvalidInput(
            f"expected the image in multipart field '{field_name}' (got fields: {', '.join(form.keys()) or 'none'})"
        )
    return files


async def read_single_image(request: Request) -> bytes:
    ctype = content_type(request)
    if ctype == "multipart/form-data":
        form = await read_form(request, max_files=1)
        return await uploads(form)[0].read()
    if ctype in RAW_CONTENT_TYPES:
        return await request.body()
    raise UnsupportedMedia(
        f"content type {ctype!r} is not supported; send an image (JPEG, PNG, WebP, BMP, GIF, TIFF) as the body "
        "or as multipart field 'file'"
    )


async def _client_hung_up(request: Request) -> None:
    """Returns when the client disconnects. Call only after the body is read: then the server's ``receive``
    has nothing more to give until the connection closes (or the response is complete)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_client_leaves(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``, cancelling it if the client disconnects first.

    A request nobody waits for then leaves the work-slot queue or the batch queue without being decoded or run
    (a client that timed out would otherwise still cost a place in a batch); one already in a running batch
    finishes there and its row is dropped.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_client_hung_up(request))
    try:
        done, _ = await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)  # let it release its work slot and queue place
    if task in done:
        return task.result()
    raise ClientClosedRequest("the client disconnected before the answer was ready")


def timeout_seconds(state: ServiceState, header_ms: float | None) -> float:
    limit = state.settings.request_timeout_ms
    if header_ms is not None:
        if not header_ms > 0 or math.isinf(header_ms):  # also refuses NaN
            raise InvalidParameter("X-Request-Timeout-Ms must be a positive number of milliseconds")
        limit = min(limit, header_ms)
    return limit / 1000


async def classify_bytes(
    state: ServiceState, data: bytes, name: str | None, version: int | None, top_k: int | None, timeout_s: float
) -> dict:
    """Decode, preprocess (thread pool), queue for a batch, and turn logits into the top-k predictions."""
    started = time.perf_counter()
    deadline = started + timeout_s
    try:
        async with asyncio.timeout(timeout_s):
            await state.work_slots.acquire()
    except TimeoutError:
        raise DeadlineExceeded(f"no result within {timeout_s * 1000:.0f} ms (waiting for a work slot)") from None
    try:
        return await _classify_admitted(state, data, name, version, top_k, started, deadline, timeout_s)
    finally:
        state.work_slots.release()


async def _classify_admitted(state, data, name, version, top_k, started: float, deadline: float, timeout_s: float) -> dict:
    inputs: dict = {}  # preprocessed input per preprocess spec, reused if a reload swaps the model mid-way
    for attempt in range(3):
        model = state.models.get(name, version)
        spec = model.manifest.preprocess
        if top_k is None:
            top_k = min(DEFAULT_TOP_K, model.manifest.num_classes)
        elif not 1 <= top_k <= model.manifest.num_classes:
            raise InvalidParameter(f"top_k must be an integer in 1..{model.manifest.num_classes}, got {top_k}")
        with model.batcher.expecting():
            if spec not in inputs:
                pre_start = time.perf_counter()
                loop = asyncio.get_running_loop()
                x = await loop.run_in_executor(state.preprocess_pool, image_to_input, data, spec, state.settings.max_pixels)
                inputs[spec] = (x, (time.perf_counter() - pre_start) * 1000)
        x, preprocess_ms = inputs[spec]
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            raise DeadlineExceeded(f"no result within {timeout_s * 1000:.0f} ms")
        try:
            row, timings = await model.batcher.submit(x, remaining)
            break
        except BatcherClosed:
            if attempt == 2 or state.draining:
                raise
    probs = softmax(row.astype(np.float64))
    top = np.argsort(-probs, kind="stable")[:top_k]
    labels = model.manifest.labels
    return {
        "model": model.name,
        "version": model.version,
        "predictions": [{"label": labels[i], "index": int(i), "score": float(probs[i])} for i in top],
        "timing_ms": {**timings, "preprocess": preprocess_ms, "total": (time.perf_counter() - started) * 1000},
    }


class admitted:
    """Counts a classification request in flight; refuses at once while draining or over the limit."""

    def __init__(self, state: ServiceState, weight: int = 1) -> None:
        self.state, self.weight = state, weight

    def __enter__(self) -> None:
        s = self.state
        if s.draining:
            raise NotReady("the server is shutting down", retry_after_s=5)
        if self.weight > s.max_inflight:  # would never fit: retrying cannot help, so not 503
            raise PayloadTooLarge(f"{self.weight} images in one request; this server admits {s.max_inflight} at once")
        if s.inflight + self.weight > s.max_inflight:
            raise Overloaded(f"{s.inflight} requests in flight (limit {s.max_inflight}); retry later")
        s.inflight += self.weight

    def __exit__(self, *exc: object) -> None:
        self.state.inflight -= self.weight
        if self.state.inflight == 0:
            self.state.idle.set()


@router.post(
    "/classify",
    response_model=ClassifyResponse,
    responses=ERROR_RESPONSES,
    tags=["classify"],
    summary="Classify one image (raw body or multipart field 'file')",
)
async def classify(
    request: Request,
    top_k: int | None = Query(None, description="how many classes to return (default 5, or all if fewer)"),
    model: str | None = Query(None, description="model name (default: the configured default)"),
    version: int | None = Query(None, description="model version (default: the served one)"),
    x_request_timeout_ms: float | None = Header(None, description="lower this request's deadline"),
) -> dict:
    return await classify_one(request, model, version, top_k, x_request_timeout_ms)


async def classify_one(
    request: Request, model: str | None, version: int | None, top_k: int | None, timeout_ms: float | None
) -> dict:
    """``POST /classify`` once its parameters are parsed: by FastAPI (the route above) or by hand (raw_classify.py)."""
    state = service(request)
    with admitted(state):
        timeout_s = timeout_seconds(state, timeout_ms)
        data = await read_single_image(request)
        return await unless_client_leaves(request, classify_bytes(state, data, model, version, top_k, timeout_s))


@router.post(
    "/classify/batch",
    response_model=BatchResponse,
    responses=ERROR_RESPONSES,
    tags=["classify"],
    summary="Classify several images: multipart fields 'file', one result per file, in order",
)
async def classify_batch(
    request: Request,
    top_k: int | None = Query(None),
    model: str | None = Query(None),
    version: int | None = Query(None),
    x_request_timeout_ms: float | None = Header(None),
) -> dict:
    state = service(request)
    if content_type(request) != "multipart/form-data":
        raise UnsupportedMedia("send the images as multipart/form-data fields named 'file'")
    timeout_s = timeout_seconds(state, x_request_timeout_ms)
    form = await read_form(request, max_files=state.settings.max_batch_files)
    files = uploads(form)
    state.models.get(model, version)  # 404 for the whole request before any work
    with admitted(state, weight=len(files)):
        payloads = [await f.read() for f in files]
        every_file = asyncio.gather(
            *(classify_bytes(state, d, model, version, top_k, timeout_s) for d in payloads), return_exceptions=True
        )
        results = await unless_client_leaves(request, every_file)
    items = []
    for f, result in zip(files, results, strict=True):
        if isinstance(result, ServiceError):
            if isinstance(result, InvalidParameter):
                raise result  # the same for every file: answer 422 once
            items.append({"filename": f.filename, "error": error_body(result.code, result.message, None)["error"]})
        elif isinstance(result, BaseException):
            raise result
        else:
            items.append({"filename": f.filename, "result": result})
    return {"results": items}


@router.get("/v1/models", response_model=ModelsResponse, tags=["models"])
async def list_models(request: Request) -> dict:
    return {"models": service(request).models.describe()}


@router.get("/v1/models/{name}", responses=ERROR_RESPONSES, tags=["models"])
async def get_model(request: Request, name: str) -> dict:
    for entry in service(request).models.describe():
        if entry["name"] == name:
            return entry
    raise NotFound(f"no model named {name!r}")


@router.get("/healthz", tags=["probes"], summary="Liveness: the process answers")
async def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz", tags=["probes"], summary="Readiness: every configured model loaded and warmed, not draining")
async def readyz(request: Request) -> JSONResponse:
    state = service(request)
    if state.draining:
        return JSONResponse({"status": "draining"}, status_code=503, headers={"Retry-After": "5"})
    if not state.models.ready():
        missing = [n for n in state.models.expected_names() if n not in state.models.live]
        return JSONResponse({"status": "not_ready", "missing": missing}, status_code=503, headers={"Retry-After": "5"})
    return JSONResponse({"status": "ready", "models": {n: m.version for n, m in state.models.live.items()}})


@router.get("/metrics", tags=["probes"], summary="Prometheus metrics")
async def metrics(request: Request) -> Response:
    return Response(generate_latest(service(request).metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.post("/admin/reload", responses=ERROR_RESPONSES, tags=["admin"], summary="Load new versions from the repository now")
async def reload(request: Request, authorization: str | None = Header(None)) -> dict:
    state = service(request)
    token = state.settings.admin_token
    if token:
        if not authorization:
            raise Unauthorized("send Authorization: Bearer TOKEN", headers={"WWW-Authenticate": "Bearer"})
        scheme, _, given = authorization.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            raise Forbidden("invalid admin token")
    return {"results": await state.models.refresh()}
