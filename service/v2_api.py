"""The Open Inference Protocol (KServe v2) REST transport: parse (v2_codec.py), call the core, encode.

Health, server and model metadata, model readiness and inference, with Triton's binary tensor data and
classification extensions, so ``tritonclient``, KServe and other v2 clients work unchanged. The routes share
admission, deadlines (``X-Request-Timeout-Ms`` or the request's ``timeout`` parameter, in microseconds),
metrics, drain and hot reload with /classify. Errors are the protocol's ``{"error": "message"}`` with the status
codes of our table (errors.py).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from . import __version__
from .errors import NotFound, request_id_of, typed_error
from .inference import Deadline, every_prediction
from .transport import JSON, PlainRoute, core_of, number, unless_client_leaves
from .v2_codec import EXTENSIONS, encode_infer_response, model_metadata, parse_infer_request


def v2_error(exc: BaseException, request_id: str | None, count) -> Response:
    """The one mapping of this transport: a typed error's status and headers, the protocol's body."""
    error = typed_error(exc, request_id, count)
    return JSON({"error": error.message}, status_code=error.status, headers=error.headers)


def _version(request: Request) -> int | None:
    text = request.path_params.get("version")
    if text is None:
        return None
    if not (text.isascii() and text.isdigit()):
        raise NotFound(f"{request.path_params['name']} has no version {text!r} (versions are positive integers)")
    return int(text)


async def server_metadata(request: Request) -> Response:
    return JSON({"name": "resnet-serve", "version": __version__, "extensions": EXTENSIONS})


async def live(request: Request) -> Response:
    return JSON({"live": True})


async def ready(request: Request) -> Response:
    """200 when every configured model is loaded and the server is not draining (as /readyz); a probe's 503 is
    answered here rather than raised, so it is not counted as a refused request."""
    state = request.app.state.service
    if state.admission.draining or not state.models.ready():
        why = "the server is shutting down" if state.admission.draining else "not every configured model is loaded yet"
        return JSON({"error": why}, status_code=503, headers={"Retry-After": "5"})
    return JSON({"ready": True})


async def metadata(request: Request) -> Response:
    model = core_of(request).resolve(request.path_params["name"], _version(request))
    return JSON(model_metadata(model.name, [model.version], model.manifest))


async def model_ready(request: Request) -> Response:
    model = core_of(request).resolve(request.path_params["name"], _version(request))
    return JSON({"name": model.name, "ready": True})


async def infer(request: Request) -> Response:
    core = core_of(request)
    name, version = request.path_params["name"], _version(request)
    client_timeout_ms = number(request.headers.get("x-request-timeout-ms"), "header.x-request-timeout-ms")
    body = await request.body()
    model = core.resolve(name, version)
    parsed = parse_infer_request(body, request.headers.get("inference-header-content-length"), model.manifest)
    timeouts = [t for t in (client_timeout_ms, parsed.timeout_ms) if t is not None]
    budget_s = core.budget_s(min(timeouts) if timeouts else None)
    key = request_id_of(request)  # the canary's pick: a retry with the same X-Request-Id lands on the same version
    with core.admit(parsed.count):
        deadline = Deadline(budget_s)
        if parsed.images is not None:  # one image that fails fails the request, as a tensor row would
            work = core.classify(parsed.images, name, version, deadline, key)
            predictions = every_prediction(await unless_client_leaves(request, work))
        else:
            predictions = await unless_client_leaves(request, core.infer(parsed.tensor, name, version, deadline, key))
    content, headers = encode_infer_response(parsed, predictions)
    return Response(content, headers=headers)


def _model_routes(suffix: str, endpoint, methods: list[str]) -> list[PlainRoute]:
    return [
        PlainRoute(f"/v2/models/{{name}}{suffix}", endpoint, methods, v2_error),
        PlainRoute(f"/v2/models/{{name}}/versions/{{version}}{suffix}", endpoint, methods, v2_error),
    ]


ROUTES = [
    PlainRoute("/v2", server_metadata, ["GET"], v2_error),
    PlainRoute("/v2/", server_metadata, ["GET"], v2_error),
    PlainRoute("/v2/health/live", live, ["GET"], v2_error),
    PlainRoute("/v2/health/ready", ready, ["GET"], v2_error),
    *_model_routes("/infer", infer, ["POST"]),
    *_model_routes("/ready", model_ready, ["GET"]),
    *_model_routes("", metadata, ["GET"]),
]
