"""The event loop's CPU per /classify request: the HTTP layer's share of a request's cost, without sockets.

    python bench/event_loop_cost.py --model cifar10-resnet56 --requests 1500 --rounds 2 --json bench/results/event-loop-cost.json
    python bench/event_loop_cost.py --against /tmp/base --rounds 3     # this tree and another checkout, alternating

Drives the service's ASGI app in-process (the real app, model, decoding threads and batcher; no sockets, no
uvicorn) with ``--concurrency`` raw-body requests at a time over the photos, and reads the CPU time of the
event-loop thread alone (``time.thread_time``): the CPU that Starlette/FastAPI, the middleware and our request
handling take per request, beside decoding and inference in their own threads. A thread's CPU time hardly
depends on what else runs on the machine, so this can be measured while a training job shares it. With
``--against CHECKOUT`` each round also measures that checkout's service (a git worktree of another commit), in a
subprocess that imports it, so the two are compared side by side in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import DEFAULT_PHOTOS, ROOT, photo_bytes

if "--checkout" in sys.argv:  # measuring another checkout: import its service, not this tree's (common put ROOT first)
    sys.path.insert(0, sys.argv[sys.argv.index("--checkout") + 1])


async def post(app, body: bytes) -> int:
    """One raw-body POST /classify through the ASGI app; returns the status."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/classify", "raw_path": b"/classify", "query_string": b"", "root_path": "",
        "headers": [(b"host", b"bench"), (b"content-type", b"image/jpeg"), (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
    }  # fmt: skip
    body_sent, statuses, never = False, [], asyncio.Event()

    async def receive() -> dict:
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await never.wait()  # the client stays connected
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    await app(scope, receive, send)
    return statuses[0]


async def measure(args: argparse.Namespace, photos: list[bytes]) -> dict:
    from service.app import create_app
    from service.settings import Settings

    print(f"measuring {Path(sys.modules['service'].__file__).parent.parent}", file=sys.stderr)
    settings = Settings(model_repository=args.repository, models=[args.model], poll_interval_s=0, log_level="warning")
    requests, concurrency = args.requests, args.concurrency
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        for i in range(2 * concurrency):  # warm the batch sizes and the decoding threads
            await post(app, photos[i % len(photos)])
        slots = asyncio.Semaphore(concurrency)

        async def one(i: int) -> int:
            async with slots:
                return await post(app, photos[i % len(photos)])

        cpu, wall = time.thread_time(), time.perf_counter()
        statuses = await asyncio.gather(*(one(i) for i in range(requests)))
        cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
    if any(s != 200 for s in statuses):
        raise SystemExit(f"{sum(s != 200 for s in statuses)} requests failed")
    return {"event_loop_cpu_ms_per_request": 1000 * cpu / requests, "wall_ms_per_request": 1000 * wall / requests}


def measure_checkout(args: argparse.Namespace, checkout: Path) -> dict:
    """One round of ``measure`` on another checkout's service, in a subprocess that imports it."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "round.json"
        flags = ["--model", args.model, "--repository", str(args.repository), "--photos", str(args.photos)]
        flags += ["--requests", str(args.requests), "--concurrency", str(args.concurrency), "--rounds", "1"]
        subprocess.run([sys.executable, __file__, *flags, "--checkout", str(checkout), "--json", str(out)], check=True)
        return json.loads(out.read_text())["runs"]["this tree"][0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="cifar10-resnet56")
    p.add_argument("--repository", type=Path, default=ROOT / "models")
    p.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    p.add_argument("--requests", type=int, default=1500)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--against", type=Path, help="another checkout (git worktree) to measure in alternate rounds")
    p.add_argument("--checkout", type=Path, help=argparse.SUPPRESS)  # set by --against for its subprocess
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    args.repository, args.photos = args.repository.resolve(), args.photos.resolve()
    photos = photo_bytes(args.photos)
    runs: dict[str, list[dict]] = {"this tree": []}
    if args.against:
        runs[f"against {args.against}"] = []
    for _ in range(args.rounds):
        for name in runs:
            row = asyncio.run(measure(args, photos)) if name == "this tree" else measure_checkout(args, args.against)
            runs[name].append(row)
            print(f"{name:<20} event loop {row['event_loop_cpu_ms_per_request']:.3f} ms CPU/request", flush=True)
    summary = {name: statistics.median(r["event_loop_cpu_ms_per_request"] for r in rows) for name, rows in runs.items()}
    print("median: " + ", ".join(f"{name} {ms:.3f} ms" for name, ms in summary.items()))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        result = {"model": args.model, "requests": args.requests, "concurrency": args.concurrency, "runs": runs}
        args.json.write_text(json.dumps({**result, "median_ms": summary}, indent=2) + "\n")


if __name__ == "__main__":
    main()
