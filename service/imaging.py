"""Bytes -> the network's input: type sniffing, size limits before decoding, robust decoding, preprocessing.

Decoding follows what a PyTorch pipeline does with ``Image.open(f).convert("RGB")``, plus EXIF orientation,
16-bit and float images scaled to 8 bits, the first frame of animations, and JPEG draft mode (DCT scaling)
when the image is at least twice the size the preprocessing needs.
"""

from __future__ import annotations

import io
import os
import struct
import warnings

import numpy as np
import simplejpeg
from PIL import Image, ImageOps, UnidentifiedImageError

from model_repository import Preprocess
from model_repository.preprocess import preprocess_image, resized_size

from .errors import InvalidInput, PayloadTooLarge, UnsupportedMedia

# Content types accepted as a raw body; multipart uploads and octet-stream bodies are sniffed instead.
IMAGE_CONTENT_TYPES = {
    "image/jpeg": "JPEG",
    "image/jpg": "JPEG",
    "image/pjpeg": "JPEG",
    "image/png": "PNG",
    "image/webp": "WEBP",
    "image/bmp": "BMP",
    "image/x-ms-bmp": "BMP",
    "image/gif": "GIF",
    "image/tiff": "TIFF",
}
# MPO: a JPEG carrying more pictures after the first (cameras and phones write them); decoded as its first picture.
SUPPORTED_FORMATS = frozenset(IMAGE_CONTENT_TYPES.values()) | {"MPO"}
JPEG_FORMATS = frozenset({"JPEG", "MPO"})

# JPEG draft decoding keeps at least this many times the resize target (measured in docs/service.md).
DRAFT_OVERSAMPLE = 2

# Image.open must not refuse big headers itself: our max_pixels check answers 413 first.
Image.MAX_IMAGE_PIXELS = None

DEFAULT_MAX_DECODED_BYTES = 128 * 1024 * 1024
# Bytes per pixel of a decoded image by Pillow mode (others, e.g. RGBA, CMYK, I, F: 4).
_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "LA": 2, "La": 2, "PA": 2, "RGB": 3, "YCbCr": 3, "LAB": 3, "HSV": 3}


# What Pillow raises on malformed input, besides its own errors: corrupt GIF frames raise IndexError, TIFF pages
# missing a required tag or naming an unknown compression KeyError or TypeError, EXIF entries whose numeric type
# holds text struct.error or TypeError (tests/test_imaging_fuzz.py mutates real images to find these). All come
# from the client's bytes: 400, not 500.
DECODER_FAILURES = (
    UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError, struct.error,
    ZeroDivisionError,
)  # fmt: skip


class LargeDecode(Exception):  # not an error: a request to decode elsewhere
    """Raised instead of decoding an image above ``large_above`` decoded bytes: the caller decodes it on the pool
    that bounds how many large decodes run at once (their memory), so small images never queue behind them.
    With ``baseline_jpeg_only``, also raised for anything but a baseline JPEG: what may decode on the event loop
    must cost in proportion to its size, and a progressive JPEG pays a pass over the image per scan."""


def decoded_bytes(img: Image.Image) -> int:
    """What decoding ``img`` (as opened, after any draft) allocates for its pixels."""
    width, height = img.size
    return width * height * _BYTES_PER_PIXEL.get(img.mode, 2 if img.mode.startswith("I;16") else 4)


def sniff_format(data: bytes) -> str | None:
    """The image format from its magic bytes, or None."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if data.startswith(b"BM"):
        return "BMP"
    if data.startswith((b"II*\x00", b"MM\x00*")):
        return "TIFF"
    return None


def describe_unsupported(data: bytes) -> str | None:
    """A name for well-known formats we do not take (415), or None for unrecognisable bytes (400)."""
    head = data[:512].lstrip()
    if head.startswith(b"%PDF"):
        return "PDF"
    if data[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypmsf1", b"ftyphevc", b"ftypavif"):
        return "HEIC/AVIF"
    lowered = head.lower()
    if lowered.startswith((b"<svg", b"<?xml")) or b"<svg" in lowered:
        return "SVG"
    try:
        text = data[:4096].decode("utf-8")
    except UnicodeDecodeError:
        return None
    if text and sum(ch.isprintable() or ch.isspace() for ch in text) / len(text) > 0.95:
        return "text"
    return None


def check_format(data: bytes) -> str:
    if not data:
        raise InvalidInput("empty body: send the image bytes")
    fmt = sniff_format(data)
    if fmt is None:
        other = describe_unsupported(data)
        if other:
            raise UnsupportedMedia(f"{other} is not a supported image type; send JPEG, PNG, WebP, BMP, GIF or TIFF")
        raise InvalidInput("the body is not a decodable image (unrecognised format)")
    return fmt


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        wide = np.asarray(img, dtype=np.uint32 if img.mode != "I" else np.int64)
        scale = 257 if img.mode.startswith("I;16") or wide.max(initial=0) > 255 else 1
        return Image.fromarray((wide // scale).clip(0, 255).astype(np.uint8), "L").convert("RGB")
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        arr = arr * 255 if arr.max(initial=0) <= 1.0 else arr
        return Image.fromarray(arr.clip(0, 255).astype(np.uint8), "L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    return img if img.mode == "RGB" else img.convert("RGB")  # convert() copies even an RGB image


def decode_image(
    data: bytes,
    spec: Preprocess,
    max_pixels: int,
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES,
    large_above: int | None = None,
    baseline_jpeg_only: bool = False,
) -> Image.Image:
    """Bytes -> an RGB PIL image, with the size checked from the header before any pixel is decoded: at most
    ``max_pixels`` pixels and ``max_decoded_bytes`` bytes decoded (pixels x bytes per pixel of the decoded mode, so
    a small file of 32-bit pixels counts for what it costs); above ``large_above`` bytes (or, with
    ``baseline_jpeg_only``, anything but a baseline JPEG), LargeDecode."""
    check_format(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if width * height > max_pixels:
                raise PayloadTooLarge(f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}")
            if img.format not in SUPPORTED_FORMATS:
                raise UnsupportedMedia(f"{img.format} is not a supported image type")
            if getattr(img, "n_frames", 1) > 1:
                img.seek(0)  # animated: the first frame
            drafted = draft_size(width, height, spec.resize) if img.format in JPEG_FORMATS else None
            if drafted is not None:
                img.draft("RGB", drafted)
            cost = decoded_bytes(img)
            if cost > max_decoded_bytes:
                raise PayloadTooLarge(
                    f"image is {width}x{height} {img.mode}: {cost} bytes decoded; the limit is {max_decoded_bytes}"
                )
            if large_above is not None and cost > large_above:
                raise LargeDecode(cost)
            if baseline_jpeg_only and (img.format not in JPEG_FORMATS or img.info.get("progressive")):
                raise LargeDecode(cost)
            fast = _decode_jpeg(data, img) if img.format == "JPEG" and img.mode == "RGB" else None
            if fast is not None:
                return fast
            img.load()
            # A JPEG without an EXIF segment has no orientation; exif_transpose would parse and copy for nothing
            # (~0.1 ms of a ~1.3 ms decode). Other formats keep orientation elsewhere (TIFF tags, PNG eXIf).
            if img.format not in JPEG_FORMATS or "exif" in img.info:
                ImageOps.exif_transpose(img, in_place=True)
            return _to_rgb(img)
    except (PayloadTooLarge, UnsupportedMedia, LargeDecode):
        raise
    except Image.DecompressionBombError as exc:
        raise PayloadTooLarge(str(exc)) from None
    except DECODER_FAILURES as exc:
        raise InvalidInput(f"the image could not be decoded (truncated or corrupt): {type(exc).__name__}: {exc}") from None


def draft_size(width: int, height: int, resize: int) -> tuple[int, int] | None:
    """The smallest size a JPEG may be DCT-scaled to (Pillow's ``draft`` then picks 1/2, 1/4 or 1/8 at least that
    large): DRAFT_OVERSAMPLE x what the resize needs, so the antialiased resize still averages over several source
    pixels (docs/service.md); None for images under twice that, which decode at full size."""
    if min(width, height) < 2 * DRAFT_OVERSAMPLE * resize:
        return None
    return resized_size(width, height, DRAFT_OVERSAMPLE * resize)


def _decode_jpeg(data: bytes, header: Image.Image) -> Image.Image | None:
    """A colour JPEG decoded by simplejpeg: the libjpeg-turbo Pillow wraps, at the size ``header`` (Pillow's, after
    any draft) gives and with Pillow's decoder settings, so the pixels are the same bit for bit (tests); it decodes
    ~1.2-1.4x faster, its whole decode without the GIL (docs/benchmarks.md, "JPEG decoding"). EXIF (or XMP)
    orientation is applied by the same ``exif_transpose``. None when simplejpeg refuses the file (corrupt,
    arithmetic coding, ...): Pillow then decodes it, or says why it cannot."""
    width, height = header.size
    try:
        pixels = simplejpeg.decode_jpeg(data, colorspace="RGB", min_width=width, min_height=height)  # (H, W, 3) uint8
    except ValueError:
        return None
    if pixels.shape[:2] != (height, width):  # another scale than Pillow's draft chose: keep Pillow's
        return None
    img = Image.fromarray(pixels, "RGB")
    if "exif" in header.info:  # as for Pillow's own decode below: a JPEG without EXIF has no orientation
        img.info.update({k: header.info[k] for k in ("exif", "xmp") if k in header.info})
        ImageOps.exif_transpose(img, in_place=True)
    return img


def decoding_worker_ready() -> int:
    """Run once in each decoding process at start-up (``preprocess_processes``): importing this module there
    (numpy, Pillow) happens before the first request, not during it. Returns the process id."""
    return os.getpid()


def image_to_input(
    data: bytes,
    spec: Preprocess,
    max_pixels: int,
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES,
    large_above: int | None = None,
    baseline_jpeg_only: bool = False,
) -> np.ndarray:
    """Bytes -> the (3, crop, crop) float32 network input the manifest's preprocessing defines."""
    decoded = decode_image(data, spec, max_pixels, max_decoded_bytes, large_above, baseline_jpeg_only)
    return preprocess_image(decoded, spec)
