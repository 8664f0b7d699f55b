"""A long soak of the service over HTTP: RSS after 1,000, 10,000 and 100,000 requests, and every error counted.

    python bench/soak.py --model cifar10-resnet56 --requests 100000 --concurrency 16 --json bench/results/soak.json

wrk posts the photos (raw JPEG bodies, rotating) at ``--concurrency`` in runs of ``--chunk-seconds`` until each
milestone's count is reached; the service's resident memory is read after each milestone. Not part of the test
suite (minutes); results rendered into docs/benchmarks.md (bench/report.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from common import DEFAULT_PHOTOS, ROOT, jpeg_photos, latest_version
from http_load import PY, Process, rss_mb, run_wrk, write_list
from procs import free_port


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="cifar10-resnet56")
    p.add_argument("--repository", type=Path, default=ROOT / "models")
    p.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    p.add_argument("--requests", type=int, default=100_000)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--chunk-seconds", type=float, default=10.0)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    version_dir = latest_version(args.repository, args.model)
    photos = jpeg_photos(args.photos)
    milestones = [m for m in (1_000, 10_000, 100_000) if m < args.requests] + [args.requests]
    port = free_port()
    flags = ["--model-repository", str(version_dir.parent.parent), "--models", args.model, "--port", str(port)]
    server = Process(
        [PY, "-m", "service", *flags, "--host", "127.0.0.1", "--poll-interval-s", "0", "--log-level", "warning"],
        f"http://127.0.0.1:{port}",
        "/readyz",
    )
    rows, sent, errors = [], 0, 0
    try:
        start_rss = rss_mb(server.proc.pid)
        with tempfile.TemporaryDirectory() as tmp:
            listing = write_list(photos, Path(tmp))
            for milestone in milestones:
                while sent < milestone:
                    seconds = args.chunk_seconds if milestone - sent > 2_000 else 2.0
                    stats = run_wrk(server.url, listing, args.concurrency, seconds)
                    sent += stats["requests"]
                    errors += stats["errors"]
                row = {"requests": sent, "errors": errors, "rss_mb": rss_mb(server.proc.pid), "p99_ms": stats["p99_ms"]}
                rows.append(row)
                words = f"after {sent:,} requests: RSS {row['rss_mb']:.0f} MB, {errors} errors, p99 {row['p99_ms']:.1f} ms"
                print(words, flush=True)
    finally:
        server.stop()
    result = {"model": args.model, "concurrency": args.concurrency, "start_rss_mb": start_rss, "milestones": rows}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if errors:
        sys.exit(f"{errors} errors")


if __name__ == "__main__":
    main()
