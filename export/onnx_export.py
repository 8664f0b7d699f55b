"""PyTorch -> ONNX: dynamic batch axis (or a static one for TensorRT engines), optional fp16 weights."""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import torch
from torch import nn

INPUT_NAME, OUTPUT_NAME = "input", "logits"
MAX_DYNAMIC_BATCH = 4096


class Fp16Weights(nn.Module):
    """fp16 weights and activations inside, float32 input and output: (N, 3, H, W) f32 -> (N, C) f32."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net.half()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.half()).float()


def export_onnx(
    model: nn.Module,
    path: Path,
    input_size: int,
    opset: int = 18,
    fp16: bool = False,
    static_batch: int | None = None,
) -> None:
    """Write ``model`` (eval mode) as a single-file ONNX graph with input ``input`` and output ``logits``.

    The torch.export-based exporter folds BatchNorm into the preceding convolutions.
    """
    import copy

    net = copy.deepcopy(model).eval().float()
    if fp16:
        net = Fp16Weights(net)
    batch = static_batch or 2
    example = torch.randn(batch, 3, input_size, input_size)
    dynamic = None if static_batch else {"x": {0: torch.export.Dim("batch", min=1, max=MAX_DYNAMIC_BATCH)}}
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (example,),
            str(path),
            dynamo=True,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=dynamic,
            external_data=False,
        )


def simplify(path: Path) -> dict:
    """Run onnxslim; keep its graph only if it has fewer nodes or bytes. Returns what happened."""
    import onnx

    try:
        import onnxslim
    except ImportError as exc:
        raise RuntimeError("--simplify needs the onnxslim package (pip install onnxslim)") from exc
    original = onnx.load(str(path))
    slim = onnxslim.slim(original)
    before = (len(original.graph.node), path.stat().st_size)
    data = slim.SerializeToString()
    after = (len(slim.graph.node), len(data))
    kept = after[0] < before[0] or after[1] < before[1]
    if kept:
        path.write_bytes(data)
    return {
        "tool": "onnxslim",
        "nodes_before": before[0],
        "nodes_after": after[0],
        "bytes_before": before[1],
        "bytes_after": after[1],
        "kept": kept,
    }


def build_tensorrt_engine(onnx_path: Path, engine_path: Path, input_size: int, fp16: bool = True) -> None:
    """Serialise a TensorRT engine with an optimisation profile for batch 1 (min), 16 (opt), 64 (max)."""
    try:
        import tensorrt as trt
    except ImportError:
        raise RuntimeError(
            "--trt-engine needs the tensorrt Python package, which exists only on NVIDIA GPU machines "
            "(pip install tensorrt); export without it and let ONNX Runtime's TensorRT provider build the engine"
        ) from None
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    shape = lambda n: (n, 3, input_size, input_size)  # noqa: E731
    profile.set_shape(INPUT_NAME, shape(1), shape(16), shape(64))
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise RuntimeError("TensorRT failed to build the engine")
    engine_path.write_bytes(bytes(engine))
