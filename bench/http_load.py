"""The service over real HTTP (wrk, raw JPEG bodies rotating over the photos) at several concurrencies, beside
the naive baseline (bench/naive_server.py) on the same images and machine.

    python bench/http_load.py --model resnet50 --concurrency 1 8 32 128 --seconds 15 --json bench/results/http-resnet50.json
    python bench/http_load.py --model cifar10-resnet56 --routes classify v2 --concurrency 32 --no-naive   # side by side

``--routes``: raw-body ``/classify``, and/or the Open Inference Protocol's ``/v2/models/NAME/infer`` with each photo
as one binary BYTES element and the top 5 as classification strings (bench/wrk_photos.lua); with both, the two
alternate at each concurrency on the same server.

Reports req/s, p50/p95/p99, errors, mean batch size (from /metrics) and the load generator's CPU share; with
``--limits-seconds``, each service row also as a share of the in-process limits measured right after it.
Options add the 12-megapixel upload comparison and the RSS drift over many requests.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from common import BENCH_MODELS, DEFAULT_PHOTOS, ROOT, ensure_bench_models, jpeg_photos, latest_version
from PIL import Image
from procs import free_port, wait_for_http

PY = sys.executable
WRK_SCRIPT = ROOT / "bench" / "wrk_photos.lua"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Process:
    def __init__(self, argv: list[str], url: str, ready_path: str) -> None:
        self.url = url
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as the server) its output, shown if it fails to start
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))  # keeps a caller's extra packages
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": path}
        )
        failure = wait_for_http(self.proc, url + ready_path, 180, ready_statuses=(200, 405))
        if failure:
            self.stop()
            self.log.seek(0)
            tail = self.log.read().decode(errors="replace")[-3000:]
            raise SystemExit(f"server {failure}: {argv}\n{tail}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def metric_sums(url: str, *prefixes: str) -> list[float]:
    """For each prefix, the sum of the service's /metrics samples whose line starts with it (0 when none does)."""
    lines = httpx.get(url + "/metrics", timeout=5).text.splitlines()
    return [sum(float(line.split()[-1]) for line in lines if line.startswith(prefix)) for prefix in prefixes]


def batch_totals(url: str) -> tuple[float, float]:
    """(sum, count) of the batch-size histogram, over all models."""
    total, count = metric_sums(url, "resnet_serve_batch_size_sum", "resnet_serve_batch_size_count")
    return total, count


def classified(url: str, route: str = "classify") -> float:
    """Requests answered 200 on ``route`` so far (the service's own counter)."""
    (answered,) = metric_sums(url, f'resnet_serve_requests_total{{route="{ROUTE_PATHS[route]}",status="200"}}')
    return answered


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(the whole process's, its main thread's) CPU seconds so far. The service's main thread runs the event loop:
    HTTP parsing, the middlewares, JSON; decoding and inference run on other threads."""

    def used(stat: str) -> float:
        fields = Path(stat).read_text().rsplit(")", 1)[1].split()  # from field 3 (state) on: utime is 14, stime 15
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    return used(f"/proc/{pid}/stat"), used(f"/proc/{pid}/task/{pid}/stat")


def machine_ticks() -> list[int]:
    """The first line of /proc/stat: user, nice, system, idle, iowait, irq, softirq, steal, ... in clock ticks."""
    return [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]


def settle(url: str, is_service: bool, warmup_p99_ms: float, limit_s: float = 60.0) -> None:
    """Let the requests the warm-up abandoned (wrk closes its connections mid-request) finish before the timed
    run, so they do not sit ahead of its first requests: until the service reports none in flight, or, for the
    naive server (no such metric), for the warm-up's p99."""
    if not is_service:
        time.sleep(min(limit_s, warmup_p99_ms / 1000 + 0.5))
        return
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and metric_sums(url, "resnet_serve_inflight_requests ")[0] > 0:
        time.sleep(0.05)


# route -> its path template: the path for the model NAME, and the route label of the service's request counter
ROUTE_PATHS = {"classify": "/classify", "v2": "/v2/models/{name}/infer"}


def run_wrk(
    url: str,
    photo_list: Path,
    concurrency: int,
    seconds: float,
    steady_pid: int | None = None,
    route: str = "classify",
    v2_target: tuple[str, int] = ("", 5),
) -> dict:
    """One wrk run. wrk's req/s counts only completed requests over the whole run, which under-reports by about
    p50 / duration at high concurrency (the pipeline fills at the start, in-flight requests are cut at the end);
    with ``steady_pid`` (the service's process), the service's counter is also sampled over the middle half of the
    run, with that process's CPU time (all of it, and its event loop's) and the machine's busy and kernel shares.
    ``v2_target``: the model name the v2 route addresses and how many classes it asks for."""
    threads = max(1, min(2, concurrency))
    duration = max(1, round(seconds))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter()
    proc = subprocess.Popen(
        [
            "wrk",
            f"-t{threads}",
            f"-c{concurrency}",
            f"-d{duration}s",
            "--timeout",
            "30s",
            "-s",
            str(WRK_SCRIPT),
            url + ROUTE_PATHS[route].format(name=v2_target[0]),
            "--",
            str(photo_list),
            route,
            str(v2_target[1]),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    steady: dict = {}
    if steady_pid:
        time.sleep(duration / 4)
        c1, t1, cpu1, m1 = classified(url, route), time.perf_counter(), cpu_seconds(steady_pid), machine_ticks()
        time.sleep(duration / 2)
        c2, t2, cpu2, m2 = classified(url, route), time.perf_counter(), cpu_seconds(steady_pid), machine_ticks()
        answered = max(c2 - c1, 1)
        ticks = [b - a for a, b in zip(m1, m2, strict=True)]
        steady = {
            "steady_req_s": (c2 - c1) / (t2 - t1),
            "service_cpu_ms_per_req": 1000 * (cpu2[0] - cpu1[0]) / answered,
            "event_loop_cpu_ms_per_req": 1000 * (cpu2[1] - cpu1[1]) / answered,
            "machine_busy_pct": 100 * (1 - (ticks[3] + ticks[4]) / max(sum(ticks), 1)),
            "machine_kernel_pct": 100 * (ticks[2] + ticks[5] + ticks[6]) / max(sum(ticks), 1),
        }
    out, _ = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"wrk failed ({proc.returncode})")
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    stats = json.loads(out.strip().splitlines()[-1])
    stats["req_s"] = stats["requests"] / stats["seconds"]
    stats.update(steady)
    stats["loadgen_cpu_share_pct"] = 100 * cpu / (wall * (os.cpu_count() or 1))
    return stats


def inprocess_limits(model_args: list[str], backend: str, seconds: float) -> dict:
    """The in-process limits of ``backend`` measured now, by bench/inprocess.py in its own process (the service
    idles meanwhile): the plain loop's img/s at its best batch of 16 and 64, and the serial loop's (one image
    at a time, batch 1: all a client that waits for each answer can get)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "limits.json"
        steps = ["--backends", backend, "--batches", "16", "64", "--seconds", str(seconds), "--json", str(out)]
        subprocess.run([PY, str(ROOT / "bench" / "inprocess.py"), *model_args, *steps], check=True, capture_output=True)
        (row,) = json.loads(out.read_text())  # inprocess.py measures only the backend named
    return {"loop_img_s": row["loop_img_s"], "loop_batch": row["best_batch"], "serial_img_s": row["serial_img_s"]}


def compare_with_limits(stats: dict, limits: dict) -> str:
    """Adds the limits and the service's steady req/s as a share of the loop (and, at concurrency 1, of the
    serial loop) to ``stats``; returns them as words."""
    stats["inprocess"] = limits
    stats["pct_of_loop"] = 100 * stats["steady_req_s"] / limits["loop_img_s"]
    words = f"  {stats['pct_of_loop']:.0f}% of loop {limits['loop_img_s']:.1f}"
    if stats["concurrency"] == 1:
        stats["pct_of_serial"] = 100 * stats["steady_req_s"] / limits["serial_img_s"]
        words += f", {stats['pct_of_serial']:.0f}% of serial {limits['serial_img_s']:.1f}"
    return words


def measure(
    name: str,
    server: Process,
    photo_list: Path,
    concurrencies,
    seconds: float,
    is_service: bool,
    limits: Callable[[], dict] | None = None,
    routes: tuple[str, ...] = ("classify",),
    v2_target: tuple[str, int] = ("", 5),
) -> list[dict]:
    """One row per concurrency and route. ``limits``: measures the in-process limits right after each row, so each
    ratio compares runs a few seconds apart on this noisy machine."""
    rows = []
    for c, route in ((c, r) for c in concurrencies for r in routes):
        # A warm-up at this concurrency first.
        warm = run_wrk(server.url, photo_list, c, min(2.0, seconds), route=route, v2_target=v2_target)
        settle(server.url, is_service, warm["p99_ms"])
        before = batch_totals(server.url) if is_service else None
        stats = run_wrk(server.url, photo_list, c, seconds, server.proc.pid if is_service else None, route, v2_target)
        if is_service:
            after = batch_totals(server.url)
            stats["mean_batch"] = (after[0] - before[0]) / max(after[1] - before[1], 1)
        label = f"{name} {route}" if len(routes) > 1 or route != "classify" else name
        stats.update(server=label, route=route, concurrency=c, rss_mb=rss_mb(server.proc.pid))
        rows.append(stats)
        steady = f" (steady {stats['steady_req_s']:.1f})" if "steady_req_s" in stats else ""
        if "service_cpu_ms_per_req" in stats:
            steady += (
                f"  CPU/req {stats['service_cpu_ms_per_req']:.2f} ms (event loop {stats['event_loop_cpu_ms_per_req']:.2f}), "
                f"machine {stats['machine_busy_pct']:.0f}% busy, {stats['machine_kernel_pct']:.0f}% kernel"
            )
        against = compare_with_limits(stats, limits()) if limits else ""
        print(
            f"{label:<26} c={c:<4} {stats['req_s']:7.1f} req/s{steady}  p50 {stats['p50_ms']:7.1f}  p95 {stats['p95_ms']:7.1f}  "
            f"p99 {stats['p99_ms']:7.1f} ms  errors {stats['errors']}  batch {stats.get('mean_batch', 1):.1f}  "
            f"wrk CPU {stats['loadgen_cpu_share_pct']:.0f}%  RSS {stats['rss_mb']:.0f} MB{against}",
            flush=True,
        )
    return rows


def write_list(paths: list[Path], directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    listing = directory / "photos.txt"
    listing.write_text("\n".join(str(p) for p in paths) + "\n")
    return listing


def make_big_photos(photos: list[Path], directory: Path, megapixels: float = 12.0, count: int = 10) -> list[Path]:
    out = []
    for p in photos[:count]:
        with Image.open(p) as img:
            img = img.convert("RGB")
            scale = (megapixels * 1e6 / (img.width * img.height)) ** 0.5
            big = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.BICUBIC)
        target = directory / f"big-{p.stem}.jpg"
        buf = io.BytesIO()
        big.save(buf, "JPEG", quality=90)
        target.write_bytes(buf.getvalue())
        out.append(target)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet50", help="resnet50/resnet18 (random weights) or a model in --repository")
    p.add_argument("--repository", type=Path, default=ROOT / "models")
    p.add_argument("--bench-repository", type=Path, default=ROOT / "bench" / ".models")
    p.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 128])
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--no-naive", action="store_true", help="skip the naive baseline")
    p.add_argument("--routes", nargs="+", choices=sorted(ROUTE_PATHS), default=["classify"], help="the service's routes to load")
    p.add_argument("--big-photos", action="store_true", help="also compare 12-megapixel uploads at concurrency 8")
    p.add_argument("--memory-requests", type=int, default=0, help="also measure RSS after 1,000 and after this many requests")
    p.add_argument("--service-args", default="", help="extra flags for python -m service")
    p.add_argument(
        "--limits-seconds",
        type=float,
        default=0,
        help="after each service row, measure the in-process limits of the service's backend for this long per step "
        "(bench/inprocess.py) and report the row as a share of them (0: do not)",
    )
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed (apt-get install wrk)")
    if args.model in BENCH_MODELS:
        version_dir = ensure_bench_models(args.bench_repository, [args.model], args.photos)[args.model]
    else:
        version_dir = latest_version(args.repository, args.model)
    repo, name = version_dir.parent.parent, version_dir.parent.name
    photos = jpeg_photos(args.photos)
    results: dict = {"model": name, "rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        listing = write_list(photos, Path(tmp))
        port = free_port()
        service = Process(
            [
                PY,
                "-m",
                "service",
                "--model-repository",
                str(repo),
                "--models",
                name,
                "--port",
                str(port),
                "--host",
                "127.0.0.1",
                "--poll-interval-s",
                "0",
                "--log-level",
                "warning",
                *args.service_args.split(),
            ],
            f"http://127.0.0.1:{port}",
            "/readyz",
        )
        try:
            backend = httpx.get(service.url + f"/v1/models/{name}").json()["versions"][-1]["backend"]
            results["backend"] = backend
            top_k = min(5, httpx.get(service.url + f"/v2/models/{name}").json()["outputs"][0]["shape"][1])  # /classify's
            model_args = ["--models", args.model, "--repository", str(args.repository)]
            model_args += ["--bench-repository", str(args.bench_repository), "--photos", str(args.photos)]
            limits = (lambda: inprocess_limits(model_args, backend, args.limits_seconds)) if args.limits_seconds else None
            label, routes = f"service {backend}", tuple(args.routes)
            results["rows"] += measure(
                label, service, listing, args.concurrency, args.seconds, True, limits, routes, (name, top_k)
            )
            if args.big_photos:
                big = write_list(make_big_photos(photos, Path(tmp)), Path(tmp) / "big")
                small = run_wrk(service.url, listing, 8, args.seconds)
                large = run_wrk(service.url, big, 8, args.seconds)
                results["big_photos"] = {
                    "small_p50_ms": small["p50_ms"],
                    "big_p50_ms": large["p50_ms"],
                    "ratio": large["p50_ms"] / small["p50_ms"],
                    "errors": large["errors"],
                }
                print(
                    f"12 MP uploads at c=8: p50 {large['p50_ms']:.1f} ms vs {small['p50_ms']:.1f} ms for the photos "
                    f"({results['big_photos']['ratio']:.2f}x)"
                )
            if args.memory_requests:
                results["memory"] = memory_drift(service, listing, args.memory_requests)
        finally:
            service.stop()
        if not args.no_naive:
            port = free_port()
            naive = Process(
                [PY, str(ROOT / "bench" / "naive_server.py"), "--model-dir", str(version_dir), "--port", str(port)],
                f"http://127.0.0.1:{port}",
                "/classify",
            )
            try:
                results["rows"] += measure("naive FastAPI + ORT CPU", naive, listing, args.concurrency, args.seconds, False)
            finally:
                naive.stop()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


def memory_drift(server: Process, listing: Path, total: int) -> dict:
    """RSS after the first 1,000 requests and after ``total``, sent at concurrency 32."""

    def send(n: int) -> None:
        sent = 0
        while sent < n:
            stats = run_wrk(server.url, listing, 32, 5)
            sent += stats["requests"]

    send(1000)
    first = rss_mb(server.proc.pid)
    send(total - 1000)
    last = rss_mb(server.proc.pid)
    print(f"RSS after 1,000 requests {first:.0f} MB, after {total:,}: {last:.0f} MB ({100 * (last - first) / first:+.1f}%)")
    return {"rss_after_1000_mb": first, f"rss_after_{total}_mb": last, "drift_pct": 100 * (last - first) / first}


if __name__ == "__main__":
    main()
