"""The FastAPI routes besides inference: model listing, probes and metrics (classification: classify_api.py and
v2_api.py; the operator's routes: admin_api.py)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .errors import NotFound
from .schemas import ERROR_RESPONSES, ModelsResponse
from .state import ServiceState

router = APIRouter()


def service(request: Request) -> ServiceState:
    return request.app.state.service


STATIC = Path(__file__).parent / "static"  # the web page: plain HTML, CSS and JavaScript, no build step


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(STATIC / "index.html")


@router.get("/v1/models", response_model=ModelsResponse, tags=["models"])
async def list_models(request: Request) -> dict:
    return {"models": service(request).models.describe()}


@router.get("/v1/models/{name}", responses=ERROR_RESPONSES, tags=["models"])
async def get_model(request: Request, name: str) -> dict:
    models = service(request).models
    if name not in models.names():
        raise NotFound(f"no model named {name!r}")
    return models.describe_model(name)


@router.get("/v1/stats", tags=["models"], summary="Live summary: the last 10 s of inference requests and batches")
async def stats(request: Request) -> dict:
    """Requests per second, p50 and p99 latency, errors and mean batch size over the last 10 s; queue depth and
    requests in flight now; classification requests answered since start. The web page's live panel reads it."""
    state = service(request)
    queued = sum(m.batcher.depth for m in state.models.live.values())
    return {**state.metrics.recent.summary(), "queue_depth": queued, "inflight": state.admission.inflight}


@router.get("/healthz", tags=["probes"], summary="Liveness: the process answers")
@router.head("/healthz", include_in_schema=False)  # load balancers' probes; uvicorn sends no body for HEAD
async def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz", tags=["probes"], summary="Readiness: every configured model loaded and warmed, not draining")
@router.head("/readyz", include_in_schema=False)
async def readyz(request: Request) -> JSONResponse:
    state = service(request)
    if state.admission.draining:
        return JSONResponse({"status": "draining"}, status_code=503, headers={"Retry-After": "5"})
    if not state.models.ready():
        missing = [n for n in state.models.expected_names() if n not in state.models.live]
        return JSONResponse({"status": "not_ready", "missing": missing}, status_code=503, headers={"Retry-After": "5"})
    return JSONResponse({"status": "ready", "models": {n: m.version for n, m in state.models.live.items()}})


@router.get("/metrics", tags=["probes"], summary="Prometheus metrics", response_class=PlainTextResponse)
async def metrics(request: Request) -> Response:
    return Response(generate_latest(service(request).metrics.registry), media_type=CONTENT_TYPE_LATEST)
