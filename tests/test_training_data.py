"""Data loading for training: the three CIFAR-10 input forms, batch augmentation, layout errors."""

from __future__ import annotations

import pickle
import tarfile

import numpy as np
import pytest
import torch

from tests.conftest import TOY_CLASSES, make_image_folder
from training.data import DataError, TensorSplit, augment_cifar, cutout_, epoch_generator, load_cifar10, split_holdout
from training.imagefolder import check_image_folder

pytestmark = pytest.mark.full  # torch, or the export extra


def test_image_folder_and_tarball_give_the_same_tensors(toy_cifar, tmp_path):
    folder = load_cifar10(toy_cifar, tmp_path / "c1")
    archive = tmp_path / "toy.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(toy_cifar, arcname="cifar10")
    packed = load_cifar10(archive, tmp_path / "c2")
    assert folder["train"].classes == packed["train"].classes == sorted(TOY_CLASSES)
    for split in ("train", "test"):
        assert folder[split].images.shape == (len(folder[split].labels), 3, 32, 32)
        assert folder[split].images.dtype == torch.uint8
        assert torch.equal(folder[split].images, packed[split].images)
        assert torch.equal(folder[split].labels, packed[split].labels)
    assert len(folder["train"].labels) == 3 * 48 and len(folder["test"].labels) == 3 * 16
    # Second load comes from the cache file.
    assert list((tmp_path / "c1").glob("cifar10-*.pt"))
    again = load_cifar10(toy_cifar, tmp_path / "c1")
    assert torch.equal(again["train"].images, folder["train"].images)


def test_torchvision_python_batches(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    rng = np.random.default_rng(0)
    rows = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(4, 3072), dtype=np.uint8)
        labels = [int(x) for x in rng.integers(0, 10, size=4)]
        rows[name] = (data, labels)
        with open(root / name, "wb") as fh:
            pickle.dump({b"data": data, b"labels": labels}, fh)
    with open(root / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, fh)
    splits = load_cifar10(tmp_path, tmp_path / "cache")  # the parent dir is accepted too
    assert splits["train"].images.shape == (20, 3, 32, 32)
    assert splits["test"].classes[3] == "c3"
    expected = rows["data_batch_2"][0][1].reshape(3, 32, 32)
    assert np.array_equal(splits["train"].images[5].numpy(), expected)
    assert splits["train"].labels[5].item() == rows["data_batch_2"][1][1]


def test_layout_errors_say_what_was_expected(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_cifar10(tmp_path / "missing", tmp_path / "c")
    (tmp_path / "flat").mkdir()
    with pytest.raises(DataError, match="train/<class>"):
        load_cifar10(tmp_path / "flat", tmp_path / "c")
    root = make_image_folder(tmp_path / "empty", {"train": 1})
    for f in (root / "train" / "green").iterdir():
        f.unlink()
    with pytest.raises(DataError, match=r"empty class folder.*green"):
        load_cifar10(root, tmp_path / "c")
    with pytest.raises(DataError, match=r"empty class folder.*green"):
        check_image_folder(root)


def test_augment_crops_a_padded_window_and_flips():
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    out = augment_cifar(images, epoch_generator(0, 0))
    assert out.shape == images.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(images, (4, 4, 4, 4))
    flips = 0
    for i in range(64):
        windows = padded[i].unfold(1, 32, 1).unfold(2, 32, 1).permute(1, 2, 0, 3, 4)  # (9, 9, 3, 32, 32)
        plain = (windows == out[i]).flatten(2).all(-1).any()
        flipped = (windows == out[i].flip(-1)).flatten(2).all(-1).any()
        assert plain or flipped
        flips += bool(flipped and not plain)
    assert 10 < flips < 54  # about half are flipped
    again = augment_cifar(images, epoch_generator(0, 0))
    assert torch.equal(out, again)  # same (seed, epoch) -> same augmentation


def test_cutout_blanks_one_clipped_square_per_image():
    images = torch.randn(256, 3, 32, 32).add(10).contiguous(memory_format=torch.channels_last)  # no zeros of its own
    out = cutout_(images.clone(), 16, epoch_generator(0, 0))
    assert out.shape == images.shape and out.is_contiguous(memory_format=torch.channels_last)
    holes = out == 0
    assert torch.equal(holes[:, :1].expand_as(holes), holes)  # every channel of a pixel, or none
    hole = holes[:, 0]  # (N, H, W)
    rows, cols = hole.any(2), hole.any(1)  # (N, H), (N, W)
    for i in range(len(hole)):
        r, c = rows[i].nonzero().flatten(), cols[i].nonzero().flatten()
        assert 8 <= len(r) <= 16 and 8 <= len(c) <= 16  # a centre anywhere: at least half the square is inside
        assert torch.equal(r, torch.arange(r[0], r[-1] + 1)) and torch.equal(c, torch.arange(c[0], c[-1] + 1))
        assert hole[i].sum() == len(r) * len(c)  # one rectangle, the rest untouched
        assert torch.equal(out[i][:, ~hole[i]], images[i][:, ~hole[i]])
    assert (rows.sum(1) < 16).any() and (rows.sum(1) == 16).any()  # both clipped and whole squares occur
    assert torch.equal(out, cutout_(images.clone(), 16, epoch_generator(0, 0)))


def test_cutout_applies_to_training_batches_only(toy_cifar, tmp_path):
    data = load_cifar10(toy_cifar, tmp_path)["train"]
    blanked = lambda split: sum(int((x == 0).all(1).sum()) for x, _ in split.batches(0))  # noqa: E731
    with_cutout = TensorSplit(data, 16, torch.device("cpu"), train=True, cutout_size=8)
    assert blanked(with_cutout) >= len(data.labels) * 16  # at least a clipped 4x4 per image
    assert blanked(TensorSplit(data, 16, torch.device("cpu"), train=False, cutout_size=8)) == 0
    assert blanked(TensorSplit(data, 16, torch.device("cpu"), train=True)) < blanked(with_cutout) / 10


def test_tensor_split_shards_and_normalises(toy_cifar, tmp_path):
    data = load_cifar10(toy_cifar, tmp_path)["train"]
    train, val = split_holdout(data, 30, seed=0)
    assert len(train.labels) == 3 * 48 - 30 and len(val.labels) == 30
    shards = [TensorSplit(train, 16, torch.device("cpu"), train=True, rank=r, world_size=2) for r in range(2)]
    seen = [torch.cat([y for _, y in s.batches(3)]) for s in shards]
    assert len(seen[0]) == len(seen[1]) == 57
    x, _ = next(shards[0].batches(0))
    assert x.dtype == torch.float32 and abs(x.mean().item()) < 2
    with pytest.raises(DataError, match="val-split"):
        split_holdout(data, 10_000, seed=0)


def test_imagefolder_epochs_are_reproducible(tmp_path):
    from training.imagefolder import LoaderSplit, imagefolder_datasets

    root = make_image_folder(tmp_path / "tree", {"train": 6, "val": 2}, size=40)
    train, evals, classes = imagefolder_datasets(root, 32, 0, seed=0)
    # With workers, augmentation seeds come from the loader's generator, re-seeded per epoch.
    split = LoaderSplit(train, classes, 4, torch.device("cpu"), train=True, workers=1, seed=5)
    order = lambda epoch: torch.cat([y for _, y in split.batches(epoch)]).tolist()  # noqa: E731
    first = [x.sum().item() for x, _ in split.batches(2)]
    assert order(2) == order(2) and order(2) != order(3)
    assert [x.sum().item() for x, _ in split.batches(2)] == pytest.approx(first)  # same crops too
    assert set(evals) == {"test"} and len(split) == 5
