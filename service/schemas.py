"""Response bodies (for the OpenAPI document and its examples)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Prediction(BaseModel):
    label: str = Field(examples=["cat"])
    index: int = Field(examples=[3])
    score: float = Field(description="softmax probability", examples=[0.93])


class Timing(BaseModel):
    queue: float = Field(description="ms waiting for a batch")
    preprocess: float = Field(description="ms decoding and preprocessing")
    inference: float = Field(description="ms of the batch's inference call")
    total: float = Field(description="ms in the server")


class ClassifyResponse(BaseModel):
    model: str = Field(examples=["cifar10-resnet56"])
    version: int = Field(examples=[1])
    predictions: list[Prediction]
    timing_ms: Timing

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "model": "cifar10-resnet56",
                    "version": 1,
                    "predictions": [{"label": "cat", "index": 3, "score": 0.93}, {"label": "dog", "index": 5, "score": 0.05}],
                    "timing_ms": {"queue": 0.4, "preprocess": 0.3, "inference": 2.1, "total": 3.0},
                }
            ]
        }
    }


class ErrorDetail(BaseModel):
    code: str = Field(examples=["invalid_input"])
    message: str = Field(examples=["the image could not be decoded (truncated or corrupt)"])
    request_id: str | None = Field(examples=["5f0c2b7e0d8a4f1c9e3b6a1d2c4e8f90"])


class ErrorResponse(BaseModel):
    error: ErrorDetail


class BatchItem(BaseModel):
    filename: str | None = None
    result: ClassifyResponse | None = None
    error: ErrorDetail | None = None


class BatchResponse(BaseModel):
    results: list[BatchItem]


class ModelsResponse(BaseModel):
    models: list[dict[str, Any]]


class PromoteRequest(BaseModel):
    version: int = Field(ge=1, description="the version to serve", examples=[3])


class VersionChoice(BaseModel):
    version: int | None = Field(None, ge=1, description="the version (pin: default the serving one)", examples=[3])


class CanaryShare(BaseModel):
    percent: float | None = Field(
        None, ge=0, le=100, description="share of requests the next gated version takes first (null: the setting)"
    )


class RolloutResponse(BaseModel):
    result: str = Field(examples=["version 3 serves (rolled back from version 4)"])
    model: dict[str, Any] = Field(description="the model as GET /v1/models/{name} shows it now")


ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "undecodable or truncated image, empty body, wrong multipart field, malformed inference request",
    404: "unknown model or version",
    413: "body over max_body_bytes, or image over max_pixels",
    415: "unsupported type (SVG, HEIC, PDF, text, ...)",
    422: "top_k not an integer in 1..number of classes",
    503: "queue full, not ready, or draining (see Retry-After)",
    504: "deadline exceeded",
}
ADMIN_ERRORS = {
    401: "admin_token is set and no Bearer token was sent",
    403: "wrong admin token",
    404: "unknown model or version",
    409: "nothing to roll back to, or the version cannot serve (it fails to load or check)",
    422: "malformed body",
    503: "the rollout state could not be saved (nothing changed)",
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text} for code, text in ERROR_DESCRIPTIONS.items()
}
ADMIN_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text} for code, text in ADMIN_ERRORS.items()
}
