"""ImageFolder trees (ImageNet layout: ``train/<class>/*.JPEG`` + ``val/`` or ``test/``) through a DataLoader."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import DataLoader, DistributedSampler, Subset

from .checkpoint import eval_resize
from .data import EVAL_SPLIT_NAMES, IMAGE_SUFFIXES, IMAGENET_MEAN, IMAGENET_STD, DataError, Split, epoch_generator


def check_image_folder(root: Path) -> tuple[Path, Path | None]:
    """The train directory and the evaluation one (``val/`` or ``test/``, if any), checked for layout."""
    if not root.is_dir():
        raise DataError(f"--data-dir {root} does not exist or is not a directory")
    train = root / "train"
    if not train.is_dir():
        raise DataError(f"{root}: expected train/<class>/<image> (and val/ or test/), found no train/ directory")
    classes = [d for d in sorted(train.iterdir()) if d.is_dir()]
    if not classes:
        raise DataError(f"{train}: expected one folder per class, found none")
    empty = [d.name for d in classes if not any(p.suffix.lower() in IMAGE_SUFFIXES for p in d.iterdir())]
    if empty:
        raise DataError(f"{train}: empty class folder(s): {', '.join(empty)}")
    evaluation = next((root / n for n in EVAL_SPLIT_NAMES if (root / n).is_dir()), None)
    return train, evaluation


class LoaderSplit(Split):
    def __init__(
        self,
        dataset: torch.utils.data.Dataset,
        classes: list[str],
        batch_size: int,
        device: torch.device,
        train: bool,
        workers: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.classes, self.num_samples, self.device = classes, len(dataset), device
        self.sampler = DistributedSampler(dataset, world_size, rank, shuffle=train, seed=seed) if world_size > 1 else None
        self.seed = seed
        # One loader for the whole run. Its generator, re-seeded each epoch, draws the shuffle order and the seeds
        # of that epoch's workers (not persistent, so they are re-seeded), so a resumed run sees the same epochs.
        self.generator = torch.Generator()
        self.loader = DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=train and self.sampler is None,
            sampler=self.sampler,
            generator=self.generator,
            num_workers=workers,
            pin_memory=device.type == "cuda",
            persistent_workers=False,
        )

    def __len__(self) -> int:
        return len(self.loader)

    def batches(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        self.generator.manual_seed(self.seed * 100_003 + epoch)
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
        for images, labels in self.loader:
            yield images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)


def imagefolder_datasets(root: Path, input_size: int, val_split: int, seed: int):
    """(train dataset, {"val"/"test": dataset}, classes) with torchvision's reference transforms."""
    from torchvision import datasets, transforms

    train_dir, eval_dir = check_image_folder(root)
    normalize = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    train_tf = transforms.Compose(
        [transforms.RandomResizedCrop(input_size), transforms.RandomHorizontalFlip(), transforms.ToTensor(), normalize]
    )
    eval_tf = transforms.Compose(
        [transforms.Resize(eval_resize(input_size)), transforms.CenterCrop(input_size), transforms.ToTensor(), normalize]
    )
    train = datasets.ImageFolder(str(train_dir), train_tf)
    evals: dict[str, torch.utils.data.Dataset] = {}
    if val_split:
        if not 0 < val_split < len(train):
            raise DataError(f"--val-split must be between 1 and {len(train) - 1}, got {val_split}")
        order = torch.randperm(len(train), generator=epoch_generator(seed, -1)).tolist()
        evals["val"] = Subset(datasets.ImageFolder(str(train_dir), eval_tf), sorted(order[:val_split]))
        train = Subset(train, sorted(order[val_split:]))
    if eval_dir is not None:
        evaluation = datasets.ImageFolder(str(eval_dir), eval_tf)
        if evaluation.classes != (train.dataset if isinstance(train, Subset) else train).classes:
            raise DataError(f"{eval_dir}: class folders differ from train/")
        evals["test"] = evaluation
    classes = (train.dataset if isinstance(train, Subset) else train).classes
    return train, evals, classes
