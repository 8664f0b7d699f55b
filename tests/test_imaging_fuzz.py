"""Malformed images get typed errors only: real encoded images in every accepted format, mutated (bit flips,
truncation, header and EXIF edits) by hypothesis, and the cases an outside probe found, decode or raise
InvalidInput, PayloadTooLarge or UnsupportedMedia; nothing else escapes the decoder (it would be a 500)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from model_repository import Preprocess
from service.errors import InvalidInput, PayloadTooLarge, UnsupportedMedia
from service.imaging import image_to_input
from tests.conftest import ROOT

SPEC = Preprocess(resize=32, crop=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
TYPED = (InvalidInput, PayloadTooLarge, UnsupportedMedia)


def photo(size=(48, 40)) -> Image.Image:
    return Image.open(ROOT / "tests" / "fixtures" / "cifar10" / "cat_1.jpg").convert("RGB").resize(size)


def exif(**extra) -> Image.Exif:
    tags = Image.Exif()
    tags[0x0112] = 6  # Orientation: rotate to display
    tags[0x010F] = "camera"  # Make
    tags[0x011A] = 72.0  # XResolution (RATIONAL)
    for tag, value in extra.items():
        tags[int(tag, 16)] = value
    return tags


def encoded(fmt: str, **save) -> bytes:
    buf = io.BytesIO()
    img = photo()
    if fmt == "GIF":
        img.save(buf, "GIF", save_all=True, append_images=[img.rotate(90)], duration=50)
    elif fmt == "TIFF":
        img.save(buf, "TIFF", save_all=True, append_images=[img.convert("L")], exif=exif())
    elif fmt == "MPO":
        img.save(buf, "MPO", save_all=True, append_images=[img.rotate(90)])
    elif fmt == "BMP":
        img.save(buf, "BMP")
    else:
        img.save(buf, fmt, exif=exif(), **save)
    return buf.getvalue()


SEEDS = {fmt: encoded(fmt) for fmt in ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF", "MPO")}


def decode_or_typed_error(data: bytes) -> None:
    try:
        out = image_to_input(data, SPEC, 10**6)
    except TYPED:
        return
    assert out.shape == (3, 32, 32) and np.isfinite(out).all()


def test_every_seed_decodes():
    for fmt, data in SEEDS.items():
        assert image_to_input(data, SPEC, 10**6).shape == (3, 32, 32), fmt


def _flip(data: bytes, positions: list[int], bits: list[int]) -> bytes:
    out = bytearray(data)
    for p, b in zip(positions, bits, strict=False):
        out[p % len(out)] ^= 1 << b
    return bytes(out)


def _exif_offset(data: bytes) -> int:
    """Where the EXIF block's TIFF header starts (its byte order mark), or the middle of the file."""
    for mark in (b"II*\x00", b"MM\x00*"):
        at = data.find(mark, 2)
        if at > 0:
            return at
    return len(data) // 2


@st.composite
def mutated(draw) -> bytes:
    fmt = draw(st.sampled_from(sorted(SEEDS)))
    data = SEEDS[fmt]
    kind = draw(st.sampled_from(["flip", "truncate", "header", "exif", "splice"]))
    if kind == "flip":
        n = draw(st.integers(1, 8))
        return _flip(
            data,
            draw(st.lists(st.integers(0, len(data) - 1), min_size=n, max_size=n)),
            draw(st.lists(st.integers(0, 7), min_size=n, max_size=n)),
        )
    if kind == "truncate":
        return data[: draw(st.integers(1, len(data) - 1))]
    if kind == "header":  # overwrite bytes among the first 64 (sizes, modes, chunk lengths)
        at = draw(st.integers(4, 63))
        return data[:at] + draw(st.binary(min_size=1, max_size=4)) + data[at + 4 :]
    if kind == "exif":  # overwrite bytes inside the EXIF block (tag types, counts, offsets)
        at = _exif_offset(data) + draw(st.integers(0, 80))
        return data[:at] + draw(st.binary(min_size=1, max_size=6)) + data[at + 6 :]
    other = SEEDS[draw(st.sampled_from(sorted(SEEDS)))]  # one format's head on another's tail
    cut = draw(st.integers(8, min(len(data), len(other)) - 1))
    return data[:cut] + other[cut:]


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_images_raise_only_typed_errors(data):
    decode_or_typed_error(data)


TRUNCATED_GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff"
    + 3 * b"!\xf9\x04\x00\x01\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00"
    + b";"
)[:60]


def _exif_numeric_tag_with_text() -> bytes:
    """A little-endian EXIF block: Orientation 6 and XResolution (RATIONAL) whose value is 8 bytes of text."""
    entries = [(0x0112, 3, 1, (6).to_bytes(4, "little")), (0x011A, 5, 1, (38).to_bytes(4, "little"))]
    ifd = len(entries).to_bytes(2, "little") + b"".join(
        t.to_bytes(2, "little") + k.to_bytes(2, "little") + n.to_bytes(4, "little") + v for t, k, n, v in entries
    )
    return b"II*\x00" + (8).to_bytes(4, "little") + ifd + (0).to_bytes(4, "little") + b"notanumb"


def _tiff_second_page(tag: int | None, value: int | None) -> bytes:
    """A two-page TIFF whose second page lacks ImageWidth (tag None) or has tag set to value."""
    from PIL import TiffImagePlugin

    first, second = photo(), photo().convert("L")
    info = TiffImagePlugin.ImageFileDirectory_v2()
    if tag is not None:
        info[tag] = value
    buf = io.BytesIO()
    first.save(buf, "TIFF", save_all=True, append_images=[second])
    data = bytearray(buf.getvalue())
    if tag is None:  # rename the second page's ImageWidth tag (0x0100) to an unknown one
        second_ifd = data.rfind((0x0100).to_bytes(2, "little") + (3).to_bytes(2, "little"))
        data[second_ifd : second_ifd + 2] = (0xBEEF).to_bytes(2, "little")
    else:  # the second page's Compression (0x0103) gets an unknown scheme
        at = data.rfind((0x0103).to_bytes(2, "little") + (3).to_bytes(2, "little"))
        data[at + 8 : at + 10] = value.to_bytes(2, "little")
    return bytes(data)


def _with_exif(fmt: str) -> bytes:
    buf = io.BytesIO()
    photo().save(buf, fmt, exif=_exif_numeric_tag_with_text())
    return buf.getvalue()


FOUND = {
    "truncated gif": TRUNCATED_GIF,
    "png exif numeric tag holding text": _with_exif("PNG"),
    "webp exif numeric tag holding text": _with_exif("WEBP"),
    "jpeg exif numeric tag holding text": _with_exif("JPEG"),
    "tiff second page without ImageWidth": _tiff_second_page(None, None),
    "tiff second page unknown compression": _tiff_second_page(0x0103, 60000),
}


@pytest.mark.parametrize("data", FOUND.values(), ids=FOUND.keys())
def test_what_the_probe_found_is_a_typed_error_or_decodes(data):
    decode_or_typed_error(data)
