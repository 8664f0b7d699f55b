"""Execution backends: an ONNX Runtime provider with a precision, and the order they are tried in.

Out of the box the service tries, fastest first, TensorRT (fp16, then fp32) -> CUDA -> OpenVINO (bf16 where the
CPU has AMX or AVX-512-BF16, then fp32) -> CPU, keeping the first whose session loads and passes the golden
check (``select_backend``; the check itself: ``OrtRunner.check_golden``, ``model_repository.agreement``).
Reduced precision is only tried when the model carries golden data to check it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import onnxruntime as ort

from model_repository import Manifest

from .runtime import ModelLoadError, OrtRunner, warmup_batch_sizes
from .settings import Settings

log = logging.getLogger("resnet_serve")

PROVIDER_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "OpenVINOExecutionProvider", "CPUExecutionProvider")
PRECISIONS = ("fp16", "bf16", "fp32")  # what a provider may be asked for; int8 comes only from an int8 graph


@cache
def cpu_supports_bf16() -> bool:
    """AMX-BF16 or AVX512-BF16 in /proc/cpuinfo (Linux); False where unknown."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " amx_bf16" in flags or " avx512_bf16" in flags


@dataclass(frozen=True)
class Backend:
    provider: str
    precision: str  # the arithmetic the provider is asked for: fp32, bf16 or fp16

    @property
    def on_gpu(self) -> bool:
        """TensorRT and CUDA: they need the CUDA libraries (``runtime.load_gpu_libraries``)."""
        return self.provider in ("TensorrtExecutionProvider", "CUDAExecutionProvider")

    @property
    def fixed_shapes(self) -> bool:
        """GPU providers tune per input shape (the CUDA provider runs cuDNN's algorithm search for each new shape;
        TensorRT builds an engine per shape profile), so a batch size seen for the first time stalls the batch.
        Their batches are padded to the few sizes warmed up at load (``OrtRunner.pad_batches_to``)."""
        return self.on_gpu

    @property
    def label(self) -> str:
        return f"{self.provider.removesuffix('ExecutionProvider')}/{self.precision}"

    def session_providers(self, threads: int, batch_profile: tuple[str, int, int] | None = None) -> tuple[list[str], list[dict]]:
        """(providers, provider_options) for ``ort.InferenceSession``, with the CPU provider as the last resort.

        ``batch_profile``: (input name, image size, largest batch) of a dynamic-batch graph. TensorRT then builds one
        engine for batches 1..largest, tuned for the largest, instead of one engine per batch shape it meets.
        """
        if self.provider == "TensorrtExecutionProvider":
            trt: dict = {"trt_fp16_enable": self.precision == "fp16", "trt_int8_enable": self.precision == "int8"}
            if batch_profile:
                name, size, largest = batch_profile
                trt["trt_profile_min_shapes"] = f"{name}:1x3x{size}x{size}"
                trt["trt_profile_opt_shapes"] = trt["trt_profile_max_shapes"] = f"{name}:{largest}x3x{size}x{size}"
            chain = [(self.provider, trt), ("CUDAExecutionProvider", {})]
        elif self.provider == "OpenVINOExecutionProvider":
            options: dict = {"device_type": "CPU"}
            if self.precision == "bf16":
                options["load_config"] = json.dumps({"CPU": {"INFERENCE_PRECISION_HINT": "bf16"}})
            elif self.precision == "fp32":
                options["precision"] = "FP32"
            # int8 / fp16 graphs: the graph fixes the arithmetic; no hint
            if threads:
                options["num_of_threads"] = threads
            chain = [(self.provider, options)]
        else:
            chain = [(self.provider, {})]
        if self.provider != "CPUExecutionProvider":
            chain.append(("CPUExecutionProvider", {}))
        return [p for p, _ in chain], [o for _, o in chain]


def candidate_backends(
    providers: list[str], precision: str, fallback: bool, has_golden: bool, graph_precision: str = "fp32"
) -> list[Backend]:
    """The backends to try, in order.

    ``providers``: configured order (empty: every available one, fastest first). ``precision``: ``auto`` or one
    of PRECISIONS. ``fallback``: after a reduced precision, also try fp32 on the same provider.
    ``graph_precision``: an int8 or fp16 graph already fixes its arithmetic; it runs as it is on each provider.
    """
    available = ort.get_available_providers()
    order = providers or [p for p in PROVIDER_ORDER if p in available]
    missing = [p for p in order if p not in available]
    if missing:
        raise ValueError(f"providers not available here: {', '.join(missing)} (available: {', '.join(available)})")
    if graph_precision != "fp32":
        return [Backend(provider, graph_precision) for provider in order]
    out: list[Backend] = []
    for provider in order:
        reduced = {"TensorrtExecutionProvider": ["fp16"], "OpenVINOExecutionProvider": ["bf16"] if cpu_supports_bf16() else []}
        options = reduced.get(provider, [])
        if precision == "auto":
            wanted = [*options, "fp32"] if has_golden else ["fp32"]
        elif precision == "fp32":
            wanted = ["fp32"]
        elif precision in options:
            wanted = [precision, "fp32"] if fallback else [precision]
        else:
            continue  # this provider cannot run the requested precision
        out.extend(Backend(provider, p) for p in wanted)
    if not out:
        raise ValueError(f"no available provider runs precision {precision!r} here (providers: {', '.join(order)})")
    return out


def select_backend(path: Path, manifest: Manifest, settings: Settings) -> tuple[OrtRunner, dict]:
    """The session of the first candidate backend that loads and passes the golden check, padded (GPU providers)
    and warmed at the batch sizes dynamic batching makes; with {backend, golden check, rejected backends}."""
    s = settings
    try:
        candidates = candidate_backends(
            s.providers, s.precision, s.precision_fallback, manifest.golden is not None, manifest.precision
        )
    except ValueError as exc:
        raise ModelLoadError(str(exc)) from None
    # The golden check tolerates the graph's own drift, measured at export (int8/fp16 graphs), plus the setting.
    tolerance = s.golden_tolerance + float((manifest.parity or {}).get("max_abs_prob_diff", 0.0))
    rejected: list[str] = []
    for backend in candidates:
        try:
            runner = OrtRunner(path / manifest.file, manifest, backend, s.inference_threads, s.inter_op_threads, s.max_batch_size)
            golden = runner.check_golden(path / manifest.golden.file, tolerance) if manifest.golden else None
        except ModelLoadError as exc:
            log.warning("%s version %d: %s", manifest.name, manifest.version, exc)
            rejected.append(str(exc))
            continue
        sizes = warmup_batch_sizes(min(s.max_batch_size, manifest.static_batch or s.max_batch_size))
        if s.batch_padding == "always" or (s.batch_padding == "auto" and backend.fixed_shapes):
            runner.pad_batches_to(sizes)
        if s.warmup:
            runner.warmup(manifest.input_size, sizes)
        return runner, {"backend": backend.label, "golden": golden, "rejected": rejected}
    raise ModelLoadError(f"no backend passed for {manifest.name} version {manifest.version}: {'; '.join(rejected)}")
