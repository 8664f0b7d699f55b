"""Shared fixtures: tiny generated datasets (no downloads, no ../shared)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.procs import free_port, wait_for_http  # noqa: E402

TOY_CLASSES = ["red", "green", "blue"]
TORCH = importlib.util.find_spec("torch") is not None


def pytest_ignore_collect(collection_path: Path, config) -> bool | None:
    """Without torch (make test-serve), modules marked ``full`` as a whole are not even imported: they import
    torch or the exporter at the top. The full environment runs them (make test)."""
    if TORCH or collection_path.suffix != ".py":
        return None
    return True if re.search(r"^pytestmark = .*pytest\.mark\.full", collection_path.read_text(), re.M) else None


def toy_image(class_index: int, rng: np.random.Generator, size: int = 32) -> Image.Image:
    """A learnable toy image: the class's colour channel is bright, the others dim, plus noise."""
    pixels = rng.integers(0, 90, size=(size, size, 3))
    pixels[..., class_index] += 140
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def make_image_folder(root: Path, per_class: dict[str, int], size: int = 32, seed: int = 0, fmt: str = "png") -> Path:
    """root/<split>/<class>/<i>.<fmt> for each split in ``per_class``."""
    rng = np.random.default_rng(seed)
    for split, count in per_class.items():
        for ci, name in enumerate(TOY_CLASSES):
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                toy_image(ci, rng, size).save(d / f"{i:04d}.{fmt}")
    return root


def train_argv(data: Path, out: Path, *extra: str, model: str = "resnet20", batch_size: int = 16) -> list[str]:
    """train.py flags for a quick fp32 run on a toy dataset (tests add epochs, lr, resume, ... in ``extra``)."""
    return [
        "--model", model, "--data-dir", str(data), "--output-dir", str(out),
        "--batch-size", str(batch_size), "--amp", "none", "--no-progress", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="session")
def toy_cifar(tmp_path_factory) -> Path:
    """A 3-class CIFAR-like ImageFolder: 48 training and 16 test images per class, 32x32."""
    return make_image_folder(tmp_path_factory.mktemp("toy_cifar"), {"train": 48, "test": 16})


# A committed model repository (tests/tools/make_fixture_repository.py rebuilds it): the service's tests need no
# torch to get a model. "toy": a random-weight resnet20, 3 classes (TOY_CLASSES), 32x32 inputs.
FIXTURE_REPOSITORY = ROOT / "tests" / "fixtures" / "repository"


def copy_version(source: Path, target: Path, name: str, version: int, files=("model.onnx", "model.json", "golden.npz")) -> Path:
    """A version directory's model files copied to ``target``, its manifest renamed and renumbered to match."""
    target.mkdir(parents=True)
    for f in files:
        shutil.copy(source / f, target / f)
    manifest = json.loads((target / "model.json").read_text())
    (target / "model.json").write_text(json.dumps({**manifest, "name": name, "version": version}))
    return target


def copy_toy(repository: Path, name: str = "toy", version: int = 1) -> Path:
    """The fixture's toy model as ``repository/name/version``."""
    return copy_version(FIXTURE_REPOSITORY / "toy" / "1", Path(repository) / name / str(version), name, version)


def republish(repository: Path, name: str, version: int) -> int:
    """Publish a copy of ``version`` as the next version, the way the exporter does (a complete directory renamed
    into place): the same weights exported again. Returns the new version."""
    model_dir = Path(repository) / name
    new = max(int(d.name) for d in model_dir.iterdir() if d.name.isdigit()) + 1
    staging = copy_version(model_dir / str(version), Path(repository) / f".staging-{name}-{new}", name, new)
    staging.rename(model_dir / str(new))
    return new


@pytest.fixture(scope="session")
def toy_repository(tmp_path_factory):
    """A copy of the fixture repository, once per run: tests read it and never write to it (they copy it, or
    build their own, to change one)."""
    repo = tmp_path_factory.mktemp("toy-repository") / "repo"
    shutil.copytree(FIXTURE_REPOSITORY, repo)
    yield repo
    assert not (repo / "rollouts.json").exists(), "a test changed the shared toy repository's rollout state"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Each test decodes into its own cache directory."""
    monkeypatch.setenv("RESNET_SERVE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))


def export_random_model(
    repository: Path,
    name: str,
    arch: str = "resnet20",
    labels: list[str] | None = None,
    resize: int = 32,
    crop: int = 32,
    seed: int = 0,
    **options,
) -> Path:
    """Export a randomly initialised network of ours into ``repository`` (no training, no downloads), with
    ``labels`` and ImageNet-normalised ``resize``/``crop`` preprocessing. Needs torch: tests that call it are
    marked ``full``; the service's own tests copy the fixture repository instead (``copy_toy``)."""
    from export.pipeline import ExportOptions, export_to_repository
    from export.sources import from_random
    from model_repository import Preprocess

    labels = labels or TOY_CLASSES
    source = from_random(arch, len(labels), seed)
    source.labels = list(labels)
    source.preprocess = Preprocess(resize=resize, crop=crop, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    return export_to_repository(source, repository, name, ExportOptions(**options))


def client_for(repository: Path, **settings):
    """The app over an in-process ASGI client (``with client_for(repo) as c:``): no polling, a 1 ms batch delay
    unless ``settings`` say otherwise."""
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings

    defaults = dict(model_repository=repository, poll_interval_s=0, max_delay_ms=1)
    return TestClient(create_app(Settings(**{**defaults, **settings})))


def jpeg_bytes(size=(64, 48), seed: int = 0, **save_args) -> bytes:
    import io

    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC).save(buf, "JPEG", quality=90, **save_args)
    return buf.getvalue()


class Server:
    """``python -m service`` on a free loopback port, started and waited for until ready (``stop()`` kills it)."""

    def __init__(self, repository: Path, *flags: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # Its output, in a temporary file: never beside the repository (which may be the project's own models/).
        self.log = tempfile.TemporaryFile("w+")  # noqa: SIM115 (lives as long as the server)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "service",
                "--model-repository",
                str(repository),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                *flags,
            ],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        failure = wait_for_http(self.proc, self.url + "/readyz", 60)
        assert failure is None, f"server {failure}:\n" + self.output()

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
