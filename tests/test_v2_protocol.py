"""The Open Inference Protocol (KServe v2) driven by the real ``tritonclient`` over HTTP on loopback, against a
real ``python -m service`` process; the same photos through /classify and /v2 give the same answers."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from model_repository import read_manifest
from service.imaging import image_to_input
from tests.conftest import ROOT, TOY_CLASSES, Server, jpeg_bytes

pytestmark = pytest.mark.slow
PHOTOS = sorted((ROOT / "tests" / "fixtures" / "cifar10").glob("*.jpg"))[:4]


@pytest.fixture(scope="module")
def repository(toy_repository):
    return toy_repository


@pytest.fixture(scope="module")
def server(repository):
    # One request at a time in these tests: every request runs at batch size 1, so answers compare exactly.
    s = Server(repository, "--max-delay-ms", "0", "--precision", "fp32", "--max-concurrent-work", "4", "--queue-size", "2")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(server):
    c = triton.InferenceServerClient(server.url.removeprefix("http://"))
    yield c
    c.close()


def image_input(images: list[bytes], binary: bool = True, shape: list[int] | None = None) -> triton.InferInput:
    tensor = triton.InferInput("image", shape or [len(images)], "BYTES")
    data = images if binary else [base64.b64encode(i) for i in images]
    tensor.set_data_from_numpy(np.array(data, dtype=object).reshape(shape or [len(images)]), binary_data=binary)
    return tensor


def tensor_input(batch: np.ndarray, binary: bool = True) -> triton.InferInput:
    tensor = triton.InferInput("input", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch, binary_data=binary)
    return tensor


def probabilities(client, inputs, binary_output: bool = True, **kw) -> np.ndarray:
    outputs = [triton.InferRequestedOutput("probabilities", binary_data=binary_output)]
    return client.infer("toy", inputs, outputs=outputs, **kw).as_numpy("probabilities")


def classify(server, data: bytes, top_k: int = 3) -> dict:
    r = httpx.post(f"{server.url}/classify?top_k={top_k}", content=data, headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 200, r.text
    return r.json()


def classify_probabilities(server, data: bytes) -> np.ndarray:
    """(C,) float32: /classify's scores by class index."""
    out = np.zeros(len(TOY_CLASSES), np.float32)
    for p in classify(server, data)["predictions"]:
        out[p["index"]] = p["score"]
    return out


def test_server_and_model_metadata_and_readiness(client):
    meta = client.get_server_metadata()
    assert meta["name"] == "resnet-serve" and {"binary_tensor_data", "classification"} <= set(meta["extensions"])
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("toy") and client.is_model_ready("toy", "1")
    assert not client.is_model_ready("nope") and not client.is_model_ready("toy", "2")
    for version in ("", "1"):
        model = client.get_model_metadata("toy", version)
        assert model["name"] == "toy" and model["versions"] == ["1"] and model["platform"] == "onnxruntime_onnx"
        assert {i["name"]: (i["datatype"], i["shape"]) for i in model["inputs"]} == {
            "image": ("BYTES", [-1]),
            "input": ("FP32", [-1, 3, 32, 32]),
        }
        assert model["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}]
    with pytest.raises(InferenceServerException) as info:
        client.get_model_metadata("nope")
    assert info.value.status() == "404"


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json-base64"])
def test_bytes_images_give_what_classify_gives(server, client, binary):
    for photo in PHOTOS:
        data = photo.read_bytes()
        got = probabilities(client, [image_input([data], binary)], binary_output=binary)
        assert got.shape == (1, 3) and got.dtype == np.float32
        np.testing.assert_array_equal(got[0], classify_probabilities(server, data))  # same batch size: identical


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_preprocessed_fp32_input_gives_what_the_image_gives(repository, client, binary):
    spec = read_manifest(repository / "toy" / "1").preprocess
    data = PHOTOS[0].read_bytes()
    batch = image_to_input(data, spec, 10**8)[None]  # (1, 3, 32, 32), as the server preprocesses it
    from_tensor = probabilities(client, [tensor_input(batch, binary)], binary_output=binary)
    np.testing.assert_array_equal(from_tensor, probabilities(client, [image_input([data])]))


def test_classification_extension_and_request_id(server, client):
    data = PHOTOS[1].read_bytes()
    outputs = [triton.InferRequestedOutput("probabilities", class_count=2)]
    result = client.infer("toy", [image_input([data])], outputs=outputs, request_id="req-7")
    assert result.get_response()["id"] == "req-7" and result.get_response()["model_version"] == "1"
    strings = result.as_numpy("probabilities")
    assert strings.shape == (1, 2)
    expected = classify(server, data, top_k=2)["predictions"]
    for text, p in zip(strings[0], expected, strict=True):
        score, index, label = text.decode().split(":")
        assert (int(index), label) == (p["index"], p["label"]) and float(score) == pytest.approx(p["score"], abs=1e-6)


def test_n_images_in_one_request_in_order_and_counted_against_admission(server, client):
    datas = [p.read_bytes() for p in PHOTOS[:3]]
    got = probabilities(client, [image_input(datas, shape=[3, 1])])
    assert got.shape == (3, 3)
    for row, data in zip(got, datas, strict=True):
        np.testing.assert_allclose(row, classify_probabilities(server, data), atol=1e-6)  # batched with each other
    # This server admits 4 at work + 2 waiting: 7 images in one request would never fit (413, not a retryable 503).
    with pytest.raises(InferenceServerException) as info:
        probabilities(client, [image_input(datas * 2 + datas[:1])])
    assert info.value.status() == "413"
    metrics = httpx.get(server.url + "/metrics").text
    assert 'resnet_serve_requests_total{route="/v2/models/{name}/infer",status="200"}' in metrics
    assert 'resnet_serve_requests_total{route="/v2/models/{name}/infer",status="413"} 1.0' in metrics


def test_raw_binary_request_is_one_image(server):
    data = PHOTOS[2].read_bytes()
    r = httpx.post(f"{server.url}/v2/models/toy/infer", content=data, headers={"Inference-Header-Content-Length": "0"})
    assert r.status_code == 200, r.text
    [output] = r.json()["outputs"]
    assert output["shape"] == [1, 3]
    np.testing.assert_array_equal(np.float32(output["data"]), classify_probabilities(server, data))


def _fp32(shape):
    return tensor_input(np.zeros(shape, np.float32))


def _wrong_datatype():
    tensor = triton.InferInput("image", [1, 3, 32, 32], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 3, 32, 32), np.float32))
    return tensor


BAD = [
    # (what, inputs, model, version, status, words in the message)
    ("wrong datatype", lambda: [_wrong_datatype()], "toy", "", "400", "takes BYTES"),
    ("wrong shape", lambda: [_fp32((1, 3, 16, 16))], "toy", "", "400", "FP32 [N, 3, 32, 32]"),
    ("undecodable bytes", lambda: [image_input([b"\x89PNG\r\n\x1a\n broken"])], "toy", "", "400", "could not be decoded"),
    ("svg", lambda: [image_input([b"<svg xmlns='http://www.w3.org/2000/svg'/>"])], "toy", "", "415", "SVG"),
    ("unknown input", lambda: [triton.InferInput("pixels", [1], "BYTES")], "toy", "", "400", "no input 'pixels'"),
    ("unknown model", lambda: [image_input([jpeg_bytes()])], "nope", "", "404", "not loaded"),
    ("unknown version", lambda: [image_input([jpeg_bytes()])], "toy", "9", "404", "version 9"),
]


@pytest.mark.parametrize(("what", "inputs", "model", "version", "status", "words"), BAD, ids=[b[0] for b in BAD])
def test_bad_requests_answer_their_status(client, what, inputs, model, version, status, words):
    tensors = inputs()
    if what == "unknown input":
        tensors[0].set_data_from_numpy(np.array([b"x"], dtype=object))
    with pytest.raises(InferenceServerException) as info:
        client.infer(model, tensors, model_version=version)
    assert info.value.status() == status and words in info.value.message(), info.value


def test_deadlines_from_the_timeout_parameter_and_the_header(client):
    with pytest.raises(InferenceServerException) as info:
        client.infer("toy", [image_input([jpeg_bytes()])], timeout=1)  # microseconds, as Triton's clients send it
    assert info.value.status() == "504"
    with pytest.raises(InferenceServerException) as info:
        client.infer("toy", [image_input([jpeg_bytes()])], headers={"X-Request-Timeout-Ms": "0.001"})
    assert info.value.status() == "504"
    assert client.infer("toy", [image_input([jpeg_bytes()])], timeout=5_000_000).as_numpy("probabilities").shape == (1, 3)
