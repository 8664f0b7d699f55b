"""Colour JPEGs decode through simplejpeg (service/imaging.py ``_decode_jpeg``): the same pixels, bit for bit, as
Pillow's decode with the same draft and EXIF orientation, and Pillow for every JPEG simplejpeg does not take."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from model_repository import Preprocess
from model_repository.preprocess import resized_size
from service import imaging
from service.errors import InvalidInput
from tests.conftest import ROOT

CIFAR = Preprocess(resize=32, crop=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
IMAGENET = Preprocess(resize=256, crop=224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
FIXTURES = sorted((ROOT / "tests" / "fixtures" / "cifar10").glob("*.jpg"))


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """A smooth colour image with some texture, like a photo as far as a JPEG encoder is concerned."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize((width, height), Image.Resampling.BICUBIC)
    noise = rng.integers(-12, 13, (height, width, 3))
    return Image.fromarray((np.asarray(coarse, dtype=np.int64) + noise).clip(0, 255).astype(np.uint8))


def jpeg(img: Image.Image, **save) -> bytes:
    out = io.BytesIO()
    img.save(out, "JPEG", **save)
    return out.getvalue()


def pillow_decode(data: bytes, spec: Preprocess) -> np.ndarray:
    """What the service decoded before simplejpeg: Pillow with the same draft rule and EXIF orientation (written out
    here, not imported, so the reference does not move with the code it checks)."""
    img = Image.open(io.BytesIO(data))
    w, h = img.size
    if min(w, h) >= 2 * imaging.DRAFT_OVERSAMPLE * spec.resize:
        img.draft("RGB", resized_size(w, h, imaging.DRAFT_OVERSAMPLE * spec.resize))
    img.load()
    if "exif" in img.info:
        ImageOps.exif_transpose(img, in_place=True)
    return np.asarray(img.convert("RGB"))


@pytest.fixture
def fast_calls(monkeypatch):
    """The images simplejpeg decoded (so a test sees the fast path taken, or not)."""
    calls = []
    real = imaging.simplejpeg.decode_jpeg

    def counting(data, **kw):
        calls.append(len(data))
        return real(data, **kw)

    monkeypatch.setattr(imaging.simplejpeg, "decode_jpeg", counting)
    return calls


CASES = {
    "cifar fixture": lambda: [Path(f).read_bytes() for f in FIXTURES],
    "4:2:0": lambda: [jpeg(photo(500, 375), quality=85)],
    "4:2:2": lambda: [jpeg(photo(480, 360, 1), quality=90, subsampling=1)],
    "4:4:4": lambda: [jpeg(photo(333, 250, 2), quality=95, subsampling=0)],
    "progressive": lambda: [jpeg(photo(640, 480, 3), quality=80, progressive=True)],
    "odd sizes": lambda: [jpeg(photo(1001, 777, 4), quality=75), jpeg(photo(129, 2050, 5))],
    "large, drafted 1/4 and 1/8": lambda: [jpeg(photo(4000, 3000, 6), quality=90)],
}


@pytest.mark.parametrize("spec", [CIFAR, IMAGENET], ids=["resize 32", "resize 256"])
@pytest.mark.parametrize("case", CASES)
def test_the_fast_path_gives_pillows_pixels_bit_for_bit(case, spec, fast_calls):
    for data in CASES[case]():
        got = np.asarray(imaging.decode_image(data, spec, 10**9, 10**10))
        assert np.array_equal(got, pillow_decode(data, spec))
    assert len(fast_calls) == len(CASES[case]())  # every one went through simplejpeg


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_pillow_applies_it(orientation, fast_calls):
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = jpeg(photo(300, 200, orientation), exif=exif)
    got = np.asarray(imaging.decode_image(data, IMAGENET, 10**9))
    assert np.array_equal(got, pillow_decode(data, IMAGENET)) and fast_calls
    assert got.shape[:2] == ((300, 200) if orientation in (5, 6, 7, 8) else (200, 300))


@pytest.mark.parametrize("mode", ["L", "CMYK"])
def test_grey_and_cmyk_jpegs_stay_with_pillow(mode, fast_calls):
    data = jpeg(photo(200, 150).convert(mode))
    got = imaging.decode_image(data, IMAGENET, 10**9)
    assert got.mode == "RGB" and np.array_equal(np.asarray(got), np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    assert fast_calls == []


def test_a_corrupt_jpeg_is_still_a_400_and_one_simplejpeg_refuses_goes_to_pillow(monkeypatch):
    data = jpeg(photo(300, 200))
    with pytest.raises(InvalidInput):
        imaging.decode_image(data[: len(data) // 2], IMAGENET, 10**9)

    def refuses(data, **kw):
        raise ValueError("simulated: arithmetic coding")

    monkeypatch.setattr(imaging.simplejpeg, "decode_jpeg", refuses)
    assert np.array_equal(np.asarray(imaging.decode_image(data, IMAGENET, 10**9)), pillow_decode(data, IMAGENET))
