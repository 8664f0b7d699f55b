"""The Open Inference Protocol's (KServe v2) REST wire format for our models: request parsing and response encoding,
with Triton's binary tensor data and classification extensions. No HTTP and no model calls here.

Binary tensor data (``Inference-Header-Content-Length: L``): the body is L bytes of JSON, then each input that has
``"parameters": {"binary_data_size": n}`` as n raw bytes, in input order: little-endian, row-major; a BYTES element
is a 4-byte little-endian length, then its bytes. ``Inference-Header-Content-Length: 0`` is the raw binary request:
the whole body is one encoded image. In JSON, a BYTES element holding an image is its base64 text (JSON strings
must be UTF-8; an encoded image is not).

Each model offers two inputs, of which a request sends one: ``image``, BYTES ``[N]`` or ``[N, 1]`` of encoded
images, preprocessed on the server as /classify does; and the manifest's input (e.g. ``input``), FP32
``[N, 3, H, W]`` already preprocessed. One output, ``probabilities``, FP32 ``[N, C]``; with ``"parameters":
{"classification": k}`` it is BYTES ``[N, k]`` of ``"score:index:label"`` strings instead.
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
from dataclasses import dataclass, field

import numpy as np
import orjson

from model_repository import Manifest

from .errors import InvalidInput
from .inference import Prediction

IMAGE_INPUT = "image"
OUTPUT = "probabilities"
PLATFORM = "onnxruntime_onnx"
EXTENSIONS = ["binary_tensor_data", "classification"]
_LENGTH = struct.Struct("<I")


def model_metadata(name: str, versions: list[int], manifest: Manifest) -> dict:
    size = manifest.input_size
    return {
        "name": name,
        "versions": [str(v) for v in versions],
        "platform": PLATFORM,
        "inputs": [
            {"name": IMAGE_INPUT, "datatype": "BYTES", "shape": [-1]},
            {"name": manifest.input.name, "datatype": "FP32", "shape": [-1, 3, size, size]},
        ],
        "outputs": [{"name": OUTPUT, "datatype": "FP32", "shape": [-1, manifest.num_classes]}],
    }


@dataclass
class RequestedOutput:
    binary: bool
    classification: int | None = None  # top-k as "score:index:label" strings


@dataclass
class InferRequest:
    """A parsed request: exactly one of ``images`` (encoded) or ``tensor`` ((N, 3, H, W) float32) is set."""

    id: str | None = None
    images: list[bytes] | None = None
    tensor: np.ndarray | None = None
    output: RequestedOutput = field(default_factory=lambda: RequestedOutput(binary=False))
    timeout_ms: float | None = None  # the "timeout" parameter, given in microseconds as Triton's clients send it

    @property
    def count(self) -> int:
        return len(self.images) if self.images is not None else len(self.tensor)


def _fail(message: str) -> InvalidInput:
    return InvalidInput(f"malformed inference request: {message}")


def _object(value: object, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _fail(f"{where} must be an object")
    return value


def _flag(parameters: dict, key: str, where: str) -> bool | None:
    value = parameters.get(key)
    if value is not None and not isinstance(value, bool):
        raise _fail(f"{where}.{key} must be true or false")
    return value


def _count(shape: object, where: str) -> tuple[list[int], int]:
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise _fail(f"{where}.shape must be a list of non-negative integers")
    return shape, math.prod(shape)


def parse_infer_request(body: bytes, header_length: str | None, manifest: Manifest) -> InferRequest:
    """The request body (and its Inference-Header-Content-Length) -> an InferRequest checked against the model's
    inputs and output. InvalidInput (400) says what is wrong and, for a wrong input, what was expected."""
    if header_length is not None:
        if not header_length.isascii() or not header_length.isdigit() or int(header_length) > len(body):
            raise _fail(f"Inference-Header-Content-Length {header_length!r} is not a length within the {len(body)}-byte body")
        if int(header_length) == 0:  # the raw binary request: the body is one encoded image
            return InferRequest(images=[body])
        json_part, binary = body[: int(header_length)], memoryview(body)[int(header_length) :]
    else:
        json_part, binary = body, memoryview(b"")
    try:
        document = orjson.loads(json_part)
    except orjson.JSONDecodeError as exc:
        raise _fail(f"the JSON header is not valid JSON ({exc})") from None
    if not isinstance(document, dict):
        raise _fail("the JSON header must be an object")
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise _fail("id must be a string")
    parameters = _object(document.get("parameters"), "parameters")
    inputs = document.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise _fail("inputs must be a non-empty list")
    if len(inputs) != 1:
        raise InvalidInput(f"send one input, {IMAGE_INPUT!r} or {manifest.input.name!r}, not {len(inputs)}")
    request = InferRequest(id=request_id, timeout_ms=_timeout_ms(parameters))
    offset = _parse_input(_object(inputs[0], "inputs[0]"), binary, manifest, request)
    if offset != len(binary):
        raise _fail(f"{len(binary) - offset} bytes of binary data follow the inputs' binary_data_size")
    request.output = _parse_outputs(document.get("outputs"), parameters, manifest)
    return request


def _timeout_ms(parameters: dict) -> float | None:
    timeout_us = parameters.get("timeout")
    if timeout_us is None:
        return None
    if isinstance(timeout_us, bool) or not isinstance(timeout_us, int | float) or not timeout_us > 0:
        raise _fail("parameters.timeout must be a positive number of microseconds")
    return timeout_us / 1000


def _parse_input(tensor: dict, binary: memoryview, manifest: Manifest, request: InferRequest) -> int:
    """Fill ``request.images`` or ``request.tensor`` from one input; returns the binary bytes it consumed."""
    name, datatype = tensor.get("name"), tensor.get("datatype")
    if not isinstance(name, str) or not isinstance(datatype, str):
        raise _fail("an input's name and datatype must be strings")
    size = manifest.input_size
    expected = {IMAGE_INPUT: ("BYTES", "[N] or [N, 1]"), manifest.input.name: ("FP32", f"[N, 3, {size}, {size}]")}
    if name not in expected:
        offered = ", ".join(f"{n!r} ({t} {s})" for n, (t, s) in expected.items())
        raise InvalidInput(f"{manifest.name} has no input {name!r}; its inputs are {offered}")
    want_type, want_shape = expected[name]
    shape, count = _count(tensor.get("shape"), f"input {name!r}")
    if datatype != want_type:
        raise InvalidInput(f"input {name!r} takes {want_type} {want_shape}, got datatype {datatype!r}")
    if name == IMAGE_INPUT and (len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1) or count == 0):
        raise InvalidInput(f"input {name!r} takes BYTES [N] or [N, 1] with N >= 1, got shape {shape}")
    if name != IMAGE_INPUT and len(shape) != 4:  # the core checks the rest against the model it runs on
        raise InvalidInput(f"input {name!r} takes FP32 {want_shape}, got shape {shape}")
    parameters = _object(tensor.get("parameters"), f"input {name!r}.parameters")
    size_given = parameters.get("binary_data_size")
    if size_given is not None:
        if isinstance(size_given, bool) or not isinstance(size_given, int) or not 0 <= size_given <= len(binary):
            raise _fail(f"input {name!r}: binary_data_size {size_given!r} is not within the {len(binary)} bytes sent")
        chunk = binary[:size_given]
        if name == IMAGE_INPUT:
            request.images = _binary_bytes_elements(chunk, count, name)
        else:
            if size_given != 4 * count:
                raise _fail(f"input {name!r}: {size_given} bytes for {count} FP32 elements (expected {4 * count})")
            request.tensor = np.frombuffer(chunk, dtype="<f4").astype(np.float32).reshape(shape)
        return size_given
    data = tensor.get("data")
    if not isinstance(data, list):
        raise _fail(f"input {name!r} has neither data nor parameters.binary_data_size")
    if name == IMAGE_INPUT:
        request.images = _json_bytes_elements(data, count, name)
    else:
        try:
            values = np.asarray(data, dtype=np.float32).reshape(-1)
        except (ValueError, TypeError, OverflowError):
            raise _fail(f"input {name!r}: data must be numbers (a flat or nested list)") from None
        if values.size != count:
            raise _fail(f"input {name!r}: {values.size} values for shape {shape} ({count} elements)")
        request.tensor = values.reshape(shape)
    return 0


def _binary_bytes_elements(chunk: memoryview, count: int, name: str) -> list[bytes]:
    elements, offset = [], 0
    while offset < len(chunk):
        if offset + 4 > len(chunk):
            raise _fail(f"input {name!r}: a BYTES element's 4-byte length is cut off")
        (length,) = _LENGTH.unpack_from(chunk, offset)
        offset += 4
        if offset + length > len(chunk):
            raise _fail(f"input {name!r}: a BYTES element of {length} bytes runs past binary_data_size")
        elements.append(bytes(chunk[offset : offset + length]))
        offset += length
    if len(elements) != count:
        raise _fail(f"input {name!r}: {len(elements)} BYTES elements for {count} in its shape")
    return elements


def _json_bytes_elements(data: list, count: int, name: str) -> list[bytes]:
    flat = (
        data if all(isinstance(x, str) for x in data) else [x for row in data for x in (row if isinstance(row, list) else [row])]
    )
    if not all(isinstance(x, str) for x in flat):
        raise _fail(f"input {name!r}: BYTES data must be strings (each image's base64)")
    if len(flat) != count:
        raise _fail(f"input {name!r}: {len(flat)} elements for {count} in its shape")
    try:
        return [base64.b64decode(x, validate=True) for x in flat]
    except (binascii.Error, ValueError):
        raise InvalidInput(f"input {name!r}: a BYTES element is not base64 (send images as base64 in JSON)") from None


def _parse_outputs(outputs: object, parameters: dict, manifest: Manifest) -> RequestedOutput:
    binary_default = bool(_flag(parameters, "binary_data_output", "parameters"))
    if outputs is None:
        return RequestedOutput(binary=binary_default)
    if not isinstance(outputs, list) or len(outputs) > 1:
        raise InvalidInput(f"outputs must be a list naming at most the one output, {OUTPUT!r}")
    if not outputs:
        return RequestedOutput(binary=binary_default)
    output = _object(outputs[0], "outputs[0]")
    if not isinstance(output.get("name"), str):
        raise _fail("an output's name must be a string")
    if output.get("name") != OUTPUT:
        raise InvalidInput(f"{manifest.name} has no output {output.get('name')!r}; its output is {OUTPUT!r}")
    params = _object(output.get("parameters"), f"output {OUTPUT!r}.parameters")
    binary = _flag(params, "binary_data", f"output {OUTPUT!r}.parameters")
    k = params.get("classification")
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= manifest.num_classes):
        raise InvalidInput(f"classification must be an integer in 1..{manifest.num_classes}, got {k!r}")
    return RequestedOutput(binary=binary_default if binary is None else binary, classification=k)


def encode_infer_response(request: InferRequest, predictions: list[Prediction]) -> tuple[bytes, dict[str, str]]:
    """One Prediction per image or row -> the response body and its headers (binary tensor data if the output
    asks for it): FP32 [N, C] probabilities, or BYTES [N, k] "score:index:label" strings."""
    output, first = request.output, predictions[0]
    if output.classification:
        k, labels = output.classification, first.labels
        strings = [f"{score:f}:{i}:{labels[i]}" for p in predictions for i, score in p.top(k)]
        tensor = {"name": OUTPUT, "datatype": "BYTES", "shape": [len(predictions), k]}
        raw = b"".join(_LENGTH.pack(len(b)) + b for b in (s.encode() for s in strings)) if output.binary else None
        data: list = strings
    else:
        values = np.stack([p.probabilities for p in predictions]).astype("<f4")  # (N, C)
        tensor = {"name": OUTPUT, "datatype": "FP32", "shape": list(values.shape)}
        raw = values.tobytes() if output.binary else None
        data = values.ravel().tolist() if raw is None else []
    if raw is None:
        tensor["data"] = data
    else:
        tensor["parameters"] = {"binary_data_size": len(raw)}
    document: dict = {"model_name": first.model, "model_version": str(first.version), "outputs": [tensor]}
    if request.id is not None:
        document["id"] = request.id
    versions = sorted({p.version for p in predictions})
    if len(versions) > 1:  # a hot reload swapped versions while this request's images were in flight
        document["parameters"] = {"model_versions": [str(v) for v in versions]}
    header = orjson.dumps(document)
    if raw is None:
        return header, {"content-type": "application/json"}
    return header + raw, {"content-type": "application/octet-stream", "inference-header-content-length": str(len(header))}
