"""A real uvicorn process on a free loopback port: concurrency, SIGTERM drain, hot reload under load,
and the refresh flow (train -> export -> served) end to end."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from tests.conftest import ROOT, Server, copy_toy, export_random_model, jpeg_bytes, make_image_folder, train_argv

pytestmark = pytest.mark.slow  # the tests that train or export (torch) are also marked full


@pytest.fixture
def server_factory():
    servers = []

    def start(repository, *flags):
        servers.append(Server(repository, *flags))
        return servers[-1]

    yield start
    for s in servers:
        s.stop()


def classify(client: httpx.Client, url: str, data: bytes) -> httpx.Response:
    return client.post(url + "/classify", content=data, headers={"Content-Type": "image/jpeg"})


def test_concurrent_clients_are_batched(tmp_path, server_factory):
    repo = tmp_path / "repo"
    copy_toy(repo)
    server = server_factory(repo, "--max-delay-ms", "20", "--max-batch-size", "16", "--poll-interval-s", "0")
    images = [jpeg_bytes(seed=i) for i in range(8)]
    results = []

    def worker(i):
        with httpx.Client(timeout=30) as c:
            for j in range(4):
                results.append(classify(c, server.url, images[(i + j) % 8]))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 64 and all(r.status_code == 200 for r in results)
    metrics = httpx.get(server.url + "/metrics").text
    count = next(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("resnet_serve_batch_size_count"))
    total = next(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("resnet_serve_batch_size_sum"))
    assert total == 64  # every request went through the batcher exactly once
    assert count < 64  # requests shared inference calls


@pytest.mark.full
def test_sigterm_drains_in_flight_requests_and_exits_zero(tmp_path, server_factory):
    repo = tmp_path / "repo"
    export_random_model(repo, "r18", "resnet18", labels=[f"c{i}" for i in range(10)], resize=256, crop=224)
    server = server_factory(
        repo, "--max-batch-size", "2", "--max-delay-ms", "0", "--drain-timeout-s", "30", "--poll-interval-s", "0"
    )
    data = jpeg_bytes((400, 300))
    responses, errors = [], []
    signalled = None

    def worker():
        # Each worker sends again as soon as it has an answer, so requests are always queued on the server
        # (24 clients, batches of 2) whatever this machine's speed; it stops once the server refuses it.
        try:
            with httpx.Client(timeout=60) as c:
                while signalled is None or time.perf_counter() - signalled < 60:
                    r = classify(c, server.url, data)
                    responses.append((r, time.perf_counter()))
                    if r.status_code != 200:
                        return
        except httpx.TransportError as exc:  # connection refused or closed after the listener closed
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(24)]
    for t in threads:
        t.start()
    deadline = time.perf_counter() + 60
    while len(responses) < 24 and time.perf_counter() < deadline:  # under load: every client has been served
        time.sleep(0.01)
    server.proc.send_signal(signal.SIGTERM)
    signalled = time.perf_counter()
    ready_during_drain = None
    with contextlib.suppress(httpx.TransportError):
        ready_during_drain = httpx.get(server.url + "/readyz", timeout=5).status_code
    for t in threads:
        t.join()
    assert server.proc.wait(timeout=60) == 0, server.output()
    statuses = [r.status_code for r, _ in responses]
    # Requests in flight at SIGTERM finished during the drain.
    assert any(r.status_code == 200 and done > signalled for r, done in responses), statuses
    assert set(statuses) <= {200, 503}, statuses  # accepted requests finished; none failed mid-way
    assert statuses.count(503) + len(errors) == 24  # every client was refused in the end: no new work accepted
    assert "drained" in server.output()
    if ready_during_drain is not None:
        assert ready_during_drain == 503


@pytest.mark.full
def test_refresh_flow_hot_reload_under_load(tmp_path, server_factory):
    """Train a tiny model, export it into the repository a running server serves, and the server picks up
    the new version while under load, with no failed request. A broken later version is refused."""
    repo = tmp_path / "repo"
    export_random_model(repo, "toy", "resnet20")  # version 1: what is served at first
    data_dir = make_image_folder(tmp_path / "data", {"train": 16, "test": 4})
    run_dir = tmp_path / "run"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "training" / "train.py"),
            *train_argv(data_dir, run_dir, "--epochs", "1", "--cache-dir", str(tmp_path / "c")),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    server = server_factory(repo, "--poll-interval-s", "0.2", "--max-delay-ms", "2")
    stop = threading.Event()
    statuses, versions = [], []

    def load():
        with httpx.Client(timeout=30) as c:
            while not stop.is_set():
                r = classify(c, server.url, jpeg_bytes(seed=len(statuses) % 5))
                statuses.append(r.status_code)
                if r.status_code == 200:
                    versions.append(r.json()["version"])

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "export",
                "--checkpoint",
                str(run_dir / "last.pt"),
                "--name",
                "toy",
                "--repository",
                str(repo),
            ],
            check=True,
            capture_output=True,
            timeout=300,
        )
        deadline = time.time() + 30
        while time.time() < deadline and (not versions or versions[-1] != 2):
            time.sleep(0.1)
        time.sleep(0.5)  # more traffic on the new version
        # A broken version 3: its model file does not match the manifest's sha256.
        v3 = repo / "toy" / "3"
        staging = repo / ".v3"
        staging.mkdir()
        for f in (repo / "toy" / "2").iterdir():
            (staging / f.name).write_bytes(f.read_bytes())
        manifest = json.loads((staging / "model.json").read_text())
        manifest["version"] = 3
        (staging / "model.json").write_text(json.dumps(manifest))
        with open(staging / "model.onnx", "ab") as fh:
            fh.write(b"corrupt")
        staging.rename(v3)
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert statuses and set(statuses) == {200}, f"failed requests during reload: {[s for s in statuses if s != 200]}"
    assert versions[0] == 1 and versions[-1] == 2 and versions.count(2) > 0
    model = httpx.get(server.url + "/v1/models/toy").json()
    assert model["serving_version"] == 2
    states = {v["version"]: v["state"] for v in model["versions"]}
    assert states == {1: "available", 2: "ready", 3: "failed"}
    assert "sha256" in next(v["reason"] for v in model["versions"] if v["version"] == 3)
    metrics = httpx.get(server.url + "/metrics").text
    assert 'resnet_serve_reload_failures_total{model="toy"} 1.0' in metrics
    assert "refused toy version 3" in server.output()
