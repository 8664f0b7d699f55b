"""ONNX Runtime sessions for one model version: provider choice, threads, static-batch padding, warm-up,
and the golden-input precision check."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

from model_repository import Manifest

log = logging.getLogger("resnet_serve")

# Preferred order when none is configured: the fastest provider that exists here.
DEFAULT_PROVIDER_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


class ModelLoadError(RuntimeError):
    """A model version that cannot be served (bad files, no provider, failed golden check)."""


def choose_providers(requested: list[str]) -> list[str]:
    available = ort.get_available_providers()
    if requested:
        unknown = [p for p in requested if p not in available]
        if unknown:
            raise ModelLoadError(f"providers not available here: {', '.join(unknown)} (available: {', '.join(available)})")
        return list(requested)
    return [p for p in DEFAULT_PROVIDER_ORDER if p in available]


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


class OrtRunner:
    """Runs (N, 3, H, W) float32 batches through one session; thread-safe (ONNX Runtime releases the GIL)."""

    def __init__(
        self, model_path: Path, manifest: Manifest, providers: list[str], intra_op_threads: int = 0, inter_op_threads: int = 1
    ):
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = inter_op_threads
        try:
            self.session = ort.InferenceSession(str(model_path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelLoadError(f"ONNX Runtime could not load {model_path}: {exc}") from None
        self.providers = self.session.get_providers()
        self.input_name, self.output_name = manifest.input.name, manifest.output.name
        self.static_batch = manifest.static_batch
        self.num_classes = manifest.num_classes

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """(N, 3, H, W) -> (N, C) logits; a static-batch graph gets zero-padded chunks of its batch size."""
        if self.static_batch is None:
            return self.session.run([self.output_name], {self.input_name: batch})[0]
        n, size = len(batch), self.static_batch
        outputs = []
        for start in range(0, n, size):
            chunk = batch[start : start + size]
            if len(chunk) < size:
                chunk = np.concatenate([chunk, np.zeros((size - len(chunk), *chunk.shape[1:]), chunk.dtype)])
            outputs.append(self.session.run([self.output_name], {self.input_name: chunk})[0])
        return np.concatenate(outputs)[:n]

    def warmup(self, input_size: int, batch_sizes: list[int]) -> None:
        for n in batch_sizes:
            out = self(np.zeros((n, 3, input_size, input_size), np.float32))
            if out.shape != (n, self.num_classes):
                raise ModelLoadError(f"warm-up at batch {n} gave shape {out.shape}, expected {(n, self.num_classes)}")

    def check_golden(self, golden_path: Path, tolerance: float) -> dict:
        """Run the exporter's golden inputs; refuse when top-1 disagrees or probabilities move by > tolerance."""
        with np.load(golden_path) as golden:
            inputs, reference = golden["inputs"], golden["logits"]
        out = self(inputs)
        prob_diff = float(np.abs(softmax(out) - softmax(reference)).max())
        agree = bool((out.argmax(1) == reference.argmax(1)).all())
        result = {"max_abs_prob_diff": prob_diff, "top1_agree": agree, "inputs": len(inputs)}
        if not agree or prob_diff > tolerance:
            raise ModelLoadError(f"golden check failed on {self.providers[0]}: {result} (tolerance {tolerance})")
        return result


def warmup_batch_sizes(max_batch_size: int) -> list[int]:
    """1, 2, 4, ... up to and including max_batch_size: the shapes dynamic batching will produce most."""
    sizes, n = [], 1
    while n < max_batch_size:
        sizes.append(n)
        n *= 2
    return [*sizes, max_batch_size]
