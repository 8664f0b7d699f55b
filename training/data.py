"""Training data: CIFAR-10 as an in-memory uint8 tensor cache with on-device batch augmentation, or any
ImageFolder tree (ImageNet layout) through a DataLoader with workers.

Both give a :class:`Split` whose ``batches(epoch)`` yields normalised ``(N, 3, H, W)`` float images and
``(N,)`` int64 labels on the training device. The order and augmentation of epoch ``e`` depend only on
``(seed, e)``, so a resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")
EVAL_SPLIT_NAMES = ("test", "val")


class DataError(ValueError):
    """A data directory that is missing or laid out wrongly; the message says what was expected."""


def epoch_generator(seed: int, epoch: int, device: torch.device | str = "cpu") -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(seed * 100_003 + epoch)
    return generator


# ----------------------------------------------------------------------------- CIFAR-10 as tensors


@dataclass
class ImageTensors:
    images: Tensor  # (N, 3, 32, 32) uint8
    labels: Tensor  # (N,) int64
    classes: list[str]


def _decode_rgb32(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        img = img.convert("RGB")
        if img.size != (32, 32):
            img = img.resize((32, 32), Image.Resampling.BILINEAR)
        return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)  # (3, 32, 32)


def _stack(files: list[tuple[str, bytes | Path]], classes: list[str]) -> ImageTensors:
    """``files``: (class name, encoded bytes or a path) in a fixed order."""

    def decode(item: tuple[str, bytes | Path]) -> np.ndarray:
        data = item[1].read_bytes() if isinstance(item[1], Path) else item[1]
        return _decode_rgb32(data)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:  # PIL releases the GIL while decoding
        arrays = list(pool.map(decode, files, chunksize=256))
    index = {c: i for i, c in enumerate(classes)}
    return ImageTensors(
        images=torch.from_numpy(np.stack(arrays)),
        labels=torch.tensor([index[c] for c, _ in files], dtype=torch.int64),
        classes=classes,
    )


def _split_classes(found: dict[str, dict[str, list]], where: str) -> list[str]:
    train = found.get("train") or {}
    if not train:
        raise DataError(f"{where}: expected class folders under train/ (train/<class>/<image>.jpg), found none")
    empty = sorted(c for c, items in train.items() if not items)
    if empty:
        raise DataError(f"{where}: empty class folder(s) in train/: {', '.join(empty)}")
    return sorted(train)


def _from_image_folder(root: Path) -> dict[str, ImageTensors]:
    found: dict[str, dict[str, list]] = {}
    for split in ("train", *EVAL_SPLIT_NAMES):
        if (root / split).is_dir():
            found[split] = {
                d.name: sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
                for d in sorted((root / split).iterdir())
                if d.is_dir()
            }
    classes = _split_classes(found, str(root))
    return {split: _stack([(c, p) for c in classes for p in by_class.get(c, [])], classes) for split, by_class in found.items()}


def _from_tarball(path: Path) -> dict[str, ImageTensors]:
    found: dict[str, dict[str, list]] = {}
    with tarfile.open(path) as tar:
        for member in sorted(tar.getmembers(), key=lambda m: m.name):
            parts = Path(member.name).parts
            if not member.isfile() or Path(member.name).suffix.lower() not in IMAGE_SUFFIXES or len(parts) < 3:
                continue
            split, cls = parts[-3], parts[-2]
            if split in ("train", *EVAL_SPLIT_NAMES):
                found.setdefault(split, {}).setdefault(cls, []).append(tar.extractfile(member).read())
    classes = _split_classes(found, str(path))
    return {
        split: _stack([(c, data) for c in classes for data in by_class.get(c, [])], classes) for split, by_class in found.items()
    }


def _from_python_batches(root: Path) -> dict[str, ImageTensors]:
    """torchvision's ``cifar-10-batches-py``: pickled dicts of (N, 3072) uint8 rows."""

    def read(name: str) -> dict:
        with open(root / name, "rb") as fh:
            return pickle.load(fh, encoding="bytes")

    classes = [c.decode() for c in read("batches.meta")[b"label_names"]]

    def tensors(names: list[str]) -> ImageTensors:
        batches = [read(n) for n in names]
        images = np.concatenate([b[b"data"] for b in batches]).reshape(-1, 3, 32, 32)
        labels = np.concatenate([b[b"labels"] for b in batches])
        return ImageTensors(torch.from_numpy(images), torch.from_numpy(labels).long(), classes)

    return {"train": tensors([f"data_batch_{i}" for i in range(1, 6)]), "test": tensors(["test_batch"])}


def _source_key(path: Path) -> str:
    """Changes when the source changes: path, sizes and mtimes (cheap; no full read)."""
    h = hashlib.sha1(str(path.resolve()).encode())
    entries = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for p in entries:
        st = p.stat()
        h.update(f"{p}:{st.st_size}:{int(st.st_mtime)}".encode())
    return h.hexdigest()[:16]


def resolve_cifar_source(data_dir: Path, download: bool = False) -> Path:
    if download:
        import torchvision

        torchvision.datasets.CIFAR10(str(data_dir), train=True, download=True)
        torchvision.datasets.CIFAR10(str(data_dir), train=False, download=True)
    if not data_dir.exists():
        raise DataError(f"--data-dir {data_dir} does not exist")
    if data_dir.is_dir() and (data_dir / "cifar-10-batches-py").is_dir():
        return data_dir / "cifar-10-batches-py"
    return data_dir


def load_cifar10(data_dir: str | Path, cache_dir: str | Path | None = None, download: bool = False) -> dict[str, ImageTensors]:
    """Decode CIFAR-10 once into uint8 tensors, cached as a ``.pt`` file keyed by the source.

    ``data_dir``: (a) an ImageFolder with ``train/`` and ``test/`` (or ``val/``), (b) such a tree packed
    as ``.tar.gz``, or (c) torchvision's ``cifar-10-batches-py`` (or its parent).
    """
    source = resolve_cifar_source(Path(data_dir), download)
    cache_root = Path(cache_dir or os.environ.get("RESNET_SERVE_CACHE", Path.home() / ".cache" / "resnet-serve"))
    cache_file = cache_root / f"cifar10-{_source_key(source)}.pt"
    if cache_file.exists():
        blob = torch.load(cache_file, weights_only=True)
        return {s: ImageTensors(v["images"], v["labels"], list(blob["classes"])) for s, v in blob["splits"].items()}

    if source.is_file() and source.name.endswith((".tar.gz", ".tgz", ".tar")):
        splits = _from_tarball(source)
    elif source.is_dir() and (source / "data_batch_1").exists():
        splits = _from_python_batches(source)
    elif source.is_dir() and (source / "train").is_dir():
        splits = _from_image_folder(source)
    else:
        raise DataError(
            f"{source}: not a CIFAR-10 source. Expected one of: a directory with train/<class>/*.jpg and "
            "test/<class>/*.jpg; a .tar.gz of that tree; or torchvision's cifar-10-batches-py "
            "(data_batch_1..5, test_batch, batches.meta)"
        )
    cache_root.mkdir(parents=True, exist_ok=True)
    blob = {
        "classes": splits["train"].classes,
        "splits": {s: {"images": t.images, "labels": t.labels} for s, t in splits.items()},
    }
    tmp = cache_file.with_suffix(f".tmp{os.getpid()}")
    torch.save(blob, tmp)
    os.replace(tmp, cache_file)
    return splits


def augment_cifar(images: Tensor, generator: torch.Generator) -> Tensor:
    """The paper's augmentation on a whole batch: 4-pixel zero pad, random 32x32 crop, random flip.

    ``images``: (N, 3, 32, 32) uint8 on any device -> (N, 3, 32, 32) uint8 (channels-last in memory).
    """
    n, _, h, w = images.shape
    device = images.device
    padded = F.pad(images, (4, 4, 4, 4))  # (N, 3, 40, 40)
    oy = torch.randint(0, 9, (n, 1), generator=generator, device=device)
    ox = torch.randint(0, 9, (n, 1), generator=generator, device=device)
    flip = torch.rand(n, 1, generator=generator, device=device) < 0.5
    rows = oy + torch.arange(h, device=device)  # (N, 32)
    cols = ox + torch.arange(w, device=device)  # (N, 32)
    cols = torch.where(flip, cols.flip(1), cols)
    batch_index = torch.arange(n, device=device)[:, None, None]
    # Advanced indices separated by a slice: the broadcast dims come first -> (N, 32, 32, 3).
    crops = padded[batch_index, :, rows[:, :, None], cols[:, None, :]]
    return crops.permute(0, 3, 1, 2)


def cutout_(images: Tensor, size: int, generator: torch.Generator) -> Tensor:
    """Cutout (DeVries & Taylor, 2017): per image, a ``size`` x ``size`` square at a random centre (clipped at the
    border, so it may be partly outside) set to 0, which after normalisation is the dataset's mean colour.

    ``images``: (N, C, H, W) normalised floats, changed in place (keeping their memory format) and returned.
    """
    n, _, h, w = images.shape
    device = images.device
    top = torch.randint(0, h, (n, 1, 1), generator=generator, device=device) - size // 2  # (N, 1, 1)
    left = torch.randint(0, w, (n, 1, 1), generator=generator, device=device) - size // 2
    rows = torch.arange(h, device=device)[None, :, None]  # (1, H, 1)
    cols = torch.arange(w, device=device)[None, None, :]  # (1, 1, W)
    hole = (rows >= top) & (rows < top + size) & (cols >= left) & (cols < left + size)  # (N, H, W)
    return images.masked_fill_(hole[:, None], 0.0)


class Split:
    """One split, iterated as ``(images, labels)`` batches on ``device`` for this rank's share."""

    num_samples: int
    classes: list[str]

    def batches(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        raise NotImplementedError

    def __len__(self) -> int:  # batches per epoch on this rank
        raise NotImplementedError


class TensorSplit(Split):
    def __init__(
        self,
        data: ImageTensors,
        batch_size: int,
        device: torch.device,
        train: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        mean: tuple[float, ...] = CIFAR10_MEAN,
        std: tuple[float, ...] = CIFAR10_STD,
        cutout_size: int = 0,
    ) -> None:
        self.images = data.images.to(device)
        self.labels = data.labels.to(device)
        self.classes, self.num_samples = data.classes, len(data.labels)
        self.batch_size, self.device, self.train, self.seed = batch_size, device, train, seed
        self.rank, self.world_size, self.cutout_size = rank, world_size, cutout_size
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255

    def _indices(self, epoch: int) -> Tensor:
        n = self.num_samples
        if self.train:
            order = torch.randperm(n, generator=epoch_generator(self.seed, epoch))
        else:
            order = torch.arange(n)
        if self.world_size > 1:  # pad so every rank gets the same number of samples, like DistributedSampler
            per_rank = -(-n // self.world_size)
            order = torch.cat([order, order[: per_rank * self.world_size - n]])[self.rank :: self.world_size]
        return order

    def __len__(self) -> int:
        return -(-len(self._indices(0)) // self.batch_size)

    def batches(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        order = self._indices(epoch).to(self.device)
        generator = epoch_generator(self.seed + 1 + self.rank, epoch, self.device)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            images = self.images[idx]
            if self.train:
                images = augment_cifar(images, generator)
            normalised = (images.float() - self.mean) / self.std
            if self.train and self.cutout_size:
                cutout_(normalised, self.cutout_size, generator)
            yield normalised, self.labels[idx]


def split_holdout(data: ImageTensors, holdout: int, seed: int) -> tuple[ImageTensors, ImageTensors]:
    """A fixed random ``holdout``-image validation split (the paper's 45k/5k)."""
    if not 0 < holdout < len(data.labels):
        raise DataError(f"--val-split must be between 1 and {len(data.labels) - 1}, got {holdout}")
    order = torch.randperm(len(data.labels), generator=epoch_generator(seed, -1))
    val, train = order[:holdout].sort().values, order[holdout:].sort().values
    return (
        ImageTensors(data.images[train], data.labels[train], data.classes),
        ImageTensors(data.images[val], data.labels[val], data.classes),
    )
