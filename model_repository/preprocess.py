"""The manifest's preprocessing, executable with Pillow and numpy only (shared by export and service).

Matches torchvision's eval transforms on PIL images: ``Resize(resize)`` (shorter side, antialiased) ->
``CenterCrop(crop)`` -> ``ToTensor()`` -> ``Normalize(mean, std)``.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from .manifest import Preprocess

INTERPOLATION = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}


def resized_size(width: int, height: int, shorter: int) -> tuple[int, int]:
    """(w, h) with the shorter side ``shorter`` and the longer scaled and truncated, as torchvision does."""
    if width <= height:
        return shorter, int(shorter * height / width)
    return int(shorter * width / height), shorter


def resize_and_crop(img: Image.Image, spec: Preprocess) -> Image.Image:
    """An RGB PIL image -> the ``crop`` x ``crop`` RGB image the network sees."""
    target = resized_size(*img.size, spec.resize)
    if img.size != target:
        img = img.resize(target, INTERPOLATION[spec.interpolation])
    width, height = img.size
    top = round((height - spec.crop) / 2.0)  # Python rounds half to even, like torchvision
    left = round((width - spec.crop) / 2.0)
    return img.crop((left, top, left + spec.crop, top + spec.crop))


def normalize(pixels: np.ndarray, spec: Preprocess) -> np.ndarray:
    """(H, W, 3) uint8 -> (3, H, W) float32, scaled to [0, 1] then normalised."""
    scale = np.float32(1 / 255)
    mean = np.asarray(spec.mean, dtype=np.float32)[:, None, None]
    inv_std = (1 / np.asarray(spec.std, dtype=np.float32))[:, None, None]
    chw = pixels.transpose(2, 0, 1).astype(np.float32) * scale
    return (chw - mean) * inv_std


def preprocess_image(img: Image.Image, spec: Preprocess) -> np.ndarray:
    """An RGB PIL image -> the (3, crop, crop) float32 network input."""
    return normalize(np.asarray(resize_and_crop(img, spec), dtype=np.uint8), spec)
