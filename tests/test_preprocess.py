"""The manifest's preprocessing (Pillow + numpy) against torchvision's eval transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from model_repository import Preprocess
from model_repository.preprocess import normalize, preprocess_image, resized_size

pytestmark = pytest.mark.full  # torch, or the export extra


@pytest.mark.parametrize(
    ("size", "resize", "crop"),
    [
        ((500, 375), 256, 224),
        ((375, 500), 232, 224),
        ((333, 517), 256, 224),
        ((32, 32), 32, 32),
        ((224, 224), 256, 224),
        ((640, 481), 36, 32),
    ],
)
def test_matches_torchvision_eval_transforms(size, resize, crop):
    rng = np.random.default_rng(sum(size))
    coarse = rng.integers(0, 256, size=(12, 16, 3), dtype=np.uint8)
    img = Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC)
    spec = Preprocess(resize=resize, crop=crop, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    reference = transforms.Compose(
        [
            transforms.Resize(resize, interpolation=transforms.InterpolationMode.BILINEAR),
            transforms.CenterCrop(crop),
            transforms.ToTensor(),
            transforms.Normalize(spec.mean, spec.std),
        ]
    )(img)
    ours = preprocess_image(img, spec)
    assert ours.shape == (3, crop, crop) and ours.dtype == np.float32
    # Back to 8-bit levels: resampling only the crop may move a value by one level, never more, and rarely.
    std = torch.tensor(spec.std)[:, None, None]
    level_diff = ((torch.from_numpy(ours) - reference) * std * 255).abs()
    assert level_diff.max() <= 1 + 1e-3
    assert (level_diff > 0.5).float().mean() <= 0.05
    if resized_size(*size, resize) == size:  # nothing to resample: exact
        torch.testing.assert_close(torch.from_numpy(ours), reference, rtol=0, atol=1e-5)


def test_normalize_table_is_the_arithmetic():
    spec = Preprocess(resize=32, crop=32, mean=(0.4914, 0.4822, 0.4465), std=(0.247, 0.2435, 0.2616))
    pixels = np.random.default_rng(0).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    expected = (pixels.transpose(2, 0, 1) / 255 - np.asarray(spec.mean)[:, None, None]) / np.asarray(spec.std)[:, None, None]
    np.testing.assert_allclose(normalize(pixels, spec), expected, rtol=0, atol=1e-5)


def test_resized_size_truncates_like_torchvision():
    assert resized_size(500, 375, 256) == (341, 256)
    assert resized_size(375, 500, 256) == (256, 341)
    assert resized_size(100, 100, 32) == (32, 32)
