"""The ``model.json`` schema: the only contract between the exporter and the service (no torch here).

A model repository is ``<repository>/<name>/<version>/`` holding ``model.onnx`` and ``model.json``;
versions are positive integers.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

MANIFEST_FILE = "model.json"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


class ManifestError(ValueError):
    """A model.json that is missing, unreadable or does not match the schema."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorSpec(_Strict):
    name: str = Field(min_length=1)
    shape: list[int]
    dtype: Literal["float32"] = "float32"


class InputSpec(TensorSpec):
    layout: Literal["NCHW"] = "NCHW"

    @field_validator("shape")
    @classmethod
    def _nchw(cls, shape: list[int]) -> list[int]:
        if len(shape) != 4 or shape[1] != 3 or shape[2] <= 0 or shape[3] <= 0 or (shape[0] != -1 and shape[0] <= 0):
            raise ValueError(f"input shape must be [-1 or batch, 3, H, W], got {shape}")
        return shape


class OutputSpec(TensorSpec):
    kind: Literal["logits", "probabilities"] = "logits"

    @field_validator("shape")
    @classmethod
    def _nc(cls, shape: list[int]) -> list[int]:
        if len(shape) != 2 or shape[1] <= 0 or (shape[0] != -1 and shape[0] <= 0):
            raise ValueError(f"output shape must be [-1 or batch, C], got {shape}")
        return shape


class Preprocess(_Strict):
    """Resize the shorter side to ``resize``, center-crop ``crop`` x ``crop``, scale to [0, 1], normalise."""

    resize: int = Field(gt=0)
    crop: int = Field(gt=0)
    interpolation: Literal["bilinear", "bicubic", "nearest"] = "bilinear"
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @field_validator("std")
    @classmethod
    def _positive_std(cls, std: tuple[float, float, float]) -> tuple[float, float, float]:
        if min(std) <= 0:
            raise ValueError("std must be positive")
        return std

    @model_validator(mode="after")
    def _crop_fits(self) -> Preprocess:
        if self.crop > self.resize:
            raise ValueError(f"crop ({self.crop}) must not exceed resize ({self.resize})")
        return self


class Golden(_Strict):
    """A few fixed inputs and their fp32 reference logits, for checking a provider's precision at load."""

    file: str = "golden.npz"
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    count: int = Field(gt=0)


class Manifest(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    version: int = Field(gt=0)
    arch: str
    file: str = "model.onnx"
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    opset: int = Field(ge=7)
    created: datetime
    input: InputSpec
    output: OutputSpec
    preprocess: Preprocess
    labels: list[str] = Field(min_length=1)
    precision: Literal["fp32", "fp16", "int8"] = "fp32"
    metrics: dict[str, Any] = Field(default_factory=dict)
    source: dict[str, Any] = Field(default_factory=dict)
    parity: dict[str, Any] | None = None
    golden: Golden | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        if len(self.labels) != self.output.shape[1]:
            raise ValueError(f"{len(self.labels)} labels for {self.output.shape[1]} outputs")
        if self.input.shape[2:] != [self.preprocess.crop, self.preprocess.crop]:
            raise ValueError(f"input H, W {self.input.shape[2:]} differ from the preprocess crop {self.preprocess.crop}")
        if self.input.shape[0] != self.output.shape[0]:
            raise ValueError("input and output batch dimensions differ")
        if Path(self.file).name != self.file:
            raise ValueError("file must be a plain file name inside the version directory")
        return self

    @property
    def num_classes(self) -> int:
        return self.output.shape[1]

    @property
    def input_size(self) -> int:
        return self.preprocess.crop

    @property
    def static_batch(self) -> int | None:
        return None if self.input.shape[0] == -1 else self.input.shape[0]

    def dump(self, path: str | Path) -> None:
        Path(path).write_text(self.model_dump_json(indent=2, exclude_none=True) + "\n")


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_manifest(version_dir: str | Path) -> Manifest:
    """Parse and validate ``version_dir/model.json``; the directory name must be the manifest's version."""
    version_dir = Path(version_dir)
    path = version_dir / MANIFEST_FILE
    try:
        manifest = Manifest.model_validate(json.loads(path.read_text()))
    except FileNotFoundError:
        raise ManifestError(f"{path}: no such file") from None
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path}: not valid JSON ({exc})") from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'manifest'}: {e['msg']}" for e in exc.errors())
        raise ManifestError(f"{path}: {problems}") from None
    if re.fullmatch(r"[0-9]+", version_dir.name) and int(version_dir.name) != manifest.version:
        raise ManifestError(f"{path}: version {manifest.version} does not match directory {version_dir.name}")
    return manifest


def verify_files(version_dir: str | Path, manifest: Manifest) -> None:
    """Raise ManifestError unless the model (and golden) files exist with their recorded sha256."""
    version_dir = Path(version_dir)
    checks = [(manifest.file, manifest.sha256)]
    if manifest.golden:
        checks.append((manifest.golden.file, manifest.golden.sha256))
    for name, expected in checks:
        path = version_dir / name
        if not path.is_file():
            raise ManifestError(f"{path}: missing")
        actual = sha256_file(path)
        if actual != expected:
            raise ManifestError(f"{path}: sha256 {actual} does not match the manifest's {expected}")
