"""A model's evaluation set: held-out encoded images and their labels, stored once per model name and used to
score every version on the same images (the service's promotion gate; docs/export.md, docs/service.md).

    <repository>/<name>/evaluation/evaluation.json     this schema: count, labels, source, selection, the data's sha256
    <repository>/<name>/evaluation/images-<sha12>.npz  encoded: uint8 (total bytes,), offsets: int64 (N + 1,),
                                                       labels: int64 (N,) (indices into the manifest's labels)

Images are stored encoded (as clients send them), so a candidate is scored through the service's own decoding
and preprocessing. The data file is named by its content and ``evaluation.json`` is replaced in one rename, so a
reader sees the old set or the new one, never a mix.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .manifest import ManifestError, sha256_file

EVALUATION_DIR = "evaluation"
EVALUATION_FILE = "evaluation.json"


class EvaluationManifest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal[1] = 1
    file: str = Field(pattern=r"^images-[0-9a-f]{12}\.npz$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    count: int = Field(gt=0)
    labels: list[str] = Field(min_length=1)  # class names, index = label; must equal the model's manifest labels
    source: dict[str, Any] = Field(default_factory=dict)  # where the images came from and how they were selected


@dataclass(frozen=True)
class EvaluationSet:
    manifest: EvaluationManifest
    images: list[bytes]  # N encoded images
    labels: np.ndarray  # (N,) int64

    @property
    def sha256(self) -> str:
        return self.manifest.sha256


def evaluation_dir(repository: str | Path, name: str) -> Path:
    return Path(repository) / name / EVALUATION_DIR


def read_evaluation_set(repository: str | Path, name: str) -> EvaluationSet | None:
    """The model's evaluation set; None when it has none; ManifestError when it is unreadable or inconsistent."""
    directory = evaluation_dir(repository, name)
    path = directory / EVALUATION_FILE
    if not path.exists():
        return None
    try:
        manifest = EvaluationManifest.model_validate(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError, ValidationError) as exc:
        raise ManifestError(f"{path}: not a valid evaluation set ({exc})") from None
    data = directory / manifest.file
    if not data.is_file() or sha256_file(data) != manifest.sha256:
        raise ManifestError(f"{data}: missing, or its sha256 does not match {EVALUATION_FILE}")
    with np.load(data, allow_pickle=False) as arrays:
        encoded, offsets, labels = arrays["encoded"], arrays["offsets"], arrays["labels"]
    if len(offsets) != manifest.count + 1 or len(labels) != manifest.count or offsets[-1] != len(encoded):
        raise ManifestError(f"{data}: holds {len(labels)} images, {EVALUATION_FILE} says {manifest.count}")
    if labels.min() < 0 or labels.max() >= len(manifest.labels):
        raise ManifestError(f"{data}: labels outside 0..{len(manifest.labels) - 1}")
    images = [encoded[offsets[i] : offsets[i + 1]].tobytes() for i in range(manifest.count)]
    return EvaluationSet(manifest, images, labels.astype(np.int64))


def write_evaluation_set(
    repository: str | Path, name: str, images: list[bytes], labels: list[int], class_names: list[str], source: dict
) -> Path:
    """Store (or replace) ``name``'s evaluation set; returns its ``evaluation.json``. Readers see either the
    previous set or this one: the data file appears first under its content's name, then the JSON by rename."""
    if not images or len(images) != len(labels):
        raise ValueError(f"{len(images)} images for {len(labels)} labels")
    directory = evaluation_dir(repository, name)
    directory.mkdir(parents=True, exist_ok=True)
    offsets = np.zeros(len(images) + 1, np.int64)
    offsets[1:] = np.cumsum([len(b) for b in images])
    encoded = np.frombuffer(b"".join(images), np.uint8)
    staged = _temporary(directory, ".npz")
    with open(staged, "wb") as fh:
        np.savez(fh, encoded=encoded, offsets=offsets, labels=np.asarray(labels, np.int64))
    sha = sha256_file(staged)
    data_file = f"images-{sha[:12]}.npz"
    os.replace(staged, directory / data_file)
    manifest = EvaluationManifest(file=data_file, sha256=sha, count=len(images), labels=list(class_names), source=source)
    previous = directory / EVALUATION_FILE
    old_file = json.loads(previous.read_text()).get("file") if previous.exists() else None
    staged = _temporary(directory, ".json")
    staged.write_text(manifest.model_dump_json(indent=2) + "\n")
    os.replace(staged, previous)
    if old_file and old_file != data_file:
        (directory / old_file).unlink(missing_ok=True)
    return previous


def _temporary(directory: Path, suffix: str) -> Path:
    fd, path = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=directory)
    os.close(fd)
    Path(path).chmod(0o644)
    return Path(path)
