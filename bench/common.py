"""Shared helpers for the benchmarks: models to measure, photos, backends, timing."""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from model_repository import list_versions, read_manifest  # noqa: E402

DEFAULT_PHOTOS = ROOT.parent / "shared" / "data" / "photos"


def jpeg_photos(photos: Path) -> list[Path]:
    """The JPEG files in ``photos``, sorted: what the HTTP benchmarks send (wrk reads them from a list of paths)."""
    return sorted(q for q in photos.iterdir() if q.suffix.lower() in (".jpg", ".jpeg"))


def photo_bytes(photos: Path, limit: int | None = None) -> list[bytes]:
    files = sorted(p for p in photos.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:limit]
    if not files:
        raise SystemExit(f"no photos in {photos}")
    return [f.read_bytes() for f in files]


BENCH_MODELS = ("resnet50", "resnet18", "resnet50-int8", "resnet18-int8")


def ensure_bench_models(repository: Path, names: list[str], photos: Path = DEFAULT_PHOTOS) -> dict[str, Path]:
    """Random-weight ResNet-18/50 (and int8 versions calibrated on ``photos``) exported once into ``repository``
    (needs the export extra), as ``python -m export --random ARCH [--int8 --calibration-images photos]`` would.
    Returns version dirs by name."""
    out = {}
    for name in names:
        if not list_versions(repository, name):
            from export.pipeline import ExportOptions, export_to_repository
            from export.sources import from_random

            int8 = dict(int8=True, calibration_images=photos) if name.endswith("-int8") else {}
            export_to_repository(from_random(name.removesuffix("-int8")), repository, name, ExportOptions(**int8))
        out[name] = repository / name / str(list_versions(repository, name)[-1])
    return out


def latest_version(repository: Path, name: str) -> Path:
    versions = list_versions(repository, name)
    if not versions:
        raise SystemExit(f"{repository}/{name} has no versions")
    return repository / name / str(versions[-1])


def manifest_of(version_dir: Path):
    return read_manifest(version_dir)


def rate(fn, seconds: float, min_calls: int = 3) -> tuple[float, int]:
    """(seconds per call, calls) running ``fn`` for about ``seconds`` after one warm-up call."""
    fn()
    calls, start = 0, time.perf_counter()
    while calls < min_calls or time.perf_counter() - start < seconds:
        fn()
        calls += 1
    return (time.perf_counter() - start) / calls, calls
