"""What an outside probe of the running service found, each fixed and held here: slow and silent connections,
hang-ups mid-upload, MPO photos, an early 413 under clients that write before they read, the drain deadline,
versions caught mid-copy, decode memory, and the small things (HEAD probes, relative paths, batch entries)."""

from __future__ import annotations

import concurrent.futures
import io
import json
import shutil
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import Server, jpeg_bytes
from tests.conftest import client_for as shared_client_for

pytestmark = pytest.mark.slow


def client_for(repository, **settings):
    return shared_client_for(repository, **{"max_delay_ms": 0, **settings})  # batches go at once here


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def gradient(width: int, height: int, mode: str = "RGB") -> Image.Image:
    """A smooth image: it compresses to a small file but decodes to width x height pixels."""
    row = np.linspace(0, 255, width, dtype=np.float32)
    plane = np.broadcast_to(row, (height, width))
    if mode == "I":
        return Image.fromarray((plane * 1000).astype(np.int32), "I")
    return Image.fromarray(np.repeat(plane[:, :, None], 3, axis=2).astype(np.uint8), "RGB")


def headers_only(port: int, length: int, body: bytes = b"") -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port))
    head = f"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: {length}\r\n\r\n"
    s.sendall(head.encode() + body)
    return s


def read_status(s: socket.socket, timeout_s: float) -> bytes:
    s.settimeout(timeout_s)
    try:
        return s.recv(4096)
    except (TimeoutError, ConnectionResetError):
        return b""


def test_slow_bodies_hold_no_work_slot_and_time_out_and_silent_connections_close(toy_repository):
    server = Server(toy_repository, "--body-read-timeout-s", "3", "--idle-timeout-s", "1", "--queue-size", "8")
    try:
        slow = [headers_only(server.port, 100_000, b"\xff\xd8") for _ in range(300)]  # a trickle, then nothing
        silent = socket.create_connection(("127.0.0.1", server.port))  # never sends a request
        time.sleep(0.5)
        started = time.perf_counter()
        r = httpx.post(server.url + "/classify", content=jpeg_bytes(), headers={"Content-Type": "image/jpeg"}, timeout=5)
        assert r.status_code == 200 and time.perf_counter() - started < 1.0, r.text
        assert read_status(silent, 3) == b""  # closed by the server after idle_timeout_s
        answers = [read_status(s, 5) for s in slow[:5]]
        assert all(a.startswith(b"HTTP/1.1 408") for a in answers), answers
        for s in (*slow, silent):
            s.close()
    finally:
        server.stop()


def test_a_hang_up_mid_upload_is_499_without_an_error_log(toy_repository):
    server = Server(toy_repository)
    try:
        headers_only(server.port, 1000, b"\xff\xd8").close()
        for _ in range(50):
            metrics = httpx.get(server.url + "/metrics").text
            if 'status="499"' in metrics:
                break
            time.sleep(0.1)
        assert 'resnet_serve_requests_total{route="/classify",status="499"} 1.0' in metrics
        assert 'resnet_serve_rejected_requests_total{reason="client_closed_request"} 1.0' in metrics
        assert "ERROR" not in server.output() and "Traceback" not in server.output()
    finally:
        server.stop()


def test_an_early_413_reaches_a_client_that_writes_its_whole_body_first(toy_repository):
    server = Server(toy_repository)
    try:
        request = urllib.request.Request(
            server.url + "/classify", data=b"\xff" * (64 * 1024 * 1024), headers={"Content-Type": "image/jpeg"}
        )
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=30)
        assert info.value.code == 413 and json.loads(info.value.read())["error"]["code"] == "payload_too_large"
    finally:
        server.stop()


def test_the_drain_deadline_answers_json_503s(toy_repository):
    """With 32 large images in flight and a 1 s drain, the requests uvicorn cancels at the deadline get the JSON
    503 with Retry-After a draining server gives (they were plain-text 500s)."""
    server = Server(toy_repository, "--drain-timeout-s", "1", "--max-batch-size", "1")
    big = png(gradient(6000, 5000))  # 90 MB decoded: large, decoded one at a time (~0.2 s each here)
    results: list[httpx.Response | Exception] = []

    def post() -> None:
        try:
            results.append(httpx.post(server.url + "/classify", content=big, headers={"Content-Type": "image/png"}, timeout=30))
        except httpx.HTTPError as exc:  # the connection closed by the exiting server
            results.append(exc)

    try:
        threads = [threading.Thread(target=post) for _ in range(32)]
        for t in threads:
            t.start()
        for _ in range(200):
            if "resnet_serve_inflight_requests 32.0" in httpx.get(server.url + "/metrics").text:
                break
            time.sleep(0.05)
        server.proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(60)
        assert server.proc.wait(30) == 0
    finally:
        server.stop()
    answers = [r for r in results if isinstance(r, httpx.Response)]
    statuses = sorted(r.status_code for r in answers)
    assert 503 in statuses and set(statuses) <= {200, 503}, (statuses, [r.text[:80] for r in answers if r.status_code != 200])
    for r in answers:
        assert r.headers["content-type"] == "application/json", r.text
        if r.status_code == 503:
            assert r.headers["Retry-After"] and r.json()["error"]["code"] == "not_ready"


def test_a_version_caught_mid_copy_is_tried_again_once_complete(toy_repository, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(toy_repository / "toy", repo / "toy")
    with client_for(repo) as c:
        complete = repo / "toy" / "1"
        copying = repo / "toy" / "2"
        copying.mkdir()
        manifest = json.loads((complete / "model.json").read_text())
        (copying / "model.json").write_text(json.dumps({**manifest, "version": 2}))
        whole = (complete / "model.onnx").read_bytes()
        (copying / "model.onnx").write_bytes(whole[: len(whole) // 2])  # model.onnx still being written
        for golden in complete.glob("*.npz"):
            shutil.copy(golden, copying / golden.name)
        first = c.post("/admin/reload").json()["results"]["toy"]
        assert first.startswith("refused version 2") and str(repo) not in first
        assert c.post("/admin/reload").json()["results"]["toy"].startswith("version 2 refused earlier")
        reason = next(v for v in c.get("/v1/models/toy").json()["versions"] if v["version"] == 2)["reason"]
        assert reason.startswith("toy/2/model.onnx: sha256") and str(repo) not in reason  # relative to the repository
        (copying / "model.onnx").write_bytes(whole)  # the copy completes
        assert c.post("/admin/reload").json()["results"]["toy"] == "loaded version 2"


def test_decode_memory_is_bounded_while_small_requests_are_served(toy_repository):
    """8 concurrent worst cases: 40-megapixel 32-bit images are refused from their header (413, 160 MB decoded is
    over max_decoded_bytes), 40-megapixel RGB ones (120 MB each) decode one at a time on their own thread; small
    images are answered meanwhile, and the server's peak memory grows by less than 600 MB."""
    server = Server(toy_repository)
    status = Path(f"/proc/{server.proc.pid}/status")

    def peak_mb() -> float:
        line = next(x for x in status.read_text().splitlines() if x.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024

    try:
        wide = io.BytesIO()
        gradient(8000, 5000, "I").save(wide, "TIFF", compression="tiff_deflate")
        rgb = png(gradient(8000, 5000))
        before = peak_mb()
        small_times: list[float] = []

        def post(body: bytes, ctype: str) -> int:
            return httpx.post(server.url + "/classify", content=body, headers={"Content-Type": ctype}, timeout=120).status_code

        def small() -> None:
            for _ in range(5):
                started = time.perf_counter()
                assert post(jpeg_bytes(), "image/jpeg") == 200
                small_times.append(time.perf_counter() - started)

        with concurrent.futures.ThreadPoolExecutor(20) as pool:
            tiffs = [pool.submit(post, wide.getvalue(), "image/tiff") for _ in range(8)]
            pngs = [pool.submit(post, rgb, "image/png") for _ in range(8)]
            time.sleep(0.5)
            small_runs = [pool.submit(small) for _ in range(2)]
            assert [f.result() for f in tiffs] == [413] * 8
            assert [f.result() for f in pngs] == [200] * 8
            for f in small_runs:
                f.result()
        growth = peak_mb() - before
        fastest, slowest = min(small_times), max(small_times)
        print(f"peak RSS {before:.0f} -> {before + growth:.0f} MB; small requests {fastest:.2f}-{slowest:.2f} s")
        assert growth < 600, f"peak RSS grew by {growth:.0f} MB"
        assert max(small_times) < 2.0, small_times  # not queued behind the large decodes
    finally:
        server.stop()


def test_mpo_decodes_as_its_first_picture(toy_repository):
    first = Image.open(io.BytesIO(jpeg_bytes((64, 48), seed=3))).convert("RGB")
    mpo, jpeg = io.BytesIO(), io.BytesIO()
    first.save(mpo, "MPO", save_all=True, append_images=[first.rotate(90)])
    assert Image.open(io.BytesIO(mpo.getvalue())).format == "MPO"
    first.save(jpeg, "JPEG")
    with client_for(toy_repository) as c:
        got = c.post("/classify?top_k=3", content=mpo.getvalue(), headers={"Content-Type": "image/jpeg"})
        assert got.status_code == 200, got.text
        expected = c.post("/classify?top_k=3", content=jpeg.getvalue(), headers={"Content-Type": "image/jpeg"}).json()
        assert got.json()["predictions"] == expected["predictions"]  # the same encoder wrote both: the same pixels


def test_head_probes_batch_entries_and_deadline_words(toy_repository):
    with client_for(toy_repository) as c:
        for probe in ("/healthz", "/readyz"):
            r = c.head(probe)
            assert r.status_code == 200 and r.content == b"", probe
        files = [("file", ("a.jpg", jpeg_bytes(), "image/jpeg")), ("file", ("b.jpg", b"broken", "image/jpeg"))]
        r = c.post("/classify/batch", files=files, headers={"X-Request-ID": "batch-1"})
        ok, bad = r.json()["results"]
        assert set(ok) == {"filename", "result"} and set(bad) == {"filename", "error"}
        assert bad["error"]["request_id"] == "batch-1"
        late = c.post("/classify", content=jpeg_bytes(), headers={"Content-Type": "image/jpeg", "X-Request-Timeout-Ms": "0.001"})
        assert late.status_code == 504 and "within 0.001 ms" in late.json()["error"]["message"], late.text
