"""The manifest's preprocessing, executable with Pillow and numpy only (shared by export and service).

Matches torchvision's eval transforms on PIL images: ``Resize(resize)`` (shorter side, antialiased) ->
``CenterCrop(crop)`` -> ``ToTensor()`` -> ``Normalize(mean, std)``, to within one 8-bit level before
normalising (``resize_and_crop`` resamples only the crop).
"""

from __future__ import annotations

import functools

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
    """An RGB PIL image -> the ``crop`` x ``crop`` RGB image the network sees.

    Only the pixels the centre crop keeps are resampled (Pillow's ``box``: the crop's region of the source,
    filtered with the same support as a full resize, pixels outside the box included). A 500x375 photo to
    256 -> 224 costs about 60% of a full resize then crop; the result is the same image to within one 8-bit
    level (the box's scale differs from the full resize's in the last bits of a float, which moves a few
    percent of values across a rounding boundary).
    """
    width, height = img.size
    target_w, target_h = resized_size(width, height, spec.resize)
    top = round((target_h - spec.crop) / 2.0)  # Python rounds half to even, like torchvision
    left = round((target_w - spec.crop) / 2.0)
    resample = INTERPOLATION[spec.interpolation]
    if (width, height) != (target_w, target_h) and left >= 0 and top >= 0:
        sx, sy = width / target_w, height / target_h
        box = (left * sx, top * sy, min((left + spec.crop) * sx, width), min((top + spec.crop) * sy, height))
        return img.resize((spec.crop, spec.crop), resample, box=box)
    if (width, height) != (target_w, target_h):
        img = img.resize((target_w, target_h), resample)
    return img.crop((left, top, left + spec.crop, top + spec.crop))  # a crop larger than the image pads with 0


@functools.lru_cache(maxsize=16)
def _normalize_table(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """(3, 256) float32: ``(level / 255 - mean) / std`` for each 8-bit level, per channel."""
    levels = np.arange(256, dtype=np.float32)[None, :] * np.float32(1 / 255)
    mean_ = np.asarray(mean, dtype=np.float32)[:, None]
    inv_std = 1 / np.asarray(std, dtype=np.float32)[:, None]
    return (levels - mean_) * inv_std


def normalize(pixels: np.ndarray, spec: Preprocess) -> np.ndarray:
    """(H, W, 3) uint8 -> (3, H, W) float32, scaled to [0, 1] then normalised.

    A table lookup per channel (256 entries) instead of float arithmetic on every value: 3x faster at 224x224.
    """
    table = _normalize_table(tuple(spec.mean), tuple(spec.std))
    out = np.empty((3, *pixels.shape[:2]), dtype=np.float32)
    for c in range(3):
        np.take(table[c], pixels[:, :, c], out=out[c])
    return out


def preprocess_image(img: Image.Image, spec: Preprocess) -> np.ndarray:
    """An RGB PIL image -> the (3, crop, crop) float32 network input."""
    return normalize(np.asarray(resize_and_crop(img, spec), dtype=np.uint8), spec)
