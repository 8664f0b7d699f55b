"""ONNX Runtime sessions for one model version (on a backend from ``backends.py``): threads, static-batch
padding, warm-up, and the golden-input precision check."""

from __future__ import annotations

import logging
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort

from model_repository import Manifest
from model_repository.agreement import compare

if TYPE_CHECKING:
    from .backends import Backend

log = logging.getLogger("resnet_serve")


class ModelLoadError(RuntimeError):
    """A model version that cannot be served (bad files, no provider, failed golden check)."""


@cache
def load_gpu_libraries() -> None:
    """Load the CUDA and cuDNN libraries that onnxruntime-gpu's ``cuda``/``cudnn`` extras install as pip wheels
    (``nvidia-*``), so the CUDA provider finds the versions it was built for whatever CUDA the base image has
    (onnxruntime-gpu 1.31 is built for CUDA 13). Libraries already on the loader's path are used otherwise."""
    preload = getattr(ort, "preload_dlls", None)  # onnxruntime-gpu >= 1.21
    if preload is not None:
        preload()


class OrtRunner:
    """Runs (N, 3, H, W) float32 batches through one session; thread-safe (ONNX Runtime releases the GIL)."""

    def __init__(
        self,
        model_path: Path,
        manifest: Manifest,
        backend: Backend,
        intra_op_threads: int = 0,
        inter_op_threads: int = 1,
        max_batch_size: int | None = None,
    ):
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = inter_op_threads
        dynamic = max_batch_size is not None and manifest.static_batch is None
        profile = (manifest.input.name, manifest.input_size, max_batch_size) if dynamic else None
        providers, provider_options = backend.session_providers(intra_op_threads, profile)
        if backend.on_gpu:
            load_gpu_libraries()
        try:
            self.session = ort.InferenceSession(str(model_path), options, providers=providers, provider_options=provider_options)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelLoadError(f"ONNX Runtime could not load {model_path} on {backend.label}: {exc}") from None
        self.providers = self.session.get_providers()
        if self.providers[0] != backend.provider:
            raise ModelLoadError(f"{backend.provider} did not take {model_path} (the session runs on {self.providers[0]})")
        self.backend = backend
        self.input_name, self.output_name = manifest.input.name, manifest.output.name
        self.output_kind = manifest.output.kind
        self.static_batch = manifest.static_batch
        self.num_classes = manifest.num_classes
        self.batch_sizes: tuple[int, ...] = ()  # set by pad_batches_to: the only batch sizes the session then sees

    def pad_batches_to(self, sizes: list[int]) -> None:
        """Zero-pad each batch up to the smallest of ``sizes`` that holds it (larger batches run as they are)."""
        self.batch_sizes = tuple(sorted(set(sizes)))

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """(N, 3, H, W) -> (N, C) logits. Zero rows pad the batch up to the sizes ``pad_batches_to`` set (the rows
        of a batch do not interact in inference), and a static-batch graph gets zero-padded chunks of its size."""
        n = len(batch)
        if self.static_batch is None:
            size = next((s for s in self.batch_sizes if s >= n), n)
            return self.session.run([self.output_name], {self.input_name: _zero_pad(batch, size)})[0][:n]
        size = self.static_batch
        outputs = [
            self.session.run([self.output_name], {self.input_name: _zero_pad(batch[start : start + size], size)})[0]
            for start in range(0, n, size)
        ]
        return np.concatenate(outputs)[:n]

    def warmup(self, input_size: int, batch_sizes: list[int]) -> None:
        for n in batch_sizes:
            out = self(np.zeros((n, 3, input_size, input_size), np.float32))
            if out.shape != (n, self.num_classes):
                raise ModelLoadError(f"warm-up at batch {n} gave shape {out.shape}, expected {(n, self.num_classes)}")

    def check_golden(self, golden_path: Path, tolerance: float) -> dict:
        """Run the exporter's golden inputs against their fp32 reference logits.

        Fails when any probability moves by more than ``tolerance``, or when the top-1 class changes on an input
        whose reference top-1 leads the runner-up by more than 2 x ``tolerance`` (a near-tie may flip legitimately).
        """
        with np.load(golden_path) as golden:
            inputs, reference = golden["inputs"], golden["logits"]  # (N, 3, H, W), (N, C) in the output's kind
        agreement = compare(self(inputs), reference, self.output_kind, decisive_margin=2 * tolerance)
        flipped = agreement.decisive_top1_agreement_pct < 100.0
        result = {
            "backend": self.backend.label,
            "max_abs_prob_diff": agreement.max_abs_prob_diff,
            "top1_agree": not flipped,
            "inputs": agreement.compared,
            "tolerance": tolerance,
        }
        if flipped or agreement.max_abs_prob_diff > tolerance:
            raise ModelLoadError(f"golden check failed on {self.backend.label}: {result}")
        return result


def _zero_pad(batch: np.ndarray, size: int) -> np.ndarray:
    """(n, ...) -> (size, ...) with zero rows appended; the batch itself when n >= size."""
    if len(batch) >= size:
        return batch
    return np.concatenate([batch, np.zeros((size - len(batch), *batch.shape[1:]), batch.dtype)])


def warmup_batch_sizes(max_batch_size: int) -> list[int]:
    """1, 2, 4, ... up to and including max_batch_size: the shapes dynamic batching will produce most."""
    sizes, n = [], 1
    while n < max_batch_size:
        sizes.append(n)
        n *= 2
    return [*sizes, max_batch_size]
