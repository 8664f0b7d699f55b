"""The manifest's preprocessing (Pillow + numpy) against torchvision's eval transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from model_repository import Preprocess
from model_repository.preprocess import preprocess_image, resized_size


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
    torch.testing.assert_close(torch.from_numpy(ours), reference, rtol=0, atol=1e-5)


def test_resized_size_truncates_like_torchvision():
    assert resized_size(500, 375, 256) == (341, 256)
    assert resized_size(375, 500, 256) == (256, 341)
    assert resized_size(100, 100, 32) == (32, 32)
