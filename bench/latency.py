"""Latency at concurrency 1 against the serial in-process loop, interleaved round by round.

    python bench/latency.py --models cifar10-resnet56 resnet18 resnet18-int8 resnet50 resnet50-int8 \
        --rounds 5 --seconds 4 --json bench/results/latency-c1.json

One client that waits for each answer (wrk, one connection, raw JPEG bodies rotating over the photos) against
what the same client could get with no HTTP at all: the serial loop (decode, preprocess and classify one image at
batch 1, in this process, on the service's backend with the same thread count). The two alternate for
``--rounds`` rounds of ``--seconds`` each, the service idle while the loop runs: on a shared machine whose speed
drifts by a third between minutes, a c=1 row and a serial figure measured minutes apart differ by more than the
overhead they are meant to show. Per round: wrk's p50 and the loop's median time per image (the same photos, in
the same order); the overhead is their difference, and the median over rounds is what is reported.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from common import BENCH_MODELS, DEFAULT_PHOTOS, ROOT, ensure_bench_models, jpeg_photos, latest_version, manifest_of
from http_load import PY, Process, run_wrk, write_list
from procs import free_port

from service.backends import candidate_backends
from service.imaging import image_to_input
from service.runtime import OrtRunner
from service.settings import Settings


def serial_ms(runner: OrtRunner, spec, photos: list[bytes], seconds: float, limits: tuple[int, int]) -> float:
    """The median milliseconds one image takes, decoded, preprocessed and classified at batch 1 in this thread;
    ``limits``: the service's (max_pixels, max_decoded_bytes)."""
    rotation, times = itertools.cycle(photos), []
    runner(image_to_input(photos[0], spec, *limits)[None])  # warm
    stop = time.perf_counter() + seconds
    while time.perf_counter() < stop or len(times) < 5:
        began = time.perf_counter()
        runner(image_to_input(next(rotation), spec, *limits)[None])
        times.append(time.perf_counter() - began)
    return 1000 * statistics.median(times)


def measure(version_dir: Path, photos: list[Path], rounds: int, seconds: float) -> dict:
    repository, name = version_dir.parent.parent, version_dir.parent.name
    argv = [
        *(PY, "-m", "service"),
        *("--model-repository", str(repository), "--models", name, "--port", str(port := free_port())),
        *("--host", "127.0.0.1", "--poll-interval-s", "0", "--log-level", "warning"),
    ]
    service = Process(argv, f"http://127.0.0.1:{port}", "/readyz")
    try:
        label = httpx.get(f"{service.url}/v1/models/{name}").json()["versions"][-1]["backend"]
        manifest = manifest_of(version_dir)
        settings = Settings()  # the service's defaults: the same thread count, so the same inference speed
        (backend,) = [b for b in candidate_backends([], "auto", True, True, manifest.precision) if b.label == label]
        runner = OrtRunner(version_dir / manifest.file, manifest, backend, settings.inference_threads, settings.inter_op_threads)
        limits = (settings.max_pixels, settings.max_decoded_bytes)
        bodies = [p.read_bytes() for p in photos]
        with tempfile.TemporaryDirectory() as tmp:
            listing = write_list(photos, Path(tmp))
            run_wrk(service.url, listing, 1, 2)  # warm-up
            rows = []
            for _ in range(rounds):
                wrk = run_wrk(service.url, listing, 1, seconds)
                loop_ms = serial_ms(runner, manifest.preprocess, bodies, seconds, limits)
                rows.append({"c1_p50_ms": wrk["p50_ms"], "c1_p99_ms": wrk["p99_ms"], "serial_ms": loop_ms})
                print(
                    f"{name:<18} {label:<14} c=1 p50 {wrk['p50_ms']:6.2f} ms  serial {loop_ms:6.2f} ms  "
                    f"overhead {wrk['p50_ms'] - loop_ms:+.2f} ms",
                    flush=True,
                )
    finally:
        service.stop()
    overheads = [r["c1_p50_ms"] - r["serial_ms"] for r in rows]
    return {
        "model": name,
        "backend": label,
        "rounds": rows,
        "median_overhead_ms": statistics.median(overheads),
        "max_overhead_ms": max(overheads),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["cifar10-resnet56", *BENCH_MODELS])
    p.add_argument("--repository", type=Path, default=ROOT / "models", help="where the bundled model lives")
    p.add_argument("--bench-repository", type=Path, default=ROOT / "bench" / ".models", help="random-weight ResNet-18/50 exports")
    p.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=4.0, help="per round, for each of the two")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    photos = jpeg_photos(args.photos)
    imagenet = [m for m in args.models if m in BENCH_MODELS]
    dirs = ensure_bench_models(args.bench_repository, imagenet, args.photos) if imagenet else {}
    results = []
    for model in args.models:
        result = measure(dirs.get(model) or latest_version(args.repository, model), photos, args.rounds, args.seconds)
        print(f"{model}: median overhead {result['median_overhead_ms']:+.2f} ms over {args.rounds} rounds", flush=True)
        results.append(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"seconds": args.seconds, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
