"""Write a model's evaluation set (model_repository/evaluation.py) from held-out images: a fixed, class-stratified
sample, the selection recorded, stored once per model name and used to score every version before promotion.

    python -m export.evaluation_set --images held-out/ --name cifar10-resnet56 --repository models --count 1000
    python -m export.evaluation_set --images ../shared/data/cifar10-jpeg.tar.gz --labels-from models/cifar10-resnet56/3 \\
        --name cifar10-resnet56 --repository models

``--images`` is an ImageFolder (``CLASS/FILE``, or its ``test/``/``val/`` split) or a ``.tar.gz`` of one. Files are
stored as they are (encoded), so the service scores them through its own decoding.
"""

from __future__ import annotations

import argparse
import sys
import tarfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from export.errors import ExportError
from model_repository import list_versions, read_manifest, version_dir
from model_repository.evaluation import EVALUATION_FILE, evaluation_dir, read_evaluation_set, write_evaluation_set
from model_repository.manifest import ManifestError

SPLITS = ("test", "val")  # the held-out split's folder, when the source holds a train split beside it
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def _held_out(paths: list[str]) -> tuple[str, list[str]]:
    """(split prefix, CLASS/FILE paths) of the held-out split, or the whole listing when it has no split folders."""
    for split in SPLITS:
        inside = [p[len(split) + 1 :] for p in paths if p.startswith(split + "/")]
        if inside:
            return split + "/", inside
    return "", paths


def read_image_files(source: Path) -> tuple[str, dict[str, dict[str, bytes]]]:
    """{class: {file name: encoded bytes}} of an ImageFolder or a .tar.gz of one (its held-out split)."""
    if source.is_dir():
        files = {str(p.relative_to(source)): p.read_bytes for p in source.rglob("*") if p.is_file()}
        return _by_class(source, files)
    if tarfile.is_tarfile(source):
        with tarfile.open(source) as tar:
            members = {m.name.removeprefix("./"): m for m in tar.getmembers() if m.isfile()}
            return _by_class(source, {name: (lambda m=m: tar.extractfile(m).read()) for name, m in members.items()})
    raise ExportError(f"{source}: neither a folder nor a .tar.gz of CLASS/FILE images")


def _by_class(source: Path, files: dict) -> tuple[str, dict[str, dict[str, bytes]]]:
    """``files``: relative path -> a function reading it; the held-out split's CLASS/FILE images read."""
    split, inside = _held_out(sorted(p for p in files if Path(p).suffix.lower() in IMAGE_SUFFIXES))
    by_class: dict[str, dict[str, bytes]] = defaultdict(dict)
    for rel in inside:
        if rel.count("/") == 1:
            cls, file = rel.split("/")
            by_class[cls][file] = files[split + rel]()
    if not by_class:
        raise ExportError(f"{source}: no CLASS/FILE images found")
    return f"{source.name}:{split or './'}", dict(by_class)


def stratified_sample(
    by_class: dict[str, dict[str, bytes]], class_names: list[str], count: int, seed: int
) -> tuple[list[bytes], list[int], dict[str, list[str]]]:
    """``count`` images, as even across the classes as they allow, drawn with ``seed`` from each class's files in
    sorted order. Returns the images, their label indices and the chosen file names per class (the record)."""
    unknown = sorted(set(by_class) - set(class_names))
    if unknown:
        raise ExportError(f"image folders {unknown} are not among the model's labels")
    present = [c for c in class_names if c in by_class]
    rng = np.random.default_rng(seed)
    quota = {c: count // len(present) + (i < count % len(present)) for i, c in enumerate(present)}
    images, labels, chosen = [], [], {}
    for c in present:
        files = sorted(by_class[c])
        if len(files) < quota[c]:
            raise ExportError(f"class {c!r} has {len(files)} images; {quota[c]} needed for {count} in all")
        picked = sorted(files[i] for i in rng.choice(len(files), quota[c], replace=False))
        chosen[c] = picked
        images += [by_class[c][f] for f in picked]
        labels += [class_names.index(c)] * len(picked)
    return images, labels, chosen


@dataclass
class PlannedSet:
    """A sampled evaluation set, checked against the one stored, to be written when the export publishes."""

    repository: Path
    name: str
    images: list[bytes]
    labels: list[int]
    class_names: list[str]
    source: dict
    unchanged: bool  # the stored set is this one already

    def write(self) -> Path:
        """Store the set (unless it is there already); returns its ``evaluation.json``."""
        if self.unchanged:
            return evaluation_dir(self.repository, self.name) / EVALUATION_FILE
        return write_evaluation_set(self.repository, self.name, self.images, self.labels, self.class_names, self.source)


def plan_evaluation_set(
    images_source: Path,
    repository: Path,
    name: str,
    class_names: list[str],
    count: int = 1000,
    seed: int = 0,
    replace: bool = False,
) -> PlannedSet:
    """Sample the set; ExportError if ``name`` already has a different one and ``replace`` is not given (every
    version is scored on the stored set: changing it is a decision of its own)."""
    described, by_class = read_image_files(images_source)
    images, labels, chosen = stratified_sample(by_class, class_names, count, seed)
    source = {
        "images": described,
        "selection": f"class-stratified sample of {len(images)}: numpy default_rng({seed}).choice per class, sorted",
        "seed": seed,
        "files": chosen,
    }
    try:
        stored = read_evaluation_set(repository, name)
    except ManifestError:
        stored = None  # unreadable: replacing it can only help
    same = stored is not None and stored.images == images and stored.labels.tolist() == labels
    same = same and stored.manifest.labels == class_names
    if stored is not None and not same and not replace:
        raise ExportError(
            f"{name} already has a different evaluation set ({stored.manifest.count} images from "
            f"{stored.manifest.source.get('images', '?')}); every version is scored on it: --replace-evaluation replaces it"
        )
    return PlannedSet(repository, name, images, labels, class_names, source, unchanged=same)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=Path, required=True, help="held-out images: an ImageFolder or a .tar.gz of one")
    p.add_argument("--name", required=True, help="the model name in the repository")
    p.add_argument("--repository", type=Path, default=Path("models"))
    p.add_argument("--labels-from", type=Path, help="a version directory whose labels to use (default: the newest)")
    p.add_argument("--count", type=int, default=1000, help="images in the set (default 1000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--replace", action="store_true", help="replace a different evaluation set the model already has")
    args = p.parse_args(argv)
    try:
        version_dir = args.labels_from or _newest_version(args.repository, args.name)
        labels = read_manifest(version_dir).labels
        planned = plan_evaluation_set(args.images, args.repository, args.name, labels, args.count, args.seed, args.replace)
        path = planned.write()
    except (ExportError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


def _newest_version(repository: Path, name: str) -> Path:
    versions = list_versions(repository, name)
    if not versions:
        raise ExportError(f"{repository}/{name} has no version to take labels from (give --labels-from)")
    return version_dir(repository, name, versions[-1])


if __name__ == "__main__":
    raise SystemExit(main())
