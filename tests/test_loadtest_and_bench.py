"""Smoke runs of the user-facing load test (locust) and of the benchmark code, against real processes."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT, Server, copy_toy

pytestmark = [pytest.mark.slow, pytest.mark.full]  # locust and the bench scripts: the load and export extras
LOCUST = [sys.executable, "-m", "locust", "-f", str(ROOT / "loadtest" / "locustfile.py"), "--headless", "--only-summary"]


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    repo = tmp_path_factory.mktemp("bench") / "repo"
    copy_toy(repo)
    return repo


@pytest.fixture(scope="module")
def server(repository):
    s = Server(repository, "--poll-interval-s", "0")
    yield s
    s.stop()


def test_locust_headless_passes_and_writes_reports(server, tmp_path):
    proc = subprocess.run(
        [*LOCUST, "--host", server.url, "-u", "8", "-r", "8", "-t", "10s", "--csv", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "load test passed" in proc.stderr
    with open(tmp_path / "run_stats.csv") as fh:
        rows = {r["Name"]: r for r in csv.DictReader(fh)}
    for name in ("/classify raw", "/classify multipart", "/v2 infer binary", "/v2 infer json"):  # both kinds of user
        assert int(rows[name]["Request Count"]) > 0, name
    assert int(rows["Aggregated"]["Failure Count"]) == 0


def test_locust_fails_the_run_when_a_bound_is_missed(server, tmp_path):
    proc = subprocess.run(
        [*LOCUST, "--host", server.url, "-u", "2", "-r", "2", "-t", "3s", "--max-p99-ms", "0.001"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode == 1 and "p99" in proc.stderr


def test_inprocess_bench_smoke(repository, tmp_path):
    out = tmp_path / "inprocess.json"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "inprocess.py"),
            "--models",
            "toy",
            "--repository",
            str(repository),
            "--photos",
            str(ROOT / "tests" / "fixtures" / "cifar10"),
            "--batches",
            "1",
            "4",
            "--seconds",
            "0.2",
            "--backends",
            "CPU/fp32",
            "--json",
            str(out),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    (row,) = json.loads(out.read_text())
    assert row["backend"] == "CPU/fp32" and set(row["batch"]) == {"1", "4"}
    assert row["loop_img_s"] > 0 and row["preprocess_img_s"] > 0 and row["serial_img_s"] > 0


def test_preprocess_cost_bench_smoke(tmp_path):
    out = tmp_path / "preprocess.json"
    photos = ROOT / "tests" / "fixtures" / "cifar10"
    script = [sys.executable, str(ROOT / "bench" / "preprocess_cost.py"), "--photos", str(photos), "--rounds", "1"]
    subprocess.run([*script, "--resize", "36", "--crop", "32", "--json", str(out)], check=True, capture_output=True, timeout=60)
    row = json.loads(out.read_text())
    assert row["photos"] == len(list(photos.iterdir())) and (row["resize"], row["crop"]) == (36, 32)
    assert 0 < row["normalize_ms"] < row["image_to_input_ms"] and row["decode_ms"] > 0


def test_event_loop_cost_bench_smoke(repository, tmp_path):
    out = tmp_path / "event-loop.json"
    photos = ROOT / "tests" / "fixtures" / "cifar10"
    script = [sys.executable, str(ROOT / "bench" / "event_loop_cost.py"), "--model", "toy", "--repository", str(repository)]
    args = ["--photos", str(photos), "--requests", "24", "--concurrency", "4", "--rounds", "1", "--json", str(out)]
    subprocess.run([*script, *args, "--against", str(ROOT)], check=True, capture_output=True, timeout=120)
    result = json.loads(out.read_text())
    assert set(result["median_ms"]) == {"this tree", f"against {ROOT}"}
    assert all(ms > 0 for ms in result["median_ms"].values())


@pytest.mark.skipif(
    shutil.which("wrk") is None, reason="the HTTP benchmark drives wrk (apt-get install wrk; make test installs it)"
)
def test_http_bench_smoke(repository, tmp_path):
    out = tmp_path / "http.json"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "http_load.py"),
            "--model",
            "toy",
            "--repository",
            str(repository),
            "--photos",
            str(ROOT / "tests" / "fixtures" / "cifar10"),
            "--concurrency",
            "1",
            "4",
            "--seconds",
            "1",
            "--limits-seconds",
            "0.2",
            "--routes",
            "classify",
            "v2",
            "--json",
            str(out),
        ],
        check=True,
        capture_output=True,
        timeout=240,
    )
    result = json.loads(out.read_text())
    servers = {r["server"].split()[0] for r in result["rows"]}
    assert servers == {"service", "naive"} and all(r["errors"] == 0 and r["req_s"] > 0 for r in result["rows"])
    service_rows = [r for r in result["rows"] if r["server"].startswith("service")]
    assert all(r["pct_of_loop"] > 0 and r["inprocess"]["loop_img_s"] > 0 for r in service_rows)
    # CPU time comes in 10 ms clock ticks: a short window can show no tick on the event loop, never more than in all
    for r in service_rows:
        assert 0 <= r["event_loop_cpu_ms_per_req"] <= r["service_cpu_ms_per_req"] and r["service_cpu_ms_per_req"] > 0
    assert all(0 < r["machine_busy_pct"] <= 100 for r in service_rows)
    assert [(r["route"], r["concurrency"], "pct_of_serial" in r) for r in service_rows] == [
        ("classify", 1, True),
        ("v2", 1, True),
        ("classify", 4, False),
        ("v2", 4, False),
    ]


@pytest.mark.skipif(shutil.which("wrk") is None, reason="the latency benchmark drives wrk (make test installs it)")
def test_latency_bench_smoke(repository, tmp_path):
    out = tmp_path / "latency.json"
    script = [sys.executable, str(ROOT / "bench" / "latency.py"), "--models", "toy", "--repository", str(repository)]
    args = ["--photos", str(ROOT / "tests" / "fixtures" / "cifar10"), "--rounds", "2", "--seconds", "1", "--json", str(out)]
    subprocess.run([*script, *args], check=True, capture_output=True, timeout=180)
    (result,) = json.loads(out.read_text())["results"]
    assert result["model"] == "toy" and len(result["rounds"]) == 2
    assert all(r["c1_p50_ms"] > 0 and r["serial_ms"] > 0 for r in result["rounds"])
    overheads = sorted(r["c1_p50_ms"] - r["serial_ms"] for r in result["rounds"])
    assert result["median_overhead_ms"] == pytest.approx(sum(overheads) / 2) and result["max_overhead_ms"] == overheads[-1]


@pytest.mark.skipif(shutil.which("wrk") is None, reason="the servers benchmark drives wrk (make test installs it)")
def test_asgi_servers_bench_smoke(repository, tmp_path):
    """The app answers under each of the three servers (granian from the bench extra), every row error-free."""
    out = tmp_path / "servers.json"
    script = [sys.executable, str(ROOT / "bench" / "asgi_servers.py"), "--model", "toy", "--repository", str(repository)]
    args = ["--photos", str(ROOT / "tests" / "fixtures" / "cifar10"), "--concurrency", "2", "--rounds", "1", "--seconds", "1"]
    subprocess.run([*script, *args, "--json", str(out)], check=True, capture_output=True, timeout=240)
    rows = json.loads(out.read_text())["rows"]
    assert {r["server"] for r in rows} == {"uvicorn-httptools", "uvicorn-h11", "granian"}
    assert all(r["errors"] == 0 and r["steady_req_s"] > 0 and r["service_cpu_ms_per_req"] > 0 for r in rows)
