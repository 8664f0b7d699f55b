"""The OpenAPI description of the plain (non-FastAPI) inference routes, given by hand and merged into FastAPI's
``/openapi.json``: ``/classify``, ``/classify/batch`` and the Open Inference Protocol's ``/v2`` routes (whose own
document, vendored in tests/fixtures/open-inference-protocol, the suite checks them against)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic.json_schema import models_json_schema

from .schemas import ERROR_DESCRIPTIONS, BatchResponse, ClassifyResponse, ErrorResponse

REF = "#/components/schemas/{model}"


def _ref(name: str) -> dict:
    return {"$ref": REF.format(model=name)}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(codes: list[int], error_schema: dict) -> dict:
    return {str(c): _json(error_schema, ERROR_DESCRIPTIONS[c]) for c in codes}


def _query(name: str, schema: dict, description: str) -> dict:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


CLASSIFY_PARAMETERS = [
    _query("top_k", {"type": "integer", "minimum": 1}, "how many classes to return (default 5, or all if fewer)"),
    _query("model", {"type": "string"}, "model name (default: the configured default)"),
    _query("version", {"type": "integer", "minimum": 1}, "model version (default: the served one)"),
    {
        "name": "X-Request-Timeout-Ms",
        "in": "header",
        "required": False,
        "schema": {"type": "number", "exclusiveMinimum": 0},
        "description": "lower this request's deadline",
    },
]
BINARY = {"schema": {"type": "string", "format": "binary"}}
MULTIPART_FILES = {
    "schema": {
        "type": "object",
        "properties": {"file": {"type": "array", "items": {"type": "string", "format": "binary"}}},
        "required": ["file"],
    }
}
CLASSIFY_CODES = [400, 404, 413, 415, 422, 503, 504]


def classify_paths() -> dict:
    single_body = {
        "required": True,
        "content": {
            **{t: BINARY for t in ("image/jpeg", "image/png", "image/webp", "image/bmp", "image/gif", "image/tiff")},
            "application/octet-stream": BINARY,
            "multipart/form-data": {
                "schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}, "required": ["file"]}
            },
        },
    }
    error = _ref("ErrorResponse")
    return {
        "/classify": {
            "post": {
                "tags": ["classify"],
                "summary": "Classify one image (raw body or multipart field 'file')",
                "operationId": "classify",
                "parameters": CLASSIFY_PARAMETERS,
                "requestBody": single_body,
                "responses": {"200": _json(_ref("ClassifyResponse"), "the top-k classes"), **_errors(CLASSIFY_CODES, error)},
            }
        },
        "/classify/batch": {
            "post": {
                "tags": ["classify"],
                "summary": "Classify several images: multipart fields 'file', one result per file, in order",
                "operationId": "classify_batch",
                "parameters": CLASSIFY_PARAMETERS,
                "requestBody": {"required": True, "content": {"multipart/form-data": MULTIPART_FILES}},
                "responses": {
                    "200": _json(_ref("BatchResponse"), "one result or error per file"),
                    **_errors(CLASSIFY_CODES, error),
                },
            }
        },
    }


V2_ERROR = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
V2_SPEC = "the Open Inference Protocol (KServe v2); its own OpenAPI document is the reference"


def _v2_operation(summary: str, ok: str, codes: list[int], path_params: list[str]) -> dict:
    return {
        "tags": ["open inference protocol (v2)"],
        "summary": summary,
        "description": V2_SPEC,
        "parameters": [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in path_params],
        "responses": {"200": {"description": ok}, **_errors(codes, V2_ERROR)},
    }


def v2_paths() -> dict:
    paths: dict[str, Any] = {
        "/v2": {"get": _v2_operation("Server metadata: name, version, extensions", "server metadata", [], [])},
        "/v2/health/live": {"get": _v2_operation("Server live", "live", [], [])},
        "/v2/health/ready": {"get": _v2_operation("Server ready: every model loaded, not draining", "ready", [503], [])},
    }
    for prefix, params in (("/v2/models/{name}", ["name"]), ("/v2/models/{name}/versions/{version}", ["name", "version"])):
        metadata = "Model metadata: versions, platform, inputs and outputs"
        paths[prefix] = {"get": _v2_operation(metadata, "model metadata", [404], params)}
        paths[f"{prefix}/ready"] = {"get": _v2_operation("Model ready", "ready", [404], params)}
        infer = _v2_operation("Inference: BYTES images or FP32 preprocessed input", "outputs", CLASSIFY_CODES, params)
        infer["parameters"].append(CLASSIFY_PARAMETERS[-1])  # X-Request-Timeout-Ms
        infer["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object"}}, "application/octet-stream": BINARY},
        }
        paths[f"{prefix}/infer"] = {"post": infer}
    return paths


def install_openapi(app: FastAPI) -> None:
    """Merge the hand-written path items (and the response models they name) into FastAPI's generated document."""
    generated = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generated()
        _, definitions = models_json_schema(
            [(m, "serialization") for m in (ClassifyResponse, BatchResponse, ErrorResponse)], ref_template=REF
        )
        schema.setdefault("components", {}).setdefault("schemas", {}).update(definitions["$defs"])
        schema["paths"] = {**classify_paths(), **v2_paths(), **schema["paths"]}
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
