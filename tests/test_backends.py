"""Backend choice: the fastest provider/precision that passes the golden check, with fp32 fallback."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient

from model_repository import read_manifest
from service.app import create_app
from service.backends import Backend, candidate_backends, cpu_supports_bf16
from service.runtime import OrtRunner
from service.settings import Settings
from tests.conftest import copy_toy, export_random_model, jpeg_bytes

OPENVINO = "OpenVINOExecutionProvider" in ort.get_available_providers()


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    copy_toy(repo)
    return repo


def served(repository, **settings) -> dict:
    app = create_app(Settings(model_repository=repository, poll_interval_s=0, **settings))
    with TestClient(app) as c:
        ready = c.get("/readyz").status_code
        models = c.get("/v1/models").json()["models"]
        return {"ready": ready, "model": models[0]}


def test_candidate_order():
    labels = [b.label for b in candidate_backends([], "auto", True, has_golden=True)]
    assert labels[-1] == "CPU/fp32"
    if OPENVINO:
        expected = (["OpenVINO/bf16"] if cpu_supports_bf16() else []) + ["OpenVINO/fp32", "CPU/fp32"]
        assert labels == expected
    # Without golden data nothing but fp32 is tried: reduced precision must be checked, not assumed.
    assert all(b.precision == "fp32" for b in candidate_backends([], "auto", True, has_golden=False))
    assert [b.label for b in candidate_backends(["CPUExecutionProvider"], "fp32", True, True)] == ["CPU/fp32"]
    with pytest.raises(ValueError, match="not available"):
        candidate_backends(["NoSuchExecutionProvider"], "auto", True, True)
    with pytest.raises(ValueError, match="precision 'fp16'"):
        candidate_backends(["CPUExecutionProvider"], "fp16", True, True)


def test_openvino_options_carry_the_bf16_hint():
    providers, options = Backend("OpenVINOExecutionProvider", "bf16").session_providers(threads=2)
    assert providers == ["OpenVINOExecutionProvider", "CPUExecutionProvider"]
    assert "INFERENCE_PRECISION_HINT" in options[0]["load_config"] and options[0]["num_of_threads"] == 2


def test_tensorrt_builds_one_engine_for_every_batch_size():
    trt = Backend("TensorrtExecutionProvider", "fp16")
    providers, options = trt.session_providers(threads=0, batch_profile=("input", 224, 64))
    assert providers == ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert options[0]["trt_fp16_enable"] and options[0]["trt_profile_min_shapes"] == "input:1x3x224x224"
    assert options[0]["trt_profile_opt_shapes"] == options[0]["trt_profile_max_shapes"] == "input:64x3x224x224"
    assert "trt_profile_min_shapes" not in trt.session_providers(threads=0)[1][0]  # a static graph: no profile


def test_auto_picks_the_first_backend_that_passes(repository):
    state = served(repository)
    version = state["model"]["versions"][0]
    first = candidate_backends([], "auto", True, has_golden=True)[0]
    assert state["ready"] == 200 and version["backend"] == first.label and version["rejected_backends"] == []
    assert version["golden_check"]["max_abs_prob_diff"] <= 0.05


@pytest.mark.skipif(not (OPENVINO and cpu_supports_bf16()), reason="needs OpenVINO on a bf16-capable CPU")
def test_failed_golden_check_falls_back_to_fp32_or_refuses(repository):
    # A tolerance no bf16 arithmetic meets: bf16 is rejected and fp32 serves.
    state = served(repository, golden_tolerance=1e-4)
    version = state["model"]["versions"][0]
    assert version["backend"] == "OpenVINO/fp32" and version["precision"] == "fp32"
    assert "OpenVINO/bf16" in version["rejected_backends"][0]
    # Without fallback, a bf16 request that fails its check is refused: the server is not ready.
    refused = served(repository, precision="bf16", precision_fallback=False, golden_tolerance=1e-4)
    assert refused["ready"] == 503 and refused["model"]["versions"][0]["state"] == "failed"


@pytest.mark.full  # exports an int8 graph (torch)
def test_int8_graph_runs_as_int8(tmp_path):
    repo = tmp_path / "repo"
    calibration = tmp_path / "calib"
    calibration.mkdir()
    for i in range(32):  # enough calibration images that a random net's int8 graph stays within the parity bound
        (calibration / f"{i}.jpg").write_bytes(jpeg_bytes((48, 40), seed=i))
    export_random_model(repo, "q", "resnet20", int8=True, calibration_images=calibration)
    version = served(repo)["model"]["versions"][0]
    assert version["state"] == "ready" and version["backend"].endswith("/int8") and version["precision"] == "int8"
    assert [b.precision for b in candidate_backends([], "auto", True, True, graph_precision="int8")] == ["int8"] * len(
        candidate_backends([], "fp32", True, True)
    )


def test_gpu_providers_take_fixed_batch_shapes():
    assert Backend("CUDAExecutionProvider", "fp32").fixed_shapes and Backend("TensorrtExecutionProvider", "fp16").fixed_shapes
    assert not Backend("CPUExecutionProvider", "fp32").fixed_shapes
    assert not Backend("OpenVINOExecutionProvider", "bf16").fixed_shapes


class RecordingSession:
    """Delegates to an ONNX Runtime session, recording the batch size of every run."""

    def __init__(self, session) -> None:
        self.session, self.batch_sizes = session, []

    def run(self, outputs, feeds):
        self.batch_sizes.append(next(iter(feeds.values())).shape[0])
        return self.session.run(outputs, feeds)


def test_padded_batches_give_the_unpadded_rows(repository):
    version_dir = repository / "toy" / "1"
    manifest = read_manifest(version_dir)
    runner = OrtRunner(version_dir / manifest.file, manifest, Backend("CPUExecutionProvider", "fp32"))
    runner.session = recorder = RecordingSession(runner.session)
    batch = np.random.default_rng(0).standard_normal((11, 3, 32, 32)).astype(np.float32)
    plain = runner(batch[:3])
    runner.pad_batches_to([1, 2, 4, 8])
    padded, exact, beyond = runner(batch[:3]), runner(batch[:8]), runner(batch)
    assert recorder.batch_sizes == [3, 4, 8, 11]  # unpadded; 3 -> 4; 8 as it is; 11 > 8 runs as it is
    classes = manifest.num_classes
    assert padded.shape == (3, classes) and exact.shape == (8, classes) and beyond.shape == (11, classes)
    np.testing.assert_allclose(padded, plain, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(beyond[:8], exact, rtol=1e-5, atol=1e-5)


def test_a_gpu_backend_is_served_with_padded_batches(repository, monkeypatch):
    def padding(**settings) -> tuple[int, ...]:
        app = create_app(Settings(model_repository=repository, poll_interval_s=0, providers=["CPUExecutionProvider"], **settings))
        with TestClient(app) as c:
            return c.app.state.service.models.get("toy").runner.batch_sizes

    assert padding() == ()  # auto: the CPU provider runs batches as they are
    assert padding(batch_padding="always", max_batch_size=12) == (1, 2, 4, 8, 12)
    # auto pads for backends that tune per shape; on this CPU-only machine the CPU backend stands in for one.
    monkeypatch.setattr(Backend, "fixed_shapes", property(lambda self: self.provider == "CPUExecutionProvider"))
    assert padding(max_batch_size=12) == (1, 2, 4, 8, 12)
    assert padding(batch_padding="never") == ()


def test_gpu_runners_preload_the_cuda_wheels_once(repository, monkeypatch):
    # onnxruntime-gpu's cuda/cudnn extras install CUDA as pip wheels, found only once preloaded; CPU runners never ask.
    import service.runtime as runtime

    calls = []
    monkeypatch.setattr(ort, "preload_dlls", lambda: calls.append(1), raising=False)
    runtime.load_gpu_libraries.cache_clear()
    version_dir = repository / "toy" / "1"
    manifest = read_manifest(version_dir)
    OrtRunner(version_dir / manifest.file, manifest, Backend("CPUExecutionProvider", "fp32"))
    assert calls == []
    monkeypatch.setattr(Backend, "on_gpu", property(lambda self: True))
    for _ in range(2):
        OrtRunner(version_dir / manifest.file, manifest, Backend("CPUExecutionProvider", "fp32"))
    assert calls == [1]
    runtime.load_gpu_libraries.cache_clear()


def test_runners_pass_their_batch_profile_to_the_backend(repository, monkeypatch):
    seen = []
    original = Backend.session_providers

    def recording(self, threads, batch_profile=None):
        seen.append(batch_profile)
        return original(self, threads, batch_profile)

    monkeypatch.setattr(Backend, "session_providers", recording)
    version_dir = repository / "toy" / "1"
    manifest = read_manifest(version_dir)
    OrtRunner(version_dir / manifest.file, manifest, Backend("CPUExecutionProvider", "fp32"), max_batch_size=12)
    OrtRunner(version_dir / manifest.file, manifest, Backend("CPUExecutionProvider", "fp32"))
    assert seen == [(manifest.input.name, manifest.input_size, 12), None]
    with TestClient(create_app(Settings(model_repository=repository, poll_interval_s=0, max_batch_size=24))):
        assert seen[-1] == (manifest.input.name, manifest.input_size, 24)  # the service passes its largest batch
