"""The service through its ASGI app, with a real ONNX Runtime model from the fixture repository (no torch)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from service.settings import Settings
from tests.conftest import TOY_CLASSES, client_for, copy_toy, jpeg_bytes, republish


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    copy_toy(repo)
    return repo


@pytest.fixture(scope="module")
def client(repository):
    with client_for(repository) as c:
        yield c


def png_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", **kw)
    return buf.getvalue()


def test_classify_raw_and_multipart(client):
    data = jpeg_bytes()
    raw = client.post("/classify?top_k=3", content=data, headers={"Content-Type": "image/jpeg"})
    assert raw.status_code == 200, raw.text
    body = raw.json()
    assert body["model"] == "toy" and body["version"] == 1
    scores = [p["score"] for p in body["predictions"]]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True) and sum(scores) == pytest.approx(1, abs=1e-6)
    assert {p["label"] for p in body["predictions"]} == set(TOY_CLASSES)
    assert set(body["timing_ms"]) == {"queue", "preprocess", "inference", "total"}
    multi = client.post("/classify?top_k=3", files={"file": ("x.jpg", data, "image/jpeg")}, headers={"X-Request-ID": "req-42"})
    assert multi.status_code == 200 and multi.headers["X-Request-ID"] == "req-42"
    assert multi.json()["predictions"] == body["predictions"]
    assert len(raw.headers["X-Request-ID"]) == 32  # generated when the client sends none


PARAMETER_CASES = [
    # (query, headers): answered alike whether the body is raw or multipart (one handler, one parameter parser)
    ("?top_k=2", {}),
    ("?top_k=1&top_k=3", {}),
    ("?top_k=abc", {}),
    ("?top_k=0", {}),
    ("?top_k=", {}),
    ("?version=1", {}),
    ("?version=x", {}),
    ("?version=9", {}),
    ("?model=toy&version=1", {}),
    ("?model=other", {}),
    ("", {"X-Request-Timeout-Ms": "5000"}),
    ("", {"X-Request-Timeout-Ms": "abc"}),
    ("", {"X-Request-Timeout-Ms": "-1"}),
    ("", {"X-Request-Timeout-Ms": "nan"}),
]


@pytest.mark.parametrize(("query", "headers"), PARAMETER_CASES, ids=[q + str(h) for q, h in PARAMETER_CASES])
def test_raw_path_answers_like_the_documented_route(client, query, headers):
    data = jpeg_bytes(seed=4)
    raw = client.post("/classify" + query, content=data, headers={"Content-Type": "image/jpeg", **headers})
    multi = client.post("/classify" + query, files={"file": ("x.jpg", data, "image/jpeg")}, headers=headers)
    assert raw.status_code == multi.status_code, (raw.text, multi.text)
    if raw.status_code == 200:
        assert raw.json()["predictions"] == multi.json()["predictions"]
    else:
        assert raw.json()["error"]["code"] == multi.json()["error"]["code"]
        assert raw.headers["X-Request-ID"] == raw.json()["error"]["request_id"]


def test_one_parameter_parser_for_raw_and_multipart_bodies_counted_under_their_route(repository):
    """top_k and version are ASCII decimal integers whatever the body: '3.0' and a non-ASCII digit are refused by
    both (they used to be accepted by one path and refused by the other); both count under route "/classify"."""
    with client_for(repository) as c:
        for query in ("?top_k=3.0", "?top_k=%D9%A3", "?version=%C2%B9"):  # 3.0, Arabic-Indic three, superscript one
            raw = c.post("/classify" + query, content=jpeg_bytes(), headers={"Content-Type": "image/jpeg"})
            multi = c.post("/classify" + query, files={"file": ("x.jpg", jpeg_bytes(), "image/jpeg")})
            for r in (raw, multi):
                assert r.status_code == 422 and "expected an integer" in r.json()["error"]["message"], (query, r.text)
        for _ in range(3):
            assert c.post("/classify", content=jpeg_bytes(), headers={"Content-Type": "image/jpeg"}).status_code == 200
        metrics = c.get("/metrics").text
    assert 'resnet_serve_requests_total{route="/classify",status="200"} 3.0' in metrics
    assert 'resnet_serve_requests_total{route="/classify",status="422"} 6.0' in metrics


def _png_with_size(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with a tiny (invalid) body: a decompression bomb's header."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))  # noqa: E731
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


BAD_INPUTS = [
    # (description, request kwargs, query, status, error code)
    ("empty body", dict(content=b"", headers={"Content-Type": "image/jpeg"}), "", 400, "invalid_input"),
    ("truncated jpeg", dict(content=jpeg_bytes()[:300], headers={"Content-Type": "image/jpeg"}), "", 400, "invalid_input"),
    ("random bytes", dict(content=bytes(range(256)) * 4, headers={"Content-Type": "image/jpeg"}), "", 400, "invalid_input"),
    ("wrong multipart field", dict(files={"image": ("x.jpg", jpeg_bytes(), "image/jpeg")}), "", 400, "invalid_input"),
    ("unknown model", dict(content=jpeg_bytes(), headers={"Content-Type": "image/jpeg"}), "?model=nope", 404, "not_found"),
    ("unknown version", dict(content=jpeg_bytes(), headers={"Content-Type": "image/jpeg"}), "?version=7", 404, "not_found"),
    (
        "svg",
        dict(content=b'<svg xmlns="http://www.w3.org/2000/svg"/>', headers={"Content-Type": "image/svg+xml"}),
        "",
        415,
        "unsupported_media_type",
    ),
    (
        "svg sent as jpeg",
        dict(content=b'<?xml version="1.0"?><svg/>', headers={"Content-Type": "image/jpeg"}),
        "",
        415,
        "unsupported_media_type",
    ),
    (
        "heic",
        dict(content=b"\x00\x00\x00\x18ftypheic" + b"\x00" * 64, headers={"Content-Type": "image/jpeg"}),
        "",
        415,
        "unsupported_media_type",
    ),
    ("pdf", dict(content=b"%PDF-1.7\n...", headers={"Content-Type": "application/pdf"}), "", 415, "unsupported_media_type"),
    ("text", dict(content=b"hello", headers={"Content-Type": "text/plain"}), "", 415, "unsupported_media_type"),
    (
        "text as octet-stream",
        dict(content=b"just some text", headers={"Content-Type": "application/octet-stream"}),
        "",
        415,
        "unsupported_media_type",
    ),
    ("top_k zero", dict(content=jpeg_bytes(), headers={"Content-Type": "image/jpeg"}), "?top_k=0", 422, "invalid_parameter"),
    ("top_k too big", dict(content=jpeg_bytes(), headers={"Content-Type": "image/jpeg"}), "?top_k=4", 422, "invalid_parameter"),
    ("top_k not int", dict(content=jpeg_bytes(), headers={"Content-Type": "image/jpeg"}), "?top_k=abc", 422, "invalid_parameter"),
    (
        "bomb header",
        dict(content=_png_with_size(50_000, 50_000), headers={"Content-Type": "image/png"}),
        "",
        413,
        "payload_too_large",
    ),
]


@pytest.mark.parametrize(("what", "kwargs", "query", "status", "code"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_inputs(client, what, kwargs, query, status, code):
    r = client.post("/classify" + query, **kwargs)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code and error["message"] and error["request_id"] == r.headers["X-Request-ID"]


def test_body_limit_refuses_by_header_and_while_reading(repository):
    with client_for(repository, max_body_bytes=10_000) as c:
        big = jpeg_bytes((400, 400), seed=1) + b"\x00" * 20_000
        r = c.post("/classify", content=big, headers={"Content-Type": "image/jpeg"})
        assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"

        def chunks():  # no Content-Length: the limit must trip while reading
            for _ in range(10):
                yield b"\xff" * 4000

        r = c.post("/classify", content=chunks(), headers={"Content-Type": "image/jpeg"})
        assert r.status_code == 413
        assert c.post("/classify", content=jpeg_bytes(), headers={"Content-Type": "image/jpeg"}).status_code == 200


def test_image_modes_and_exif(client):
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8))
    cases = {
        "gray": png_bytes(rgb.convert("L")),
        "palette": png_bytes(rgb.convert("P")),
        "rgba": png_bytes(rgb.convert("RGBA")),
        "16-bit": png_bytes(Image.fromarray(np.asarray(rgb.convert("L"), np.uint16) * 257)),
    }
    buf = io.BytesIO()
    rgb.convert("CMYK").save(buf, "JPEG")
    cases["cmyk"] = buf.getvalue()
    buf = io.BytesIO()
    rgb.save(buf, "GIF", save_all=True, append_images=[rgb.rotate(90)], duration=100, loop=0)
    cases["animated gif"] = buf.getvalue()
    for fmt in ("WEBP", "BMP", "TIFF"):
        buf = io.BytesIO()
        rgb.save(buf, fmt)
        cases[fmt] = buf.getvalue()
    for name, data in cases.items():
        r = client.post("/classify", content=data, headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 200, (name, r.text)
    # EXIF orientation 6 (rotate 90 CW to display) gives the same answer as the upright image.
    upright = Image.fromarray(rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)).resize((60, 100))
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what a camera writes with orientation 6
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    stored.save(buf, "PNG", exif=exif)
    with_exif = client.post("/classify?top_k=3", content=buf.getvalue(), headers={"Content-Type": "image/png"}).json()
    plain = client.post("/classify?top_k=3", content=png_bytes(upright), headers={"Content-Type": "image/png"}).json()
    rotated = client.post("/classify?top_k=3", content=png_bytes(stored), headers={"Content-Type": "image/png"}).json()
    assert [p["score"] for p in with_exif["predictions"]] == pytest.approx([p["score"] for p in plain["predictions"]], abs=1e-6)
    assert [p["score"] for p in rotated["predictions"]] != pytest.approx([p["score"] for p in plain["predictions"]], abs=1e-6)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF"])
def test_exif_orientation_in_each_format(fmt):
    from model_repository import Preprocess
    from service.imaging import decode_image

    spec = Preprocess(resize=32, crop=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    stored = Image.new("RGB", (60, 40), (200, 30, 30))  # landscape as stored; orientation 6 shows it portrait
    exif = Image.Exif()
    exif[0x0112] = 6
    with_tag, without = io.BytesIO(), io.BytesIO()
    stored.save(with_tag, fmt, exif=exif)
    stored.save(without, fmt)
    assert decode_image(with_tag.getvalue(), spec, 10**6).size == (40, 60)
    plain = decode_image(without.getvalue(), spec, 10**6)
    assert plain.size == (60, 40) and plain.mode == "RGB"


def test_batch_endpoint_one_result_per_file_in_order(client):
    files = [
        ("file", ("a.jpg", jpeg_bytes(seed=1), "image/jpeg")),
        ("file", ("b.jpg", jpeg_bytes()[:200], "image/jpeg")),
        ("file", ("c.jpg", jpeg_bytes(seed=2), "image/jpeg")),
    ]
    r = client.post("/classify/batch?top_k=2", files=files)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["filename"] for x in results] == ["a.jpg", "b.jpg", "c.jpg"]
    assert results[1]["error"]["code"] == "invalid_input" and results[1].get("result") is None
    single = client.post("/classify?top_k=2", content=jpeg_bytes(seed=2), headers={"Content-Type": "image/jpeg"}).json()
    assert results[2]["result"]["predictions"] == single["predictions"]
    assert client.post("/classify/batch?top_k=9", files=files).status_code == 422
    assert client.post("/classify/batch", content=b"x", headers={"Content-Type": "image/jpeg"}).status_code == 415


def test_models_probes_metrics_docs(client):
    models = client.get("/v1/models").json()["models"]
    assert models[0]["name"] == "toy" and models[0]["serving_version"] == 1
    version = models[0]["versions"][0]
    assert version["state"] == "ready" and version["input_size"] == 32 and version["num_classes"] == 3
    assert version["providers"][0].removesuffix("ExecutionProvider") == version["backend"].split("/")[0]
    assert version["golden_check"]["top1_agree"] and version["precision"] in ("fp32", "bf16")
    assert client.get("/v1/models/toy").json()["name"] == "toy"
    assert client.get("/v1/models/nope").status_code == 404
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json()["status"] == "ready"
    client.post("/classify", content=jpeg_bytes(), headers={"Content-Type": "image/jpeg"})
    text = client.get("/metrics").text
    for name in (
        "resnet_serve_requests_total",
        "resnet_serve_request_latency_seconds",
        "resnet_serve_queue_wait_seconds",
        "resnet_serve_batch_size",
        "resnet_serve_inference_seconds",
        "resnet_serve_queue_depth",
        "resnet_serve_model_loads_total",
        "resnet_serve_rejected_requests_total",
    ):
        assert name in text, name
    assert 'route="/classify",status="200"' in text
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    assert "/classify" in schema["paths"] and "413" in schema["paths"]["/classify"]["post"]["responses"]


def test_admin_reload_requires_token(repository, tmp_path):
    with client_for(repository, admin_token="s3cret") as c:
        assert c.post("/admin/reload").status_code == 401
        assert c.post("/admin/reload", headers={"Authorization": "Bearer wrong"}).status_code == 403
        ok = c.post("/admin/reload", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and ok.json()["results"]["toy"] == "serving version 1"


def test_failing_inference_is_a_500_with_request_id_and_the_server_keeps_serving(repository):
    with client_for(repository) as c:
        model = c.app.state.service.models.get("toy")
        real = model.batcher.runner
        calls = {"n": 0}

        def flaky(batch):
            calls["n"] += 1
            if calls["n"] == 1:
                raise RuntimeError("device lost")
            return real(batch)

        model.batcher.runner = flaky
        r = c.post("/classify", content=jpeg_bytes(), headers={"Content-Type": "image/jpeg"})
        assert r.status_code == 500 and r.json()["error"]["code"] == "inference_failed"
        assert r.json()["error"]["request_id"] == r.headers["X-Request-ID"]
        assert c.post("/classify", content=jpeg_bytes(), headers={"Content-Type": "image/jpeg"}).status_code == 200


def test_overload_503_and_deadline_504(repository):
    import concurrent.futures
    import time

    with client_for(repository, queue_size=1, max_batch_size=1) as c:
        model = c.app.state.service.models.get("toy")
        real = model.batcher.runner

        def slow(batch):
            time.sleep(0.3)
            return real(batch)

        model.batcher.runner = slow
        post = lambda: c.post("/classify", content=jpeg_bytes(), headers={"Content-Type": "image/jpeg"})  # noqa: E731
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            responses = list(pool.map(lambda _: post(), range(6)))
        statuses = sorted(r.status_code for r in responses)
        assert 200 in statuses and 503 in statuses
        refused = next(r for r in responses if r.status_code == 503)
        assert refused.headers["Retry-After"] and refused.json()["error"]["code"] == "overloaded"
        late = c.post("/classify", content=jpeg_bytes(), headers={"Content-Type": "image/jpeg", "X-Request-Timeout-Ms": "50"})
        assert late.status_code == 504 and late.json()["error"]["code"] == "deadline_exceeded"


def test_admission_limit_is_work_capacity_plus_queue(repository):
    """One service-wide limit: max_concurrent_work requests at work plus queue_size waiting; then 503 at once."""
    from service.errors import Overloaded

    with client_for(repository, max_concurrent_work=3, queue_size=2, max_batch_size=4) as c:
        state, core = c.app.state.service, c.app.state.core
        assert (state.admission.work_capacity, state.admission.max_inflight) == (3, 5)
        with core.admit(4), core.admit(1):
            with pytest.raises(Overloaded):
                core.admit(1).__enter__()
            assert state.admission.inflight == 5  # the refused request took nothing
            files = [("file", (f"{i}.jpg", jpeg_bytes(), "image/jpeg")) for i in range(2)]
            r = c.post("/classify/batch", files=files)
            assert r.status_code == 503 and r.json()["error"]["code"] == "overloaded" and r.headers["Retry-After"]
        assert state.admission.inflight == 0
        files = [("file", (f"{i}.jpg", jpeg_bytes(), "image/jpeg")) for i in range(6)]
        r = c.post("/classify/batch", files=files)  # more than it ever admits: retrying cannot help
        assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
        r = c.post("/classify/batch", files=files[:5])  # exactly the limit fits, 3 at work and 2 waiting
        assert r.status_code == 200 and len(r.json()["results"]) == 5


def test_requests_never_scan_the_repository_and_a_refresh_does(repository, tmp_path, monkeypatch):
    """The model list is read at start-up and on each refresh, not per request (it was a directory walk each)."""
    import service.model_manager as manager

    repo = tmp_path / "repo"
    copy_toy(repo)
    scans = []
    real = manager.list_model_names
    monkeypatch.setattr(manager, "list_model_names", lambda root: scans.append(root) or real(root))
    with client_for(repo) as c:
        after_start = len(scans)
        assert after_start >= 1
        for _ in range(5):
            assert c.post("/classify", content=jpeg_bytes(), headers={"Content-Type": "image/jpeg"}).status_code == 200
        assert c.get("/readyz").status_code == 200
        assert len(scans) == after_start
        copy_toy(repo, "another")
        assert c.post("/classify?model=another", content=jpeg_bytes()).status_code == 404
        assert c.post("/admin/reload").json()["results"]["another"] == "loaded version 1"
        assert len(scans) == after_start + 1
        assert c.post("/classify?model=another", content=jpeg_bytes()).status_code == 200


@pytest.mark.parametrize("upload", ["raw", "multipart"])
def test_a_request_whose_client_hangs_up_leaves_the_queue_unrun(repository, upload):
    """A client that disconnects while its request waits for a batch costs no inference: the request is
    cancelled, answered 499 (which nobody reads), counted, and its work slot freed; for raw and multipart bodies."""
    import asyncio
    import concurrent.futures
    import threading

    with client_for(repository, max_batch_size=1, max_delay_ms=0) as c:
        state = c.app.state.service
        model = state.models.get("toy")
        real, gate, batches = model.batcher.runner, threading.Event(), []

        def gated(batch):
            assert gate.wait(10)
            batches.append(len(batch))
            return real(batch)

        model.batcher.runner = gated
        body = jpeg_bytes()
        ctype, upload_body = b"image/jpeg", body
        if upload == "multipart":
            ctype = b"multipart/form-data; boundary=XyZ"
            part = b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="x.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
            upload_body = part + body + b"\r\n--XyZ--\r\n"

        async def hang_up_while_queued() -> list[dict]:
            hung_up, sent = asyncio.Event(), []
            messages = [{"type": "http.request", "body": upload_body, "more_body": False}]

            async def receive() -> dict:
                if messages:
                    return messages.pop()
                await hung_up.wait()
                return {"type": "http.disconnect"}

            async def send(message: dict) -> None:
                sent.append(message)

            scope = {
                "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
                "path": "/classify", "raw_path": b"/classify", "query_string": b"", "root_path": "",
                "headers": [(b"content-type", ctype), (b"content-length", str(len(upload_body)).encode())],
                "client": ("127.0.0.1", 5000), "server": ("testserver", 80),
            }  # fmt: skip
            leaving = asyncio.ensure_future(c.app(scope, receive, send))
            for _ in range(500):  # until it waits in the batch queue behind the gated batch
                if model.batcher.depth == 1:
                    break
                await asyncio.sleep(0.01)
            assert model.batcher.depth == 1
            assert state.metrics.registry.get_sample_value("resnet_serve_inflight_requests") == 2
            hung_up.set()
            await asyncio.wait_for(leaving, 5)
            return sent

        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            first = pool.submit(c.post, "/classify", content=body, headers={"Content-Type": "image/jpeg"})
            for _ in range(500):  # the first request holds the runner
                if model.batcher.pending == 1 and model.batcher.depth == 0:
                    break
                threading.Event().wait(0.01)
            sent = c.portal.call(hang_up_while_queued)
            gate.set()
            assert first.result(10).status_code == 200
        assert sent[0]["status"] == 499
        after = c.post("/classify", content=body, headers={"Content-Type": "image/jpeg"})
        assert after.status_code == 200
        assert batches == [1, 1]  # the first request and the one after; the abandoned one never ran
        assert state.admission.inflight == 0 and model.batcher.pending == 0
        assert "resnet_serve_inflight_requests 0.0" in c.get("/metrics").text
        assert 'resnet_serve_rejected_requests_total{reason="client_closed_request"} 1.0' in c.get("/metrics").text


def test_decoding_threads_default_to_one_per_available_cpu(repository):
    from service.cpus import available_cpus

    available = available_cpus()
    assert Settings(preprocess_workers=3).preprocess_threads == 3
    assert Settings().preprocess_threads == available
    for workers, expected in ((0, available), (3, 3)):
        with client_for(repository, preprocess_workers=workers) as c:
            assert c.app.state.service.preprocess_pool._max_workers == expected


def test_thread_counts_respect_a_container_cpu_limit(tmp_path, monkeypatch):
    import os

    import service.cpus as cpus

    cores = len(os.sched_getaffinity(0))
    cpu_max = tmp_path / "cpu.max"
    monkeypatch.setattr(cpus, "CGROUP_CPU_MAX", cpu_max)
    monkeypatch.setattr(cpus, "CGROUP_V1_CPU", tmp_path / "no-v1")
    cpu_max.write_text("max 100000\n")  # no limit: ONNX Runtime keeps its own default (0), decoding one per CPU
    assert cpus.cgroup_cpu_limit() is None
    assert Settings().inference_threads == 0 and Settings().preprocess_threads == cores
    cpu_max.write_text("50000 100000\n")  # half a CPU rounds up to one
    assert cpus.cgroup_cpu_limit() == 1
    assert Settings().inference_threads == (1 if cores > 1 else 0) and Settings().preprocess_threads == 1
    assert Settings(intra_op_threads=3, preprocess_workers=5).inference_threads == 3  # explicit settings win
    assert Settings(intra_op_threads=3, preprocess_workers=5).preprocess_threads == 5
    cpu_max.write_text(f"{(cores + 4) * 100000} 100000\n")  # a limit above the cores changes nothing
    assert Settings().inference_threads == 0 and Settings().preprocess_threads == cores
    cpu_max.unlink()
    v1 = tmp_path / "v1"
    v1.mkdir()
    (v1 / "cpu.cfs_quota_us").write_text("100000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    monkeypatch.setattr(cpus, "CGROUP_V1_CPU", v1)
    assert cpus.cgroup_cpu_limit() == 1


def test_decoding_in_worker_processes_gives_the_same_answers_and_errors(repository):
    body = jpeg_bytes()
    with client_for(repository, preprocess_workers=2) as threads:
        expected = threads.post("/classify?top_k=3", content=body, headers={"Content-Type": "image/jpeg"}).json()
    with client_for(repository, preprocess_workers=2, preprocess_processes=True, max_pixels=10_000) as c:
        pool = c.app.state.service.preprocess_pool
        assert type(pool).__name__ == "ProcessPoolExecutor" and len(pool._processes) == 2  # started before serving
        got = c.post("/classify?top_k=3", content=body, headers={"Content-Type": "image/jpeg"}).json()
        assert [p["label"] for p in got["predictions"]] == [p["label"] for p in expected["predictions"]]
        np.testing.assert_allclose([p["score"] for p in got["predictions"]], [p["score"] for p in expected["predictions"]])
        # Errors raised while decoding cross the process boundary with their status and message.
        bad = c.post("/classify", content=body[: len(body) // 2], headers={"Content-Type": "image/jpeg"})
        assert bad.status_code == 400 and "decoded" in bad.json()["error"]["message"]
        big = Image.new("RGB", (200, 100))
        too_big = c.post("/classify", content=png_bytes(big), headers={"Content-Type": "image/png"})
        assert too_big.status_code == 413 and "10000" in too_big.json()["error"]["message"]


def test_a_replaced_version_is_freed_even_in_a_reference_cycle(tmp_path):
    """Start-up freezes the objects then alive out of the garbage collector's generations (app.py); a version
    replaced by a hot reload must still be collectable, cycles included, or every reload would leak a session."""
    import asyncio
    import gc
    import weakref

    repo = tmp_path / "repo"
    copy_toy(repo)
    with client_for(repo) as c:
        assert gc.get_freeze_count() > 0
        old = c.app.state.service.models.get("toy")
        old.runner.cycle = old.runner  # freed only by the collector, never by reference counts alone
        gone = weakref.ref(old.runner)
        del old
        republish(repo, "toy", 1)
        assert c.post("/admin/reload").json()["results"]["toy"] == "loaded version 2"

        async def retired() -> None:
            await asyncio.gather(*c.app.state.service.models._tasks)

        c.portal.call(retired)
        assert gone() is None
        assert c.post("/classify", content=jpeg_bytes(), headers={"Content-Type": "image/jpeg"}).json()["version"] == 2


def test_a_lone_small_baseline_jpeg_is_decoded_on_the_event_loop_and_every_other_image_on_a_decoding_thread(
    repository, monkeypatch
):
    """At concurrency 1 the decode skips the hand-off to a thread (``idle_inline_decode_bytes``). A JPEG above that
    size, the setting at 0, a progressive JPEG or a PNG (whose cost the loop must not risk), the images of a batch
    request, and any image while another request is in flight anywhere in the service are decoded on the pool."""
    import asyncio

    import service.inference as inference

    real, on_loop = inference.image_to_input, []

    def recording(*args):
        try:
            asyncio.get_running_loop()
            on_loop.append(True)
        except RuntimeError:  # a worker thread has no running loop
            on_loop.append(False)
        return real(*args)

    monkeypatch.setattr(inference, "image_to_input", recording)
    baseline = jpeg_bytes()  # 64x48 RGB: 9,216 bytes decoded
    png = png_bytes(Image.open(io.BytesIO(baseline)))
    cases = {
        "default": ({}, baseline, "image/jpeg"),
        "off": ({"idle_inline_decode_bytes": 0}, baseline, "image/jpeg"),
        "above": ({"idle_inline_decode_bytes": 9000}, baseline, "image/jpeg"),
        "progressive": ({}, jpeg_bytes(progressive=True), "image/jpeg"),
        "png": ({}, png, "image/png"),
    }
    seen = {}
    for case, (settings, body, media_type) in cases.items():
        with client_for(repository, **settings) as c:
            on_loop.clear()
            for _ in range(2):
                assert c.post("/classify", content=body, headers={"Content-Type": media_type}).status_code == 200
            seen[case] = list(on_loop)
    with client_for(repository) as c:
        on_loop.clear()
        files = [("file", (f"{i}.jpg", jpeg_bytes(seed=i), "image/jpeg")) for i in range(3)]
        assert c.post("/classify/batch", files=files).status_code == 200
        seen["batch"] = list(on_loop)
        on_loop.clear()
        with c.app.state.core.admit():  # another request in flight, for any model: the event loop is shared
            assert c.post("/classify", content=baseline, headers={"Content-Type": "image/jpeg"}).status_code == 200
        seen["another in flight"] = list(on_loop)
    # True then False: the header refused the loop (LargeDecode, nothing decoded), then the pool decoded it
    refused = [True, False, True, False]
    assert seen == {
        "default": [True, True],
        "off": [False, False],
        "above": refused,
        "progressive": refused,
        "png": refused,
        "batch": [False, False, False],  # three units admitted at once: not alone
        "another in flight": [False],
    }
