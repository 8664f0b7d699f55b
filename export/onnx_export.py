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
