"""int8 export: ONNX Runtime static quantization (QDQ, per-channel int8 weights, uint8 activations), calibrated
on a folder of real images preprocessed exactly as the service will."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from model_repository import Preprocess

from .checks import parity_inputs
from .errors import ExportError
from .onnx_export import INPUT_NAME


def quantize_int8(onnx_path: Path, preprocess: Preprocess, calibration_dir: Path, count: int = 64) -> dict:
    """Replace ``onnx_path`` with its int8 QDQ version. Returns what was done (for the manifest)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    inputs, described = parity_inputs(preprocess, calibration_dir, count=count)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.rows = iter(inputs[:, None])  # one (1, 3, H, W) image per calibration step

        def get_next(self) -> dict | None:
            row = next(self.rows, None)
            return None if row is None else {INPUT_NAME: np.ascontiguousarray(row)}

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        try:
            quant_pre_process(str(onnx_path), str(prepared))
            quantize_static(
                str(prepared),
                str(onnx_path),
                Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
            )
        except Exception as exc:  # the quantizer raises many types
            raise ExportError(f"int8 quantization failed: {exc}") from None
    return {
        "method": "onnxruntime static QDQ, per-channel int8 weights, uint8 activations, MinMax calibration",
        "calibration": described,
    }
