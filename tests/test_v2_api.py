"""The v2 transport and the inference core in-process (ASGI): malformed wire formats, readiness while draining,
the errors' shape, and post-processing by the manifest's output kind."""

from __future__ import annotations

import json
import shutil
import struct

import numpy as np
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient

from model_repository import read_manifest
from service.app import create_app
from service.imaging import image_to_input
from service.settings import Settings
from tests.conftest import jpeg_bytes


@pytest.fixture(scope="module")
def repository(toy_repository):
    return toy_repository


@pytest.fixture(scope="module")
def client(repository):
    settings = Settings(model_repository=repository, poll_interval_s=0, max_delay_ms=0, precision="fp32")
    with TestClient(create_app(settings)) as c:
        yield c


def binary_request(header: dict, tail: bytes, length: int | None = None) -> dict:
    body = json.dumps(header).encode()
    return {
        "content": body + tail,
        "headers": {"Inference-Header-Content-Length": str(len(body) if length is None else length)},
    }


def bytes_input(size: int) -> dict:
    return {"name": "image", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": size}}


def tensor(name: str, shape: list[int], datatype: str, data: list) -> dict:
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


def infer(*inputs: dict, **extra) -> dict:
    return {"json": {"inputs": list(inputs), **extra}}


IMAGE = jpeg_bytes()
ELEMENT = struct.pack("<I", len(IMAGE)) + IMAGE
X = tensor("image", [1], "BYTES", ["eA=="])  # a well-formed input (its bytes are no image)
FP32_SIZE_4 = {"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32", "parameters": {"binary_data_size": 4}}
MALFORMED = [
    # (what, request kwargs, status, words in the error)
    ("not json", {"content": b"{nope"}, 400, "not valid JSON"),
    ("json not an object", {"json": [1, 2]}, 400, "must be an object"),
    ("no inputs", infer(), 400, "non-empty list"),
    ("two inputs", infer({"name": "image"}, {"name": "input"}), 400, "send one input"),
    ("header length past the body", binary_request({"inputs": [bytes_input(4)]}, b"", length=10**6), 400, "within"),
    ("header length not a number", binary_request({"inputs": [bytes_input(4)]}, b"", length=-1), 400, "Inference-Header"),
    ("element length cut off", binary_request({"inputs": [bytes_input(2)]}, b"\x00\x01"), 400, "cut off"),
    ("element past its tensor", binary_request({"inputs": [bytes_input(8)]}, struct.pack("<I", 99) + b"abcd"), 400, "runs past"),
    ("bytes after the inputs", binary_request({"inputs": [bytes_input(len(ELEMENT))]}, ELEMENT + b"xx"), 400, "follow"),
    ("two elements for [1]", binary_request({"inputs": [bytes_input(2 * len(ELEMENT))]}, 2 * ELEMENT), 400, "2 BYTES elements"),
    ("json bytes not base64", infer(tensor("image", [1], "BYTES", ["%%"])), 400, "base64"),
    ("fp32 data not numbers", infer(tensor("input", [1, 3, 32, 32], "FP32", ["a"])), 400, "numbers"),
    ("fp32 scalar", infer(tensor("input", [], "FP32", [1.0])), 400, "got shape []"),
    ("fp32 count off", infer(tensor("input", [1, 3, 32, 32], "FP32", [1.0])), 400, "3072"),
    ("fp32 binary size off", binary_request({"inputs": [FP32_SIZE_4]}, b"\x00" * 4), 400, "12288"),
    ("bad timeout", infer(X, parameters={"timeout": "soon"}), 400, "timeout"),
    ("unknown output", infer(X, outputs=[{"name": "logits"}]), 400, "no output 'logits'"),
    ("classification too large", infer(X, outputs=[{"name": "probabilities", "parameters": {"classification": 4}}]), 400, "1..3"),
    ("image shape [1, 2]", infer(tensor("image", [1, 2], "BYTES", ["eA==", "eA=="])), 400, "[N] or [N, 1]"),
]


@pytest.mark.parametrize(("what", "kwargs", "status", "words"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_requests_are_typed_errors_in_the_protocols_shape(client, what, kwargs, status, words):
    r = client.post("/v2/models/toy/infer", **kwargs)
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error"} and words in r.json()["error"], r.json()


def test_binary_output_and_nested_fp32_json(repository, client):
    spec = read_manifest(repository / "toy" / "1").preprocess
    x = image_to_input(IMAGE, spec, 10**8)  # (3, 32, 32)
    request = {
        "id": "n",
        "inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": x[None].tolist()}],  # nested
        "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
    }
    r = client.post("/v2/models/toy/versions/1/infer", json=request)
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    length = int(r.headers["inference-header-content-length"])
    header = json.loads(r.content[:length])
    [output] = header["outputs"]
    assert header["id"] == "n" and output["shape"] == [1, 3] and output["parameters"]["binary_data_size"] == 12
    got = np.frombuffer(r.content[length:], "<f4")
    raw = client.post("/v2/models/toy/infer", content=IMAGE, headers={"Inference-Header-Content-Length": "0"}).json()
    np.testing.assert_array_equal(got, np.float32(raw["outputs"][0]["data"]))


def test_ready_is_503_while_draining_and_errors_carry_the_status_table(client):
    state = client.app.state.service
    assert client.get("/v2/health/ready").status_code == 200
    state.admission.draining = True
    try:
        ready = client.get("/v2/health/ready")
        assert ready.status_code == 503 and ready.headers["Retry-After"] == "5" and "shutting down" in ready.json()["error"]
        refused = client.post("/v2/models/toy/infer", content=IMAGE, headers={"Inference-Header-Content-Length": "0"})
        assert refused.status_code == 503 and refused.headers["Retry-After"] and set(refused.json()) == {"error"}
    finally:
        state.admission.draining = False
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/models/toy/infer").status_code == 405
    assert client.get("/v2/models/toy/versions/x").status_code == 404
    tiny = client.post(
        "/v2/models/toy/infer", content=IMAGE, headers={"Inference-Header-Content-Length": "0", "X-Request-Timeout-Ms": "0.001"}
    )
    assert tiny.status_code == 504 and set(tiny.json()) == {"error"}


def test_a_probabilities_output_is_not_softmaxed_again(repository, tmp_path):
    """The core post-processes by the manifest's output kind: the same graph declared as giving probabilities
    is answered with its raw outputs, where the logits one is answered with their softmax."""
    repo = tmp_path / "repo"
    shutil.copytree(repository / "toy", repo / "toy")
    manifest_path = repo / "toy" / "1" / "model.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["output"]["kind"] = "probabilities"
    manifest_path.write_text(json.dumps(manifest))
    spec = read_manifest(repo / "toy" / "1").preprocess
    session = ort.InferenceSession(str(repo / "toy" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    raw = session.run(None, {"input": image_to_input(IMAGE, spec, 10**8)[None]})[0][0]
    settings = Settings(
        model_repository=repo, poll_interval_s=0, max_delay_ms=0, precision="fp32", providers=["CPUExecutionProvider"]
    )
    with TestClient(create_app(settings)) as c:
        scores = {p["index"]: p["score"] for p in c.post("/classify?top_k=3", content=IMAGE).json()["predictions"]}
    np.testing.assert_allclose([scores[i] for i in range(3)], raw, rtol=1e-5, atol=1e-6)
    assert abs(sum(scores.values()) - 1) > 1e-3  # raw outputs of a random net, not a distribution
