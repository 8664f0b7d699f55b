"""Export one network into a model repository: ONNX graph, checks, golden data, manifest, atomic publish."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from model_repository import Golden, InputSpec, Manifest, OutputSpec, publish, sha256_file, staging_directory, version_dir
from model_repository.manifest import MANIFEST_FILE, NAME_PATTERN, now

from .checks import check_graph, check_parity, golden_outputs, parity_inputs
from .errors import ExportError
from .evaluation_set import plan_evaluation_set
from .onnx_export import INPUT_NAME, OUTPUT_NAME, export_onnx, simplify
from .quantize import quantize_int8
from .sources import ModelSource

GOLDEN_COUNT = 8
CHECKPOINT_FILE = "checkpoint.pt"


@dataclass
class ExportOptions:
    opset: int = 18
    fp16: bool = False
    int8: bool = False
    calibration_images: Path | None = None
    static_batch: int | None = None
    simplify: bool = False
    parity: bool = True
    parity_images: Path | None = None
    with_checkpoint: bool = False
    evaluation_images: Path | None = None  # held-out images: the model's evaluation set (export/evaluation_set.py)
    evaluation_count: int = 1000
    evaluation_seed: int = 0
    replace_evaluation: bool = False


def export_to_repository(src: ModelSource, repository: str | Path, name: str, options: ExportOptions) -> Path:
    """Build a complete version in a staging directory, then rename it into place. Returns its path.

    Any failing step raises ExportError and leaves the repository as it was.
    """
    if not re.fullmatch(NAME_PATTERN, name):
        raise ExportError(f"invalid model name {name!r}: letters, digits, '.', '_' and '-' only")
    if options.opset < 17:
        raise ExportError("--opset must be 17 or newer")
    if options.fp16 and options.int8:
        raise ExportError("--fp16 and --int8 exclude each other")
    if options.int8 and options.calibration_images is None and options.parity_images is None:
        raise ExportError("--int8 needs --calibration-images DIR (real images, preprocessed as the service will)")
    if options.static_batch is not None and options.static_batch < 1:
        raise ExportError("--static-batch must be positive")
    if options.with_checkpoint and src.checkpoint is None:
        raise ExportError("--with-checkpoint needs a --checkpoint source")
    evaluation = None
    if options.evaluation_images is not None:  # sampled and checked first: a conflict fails before any work
        evaluation = plan_evaluation_set(
            options.evaluation_images,
            Path(repository),
            name,
            src.labels,
            options.evaluation_count,
            options.evaluation_seed,
            options.replace_evaluation,
        )
    size = src.preprocess.crop
    with staging_directory(repository, name) as staging:
        onnx_path = staging / "model.onnx"
        export_onnx(src.model, onnx_path, size, options.opset, options.fp16, options.static_batch)
        extra: dict = {}
        precision = "int8" if options.int8 else "fp16" if options.fp16 else "fp32"
        if options.int8:
            extra["quantization"] = quantize_int8(onnx_path, src.preprocess, options.calibration_images or options.parity_images)
        if options.simplify:
            extra["simplify"] = simplify(onnx_path)
        extra["operators"] = check_graph(onnx_path)
        inputs, described = parity_inputs(src.preprocess, options.parity_images)
        if options.parity:
            parity = {"inputs": described, **check_parity(src.model, onnx_path, inputs, precision, options.static_batch)}
        else:
            parity = {"skipped": True, "reason": "--no-parity"}
        golden_inputs = inputs[:GOLDEN_COUNT]
        np.savez(staging / "golden.npz", inputs=golden_inputs, logits=golden_outputs(src.model, golden_inputs))
        if options.with_checkpoint:  # weights-only, so the version can be re-exported (int8, fp16) or fine-tuned
            torch.save(src.checkpoint, staging / CHECKPOINT_FILE)
            extra["checkpoint_file"] = {"file": CHECKPOINT_FILE, "sha256": sha256_file(staging / CHECKPOINT_FILE)}
        batch = options.static_batch or -1
        fields = dict(
            name=name,
            arch=src.arch,
            file=onnx_path.name,
            sha256=sha256_file(onnx_path),
            opset=options.opset,
            created=now(),
            input=InputSpec(name=INPUT_NAME, shape=[batch, 3, size, size]),
            output=OutputSpec(name=OUTPUT_NAME, shape=[batch, len(src.labels)], kind="logits"),
            preprocess=src.preprocess,
            labels=src.labels,
            precision=precision,
            metrics=src.metrics,
            source={**src.source, "export": extra},
            parity=parity,
            golden=Golden(file="golden.npz", sha256=sha256_file(staging / "golden.npz"), count=len(golden_inputs)),
        )
        # Validate the manifest before publishing (version 1 as a stand-in).
        Manifest(version=1, **fields)

        def finalize(directory: Path, version: int) -> None:
            Manifest(version=version, **fields).dump(directory / MANIFEST_FILE)

        if evaluation is not None:  # before the version appears, so its gate scores it on this set
            evaluation.write()
        version = publish(staging, repository, name, finalize)
    return version_dir(repository, name, version)


def summary(version_path: Path) -> str:
    manifest = json.loads((version_path / MANIFEST_FILE).read_text())
    parity = manifest.get("parity") or {}
    shown = {k: parity[k] for k in ("max_abs_logit_diff", "max_abs_prob_diff", "top1_agreement_pct") if k in parity}
    described = f"{manifest['arch']}, {manifest['precision']}, {len(manifest['labels'])} classes"
    return f"wrote {version_path} ({described}); parity {shown or parity}"
