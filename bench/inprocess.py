"""In-process limits, no HTTP: ONNX Runtime alone on tensors at batch 1..64, decode+preprocess alone, and the
plain loop decode+preprocess+inference at the best batch size, for each backend (provider/precision).

    python bench/inprocess.py --models resnet50 resnet18 cifar10-resnet56 --seconds 3 --json bench/results/inprocess.json
"""

from __future__ import annotations

import argparse
import itertools
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from common import BENCH_MODELS, DEFAULT_PHOTOS, ROOT, ensure_bench_models, latest_version, manifest_of, photo_bytes, rate

from service.backends import Backend, candidate_backends
from service.imaging import image_to_input
from service.runtime import ModelLoadError, OrtRunner

BATCHES = (1, 2, 4, 8, 16, 32, 64)


def measure(
    version_dir: Path, backend: Backend, photos: list[bytes], batches, seconds: float, threads: int, loop_threads: int
) -> dict:
    manifest = manifest_of(version_dir)
    runner = OrtRunner(version_dir / manifest.file, manifest, backend, threads, 1)
    size = manifest.input_size
    result: dict = {"backend": backend.label, "batch": {}}
    for n in batches:
        x = np.random.default_rng(0).standard_normal((n, 3, size, size)).astype(np.float32)
        per_call, _ = rate(lambda x=x: runner(x), seconds)
        result["batch"][n] = {"img_s": n / per_call, "ms_per_batch": per_call * 1000}
    best = max(result["batch"], key=lambda n: result["batch"][n]["img_s"])
    result["best_batch"] = best
    result["single_image_ms"] = result["batch"][1]["ms_per_batch"] if 1 in result["batch"] else None
    spec, max_px = manifest.preprocess, 100_000_000
    rotation = itertools.cycle(photos)
    per_image, _ = rate(lambda: image_to_input(next(rotation), spec, max_px), seconds)
    result["preprocess_img_s"] = 1 / per_image

    # The plain loop: decode+preprocess a batch in a thread pool (2 threads: the development machine's cores) while
    # the previous batch runs, as a well-written single-process script would, with no HTTP. The batch is assembled
    # by its own thread: assembled from a decoding thread, it would hold that thread while it waits for the others,
    # leaving one decoding thread of two.
    pool, assembler = ThreadPoolExecutor(loop_threads), ThreadPoolExecutor(1)

    def prepare():  # on the assembler thread only, so one rotation serves every batch
        items = [next(rotation) for _ in range(best)]
        return np.stack(list(pool.map(lambda d: image_to_input(d, spec, max_px), items)))

    pending = assembler.submit(prepare)

    def step():
        nonlocal pending
        batch = pending.result()
        pending = assembler.submit(prepare)
        runner(batch)

    per_batch, _ = rate(step, seconds)
    result["loop_img_s"] = best / per_batch
    pool.shutdown()
    assembler.shutdown()
    # One image at a time, decoded then classified at batch 1: the most a client that waits for each answer
    # (concurrency 1) can get, with nothing to overlap.
    per_image, _ = rate(lambda: runner(image_to_input(next(rotation), spec, max_px)[None]), seconds)
    result["serial_img_s"] = 1 / per_image
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["resnet50", "resnet18", "cifar10-resnet56"])
    p.add_argument("--repository", type=Path, default=ROOT / "models", help="where the bundled model lives")
    p.add_argument("--bench-repository", type=Path, default=ROOT / "bench" / ".models", help="random-weight ResNet-18/50 exports")
    p.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    p.add_argument("--batches", type=int, nargs="+", default=list(BATCHES))
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--threads", type=int, default=0, help="ORT intra-op threads (0: all cores)")
    p.add_argument("--backends", nargs="*", help="e.g. CPU/fp32 OpenVINO/bf16 (default: every candidate here)")
    p.add_argument("--loop-threads", type=int, default=2, help="decoding threads of the plain loop (2: this machine's cores)")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    photos = photo_bytes(args.photos, 50)
    imagenet = [m for m in args.models if m in BENCH_MODELS]
    dirs = ensure_bench_models(args.bench_repository, imagenet, args.photos) if imagenet else {}
    for m in args.models:
        if m not in dirs:
            dirs[m] = latest_version(args.repository, m)
    results = []
    for model, version_dir in dirs.items():
        graph_precision = manifest_of(version_dir).precision
        backends = candidate_backends([], "auto", True, True, graph_precision)
        if args.backends:
            # An int8 graph runs only as int8: when none of its backends is named, measure each of them.
            named = [b for b in backends if b.label in args.backends]
            backends = named or (backends if graph_precision != "fp32" else [])
        for backend in backends:
            try:
                r = measure(version_dir, backend, photos, args.batches, args.seconds, args.threads, args.loop_threads)
            except ModelLoadError as exc:
                print(f"{model} {backend.label}: skipped ({exc})")
                continue
            r["model"] = model
            results.append(r)
            curve = "  ".join(f"b{n}:{v['img_s']:.0f}" for n, v in r["batch"].items())
            print(
                f"{model:<18} {backend.label:<14} ORT img/s {curve} | best b{r['best_batch']} | "
                f"preprocess {r['preprocess_img_s']:.0f} img/s | loop {r['loop_img_s']:.1f} img/s | "
                f"serial b1 {r['serial_img_s']:.1f} img/s",
                flush=True,
            )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
