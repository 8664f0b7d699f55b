"""Our own transport: ``POST /classify`` (one image, raw body or multipart field ``file``) and ``POST
/classify/batch`` (multipart fields ``file``, one result per file, in order). Parse, call the core, encode.

One parameter parser for both routes and both body kinds: ``top_k`` and ``version`` are ASCII decimal integers,
``model`` a name, ``X-Request-Timeout-Ms`` a positive number of milliseconds; the last of repeated query
parameters wins.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException
from starlette.requests import Request

from .errors import InvalidInput, ServiceError, UnsupportedMedia, error_body, request_id_of, response_for
from .imaging import IMAGE_CONTENT_TYPES
from .inference import Deadline, Prediction, every_prediction
from .transport import JSON, PlainRoute, content_type, core_of, integer, number, raise_faults, unless_client_leaves

RAW_CONTENT_TYPES = set(IMAGE_CONTENT_TYPES) | {"application/octet-stream", ""}


@dataclass(slots=True)
class ClassifyParams:
    model: str | None
    version: int | None
    top_k: int | None
    timeout_ms: float | None

    @classmethod
    def parse(cls, request: Request) -> ClassifyParams:
        timeout_ms = number(request.headers.get("x-request-timeout-ms"), "header.x-request-timeout-ms")
        if not request.scope["query_string"]:  # the common case: no query to parse
            return cls(None, None, None, timeout_ms)
        query = request.query_params
        return cls(
            query.get("model"),
            integer(query.get("version"), "query.version"),
            integer(query.get("top_k"), "query.top_k"),
            timeout_ms,
        )


def encode(prediction: Prediction, top_k: int) -> dict:
    labels = prediction.labels
    return {
        "model": prediction.model,
        "version": prediction.version,
        "predictions": [{"label": labels[i], "index": i, "score": p} for i, p in prediction.top(top_k)],
        "timing_ms": prediction.timing_ms,
    }


async def read_form(request: Request, max_files: int):
    try:
        return await request.form(max_files=max_files, max_part_size=request.app.state.service.settings.max_body_bytes)
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


async def classify(request: Request) -> JSON:
    core, params = core_of(request), ClassifyParams.parse(request)
    budget_s = core.budget_s(params.timeout_ms)
    data = await read_single_image(request)
    top_k = core.check_top_k(core.resolve(params.model, params.version), params.top_k)
    with core.admit(1):
        work = core.classify([data], params.model, params.version, Deadline(budget_s), request_id_of(request))
        [prediction] = every_prediction(await unless_client_leaves(request, work))
    return JSON(encode(prediction, top_k))


async def classify_batch(request: Request) -> JSON:
    core, params = core_of(request), ClassifyParams.parse(request)
    if content_type(request) != "multipart/form-data":
        raise UnsupportedMedia("send the images as multipart/form-data fields named 'file'")
    budget_s = core.budget_s(params.timeout_ms)
    files = uploads(await read_form(request, max_files=core.state.settings.max_batch_files))
    top_k = core.check_top_k(core.resolve(params.model, params.version), params.top_k)  # 404/422 before any work
    with core.admit(len(files)):
        payloads = [await f.read() for f in files]
        work = core.classify(payloads, params.model, params.version, Deadline(budget_s), request_id_of(request))
        results = await unless_client_leaves(request, work)
    raise_faults(results)
    request_id = request_id_of(request)
    items = []
    for f, result in zip(files, results, strict=True):  # each entry has a result or an error, never both keys
        if isinstance(result, ServiceError):
            items.append({"filename": f.filename, "error": error_body(result.code, result.message, request_id)["error"]})
        else:
            items.append({"filename": f.filename, "result": encode(result, top_k)})
    return JSON({"results": items})


ROUTES = [
    PlainRoute("/classify", classify, ["POST"], response_for),
    PlainRoute("/classify/batch", classify_batch, ["POST"], response_for),
]
