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


ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "undecodable or truncated image, empty body, wrong multipart field, malformed inference request",
    404: "unknown model or version",
    413: "body over max_body_bytes, or image over max_pixels",
    415: "unsupported type (SVG, HEIC, PDF, text, ...)",
    422: "top_k not an integer in 1..number of classes",
    503: "queue full, not ready, or draining (see Retry-After)",
    504: "deadline exceeded",
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text} for code, text in ERROR_DESCRIPTIONS.items()
}
