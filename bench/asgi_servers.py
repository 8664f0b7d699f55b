"""The same app under the ASGI servers a user would pick, side by side, alternating round by round.

    python bench/asgi_servers.py --model cifar10-resnet56 --concurrency 1 8 32 128 --rounds 3 --seconds 4 \
        --json bench/results/asgi-servers-cifar10-resnet56.json

Servers, each serving ``service.app:create_app`` with the same settings (the ``RESNET_SERVE_*`` environment):

- ``uvicorn-httptools``: ``python -m service``, what the service runs (uvicorn, the httptools parser, uvloop);
- ``uvicorn-h11``: uvicorn with its pure-Python h11 parser (uvloop);
- ``granian``: granian's Rust HTTP server with its ASGI interface and uvloop, one worker (the ``bench`` extra).

All are started at once and idle while another is measured; each round visits every server at every
concurrency (wrk, raw JPEG bodies rotating over the photos), so a drift of the shared machine's speed falls on all
of them alike. Per row: req/s over the steady middle of the run (the service's own counter), p50 and p99, and the
serving process's CPU per request; the median over rounds is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

from common import BENCH_MODELS, DEFAULT_PHOTOS, ROOT, ensure_bench_models, jpeg_photos, latest_version
from http_load import PY, Process, run_wrk, write_list
from procs import free_port


def commands(port: int) -> dict[str, list[str]]:
    where = ["--host", "127.0.0.1", "--port", str(port)]
    return {
        "uvicorn-httptools": [PY, "-m", "service", *where],
        "uvicorn-h11": [
            PY,
            "-m",
            "uvicorn",
            "--factory",
            "service.app:create_app",
            "--http",
            "h11",
            "--loop",
            "uvloop",
            "--no-access-log",
            *where,
        ],
        "granian": [
            *(PY, "-m", "granian", "--interface", "asgi", "--factory", "--loop", "uvloop", "--workers", "1", "--no-ws"),
            *where,
            "service.app:create_app",
        ],
    }


def serving_pid(pid: int) -> int:
    """The process that serves: granian's supervisor runs its worker as a child; uvicorn serves in its own."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return int(children[0]) if children else pid


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="cifar10-resnet56")
    p.add_argument("--repository", type=Path, default=ROOT / "models", help="where the bundled model lives")
    p.add_argument("--bench-repository", type=Path, default=ROOT / "bench" / ".models", help="random-weight ResNet-18/50 exports")
    p.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    p.add_argument("--servers", nargs="+", default=list(commands(0)), choices=list(commands(0)))
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 128])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    if args.model in BENCH_MODELS:
        version_dir = ensure_bench_models(args.bench_repository, [args.model], args.photos)[args.model]
    else:
        version_dir = latest_version(args.repository, args.model)
    env = {  # what create_app's Settings() reads
        "RESNET_SERVE_MODEL_REPOSITORY": str(version_dir.parent.parent),
        "RESNET_SERVE_MODELS": version_dir.parent.name,
        "RESNET_SERVE_POLL_INTERVAL_S": "0",
        "RESNET_SERVE_LOG_LEVEL": "warning",
    }
    os.environ.update(env)  # Process passes the environment on
    photos = jpeg_photos(args.photos)
    servers: dict[str, Process] = {}
    samples: dict[tuple[str, int], list[dict]] = {}
    try:
        for name in args.servers:
            port = free_port()
            servers[name] = Process(commands(port)[name], f"http://127.0.0.1:{port}", "/readyz")
        with tempfile.TemporaryDirectory() as tmp:
            listing = write_list(photos, Path(tmp))
            for server in servers.values():
                run_wrk(server.url, listing, 8, 2)  # warm-up
            for round_ in range(args.rounds):
                for c in args.concurrency:
                    for name, server in servers.items():
                        stats = run_wrk(server.url, listing, c, args.seconds, serving_pid(server.proc.pid))
                        samples.setdefault((name, c), []).append(stats)
                        print(
                            f"round {round_ + 1} {name:<18} c={c:<4} {stats['steady_req_s']:7.1f} req/s  "
                            f"p50 {stats['p50_ms']:6.2f}  p99 {stats['p99_ms']:6.2f} ms  "
                            f"CPU/req {stats['service_cpu_ms_per_req']:.2f} ms  errors {stats['errors']}",
                            flush=True,
                        )
    finally:
        for server in servers.values():
            server.stop()
    rows = []
    for (name, c), runs in samples.items():
        row = {"server": name, "concurrency": c, "rounds": len(runs), "errors": sum(r["errors"] for r in runs)}
        for key in ("steady_req_s", "p50_ms", "p99_ms", "service_cpu_ms_per_req"):
            row[key] = statistics.median(r[key] for r in runs)
        rows.append(row)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        result = {"model": version_dir.parent.name, "seconds": args.seconds, "rows": rows}
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
