"""Checks run at export (a failing one writes no version): graph validity, operators, PyTorch parity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from model_repository import Preprocess
from model_repository.agreement import compare
from model_repository.preprocess import preprocess_image
from training.data import IMAGE_SUFFIXES

from .errors import ExportError
from .onnx_export import INPUT_NAME

# Operators that ONNX Runtime's CPU, CUDA and TensorRT execution providers all implement (docs/export.md).
PORTABLE_OPS = frozenset(
    {
        "Conv",
        "Relu",
        "Add",
        "MaxPool",
        "GlobalAveragePool",
        "ReduceMean",
        "Flatten",
        "Reshape",
        "Gemm",
        "MatMul",
        "Pad",
        "Slice",
        "Cast",
        "Concat",
        "Identity",
        "Shape",
        "Gather",
        "Unsqueeze",
        "Constant",
        "QuantizeLinear",  # int8 (QDQ) exports
        "DequantizeLinear",
    }
)
FP32_MAX_LOGIT_DIFF = 1e-4
FP16_MAX_PROB_DIFF = 1e-2
FP16_MIN_TOP1_AGREEMENT = 99.0
INT8_MAX_PROB_DIFF = 0.1
INT8_MIN_DECISIVE_AGREEMENT = 95.0  # top-1 agreement where PyTorch's top-1 leads by > INT8_DECISIVE_MARGIN
INT8_DECISIVE_MARGIN = 0.1
PARITY_IMAGES = 16


def check_graph(path: Path) -> list[str]:
    """Full onnx.checker, BatchNorm folded away, only portable operators. Returns the operator list."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"onnx.checker rejected the graph: {exc}") from None
    graph = onnx.load(str(path)).graph
    ops = sorted({node.op_type for node in graph.node})
    if "BatchNormalization" in ops:
        raise ExportError("BatchNormalization was not folded into the convolutions")
    foreign = sorted(set(ops) - PORTABLE_OPS)
    if foreign:
        raise ExportError(f"operators not supported by every target provider: {', '.join(foreign)}")
    return ops


def parity_inputs(preprocess: Preprocess, image_dir: Path | None, count: int = PARITY_IMAGES) -> tuple[np.ndarray, str]:
    """(N, 3, crop, crop) float32 network inputs from real photos, else from generated images."""
    images: list[Image.Image] = []
    if image_dir is not None:
        files = sorted(p for p in Path(image_dir).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:count]
        if not files:
            raise ExportError(f"--parity-images {image_dir}: no images found")
        for f in files:
            with Image.open(f) as img:
                images.append(img.convert("RGB"))
        described = f"{len(files)} images from {image_dir}"
    else:
        rng = np.random.default_rng(0)
        size = max(preprocess.resize, preprocess.crop) + 16
        for _ in range(count):
            # Smooth random colour fields (upsampled noise), more image-like than white noise.
            coarse = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
            images.append(Image.fromarray(coarse).resize((size + 20, size), Image.Resampling.BICUBIC))
        described = f"{count} generated images"
    return np.stack([preprocess_image(img, preprocess) for img in images]), described


def check_parity(model: torch.nn.Module, onnx_path: Path, inputs: np.ndarray, precision: str, static_batch: int | None) -> dict:
    """PyTorch fp32 vs ONNX Runtime (CPU provider) at batch sizes 1 and 8 (or the static batch).

    Bounds by precision: fp32 max |dlogits| <= 1e-4 and 100% top-1 agreement; fp16 max |dprob| <= 1e-2 and >= 99%
    top-1 agreement; int8 max |dprob| <= 0.1 and >= 95% top-1 agreement on the inputs PyTorch is decisive about.
    """
    import onnxruntime as ort

    with torch.no_grad():
        reference = model.eval().float()(torch.from_numpy(inputs)).numpy()  # (N, C)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    batch_sizes = [static_batch] if static_batch else [1, 8]
    outs, refs = [], []
    for batch in batch_sizes:
        for start in range(0, len(inputs) - batch + 1, batch):
            outs.append(session.run(None, {INPUT_NAME: inputs[start : start + batch]})[0])
            refs.append(reference[start : start + batch])
    a = compare(np.concatenate(outs), np.concatenate(refs), "logits", INT8_DECISIVE_MARGIN)
    result = {
        "batch_sizes": batch_sizes,
        "compared": a.compared,
        "max_abs_logit_diff": a.max_abs_logit_diff,
        "max_abs_prob_diff": a.max_abs_prob_diff,
        "top1_agreement_pct": a.top1_agreement_pct,
    }
    if precision == "int8":
        result["decisive_top1_agreement_pct"] = a.decisive_top1_agreement_pct
        ok = (
            result["max_abs_prob_diff"] <= INT8_MAX_PROB_DIFF
            and result["decisive_top1_agreement_pct"] >= INT8_MIN_DECISIVE_AGREEMENT
        )
        bound = f"max |dprob| <= {INT8_MAX_PROB_DIFF} and >= {INT8_MIN_DECISIVE_AGREEMENT}% top-1 agreement where decisive"
    elif precision == "fp16":
        ok = result["max_abs_prob_diff"] <= FP16_MAX_PROB_DIFF and result["top1_agreement_pct"] >= FP16_MIN_TOP1_AGREEMENT
        bound = f"max |dprob| <= {FP16_MAX_PROB_DIFF} and >= {FP16_MIN_TOP1_AGREEMENT}% top-1 agreement"
    else:
        ok = result["max_abs_logit_diff"] <= FP32_MAX_LOGIT_DIFF and result["top1_agreement_pct"] == 100.0
        bound = f"max |dlogits| <= {FP32_MAX_LOGIT_DIFF} and 100% top-1 agreement"
    result["bound"] = bound
    if not ok:
        raise ExportError(f"PyTorch/ONNX Runtime parity failed ({bound}): {result}")
    return result


def golden_outputs(model: torch.nn.Module, inputs: np.ndarray) -> np.ndarray:
    """fp32 PyTorch logits of the golden inputs: the reference a serving provider is checked against."""
    with torch.no_grad():
        return model.eval().float()(torch.from_numpy(inputs)).numpy()
