"""JPEG decoders side by side: Pillow (as the service decodes, with draft), simplejpeg, OpenCV and PyTurboJPEG, each
decoding to an RGB uint8 array at the DCT scale the service's draft rule picks, on the photos and on ~12 MP
versions of them, with one and two threads. Interleaved rounds, best round per decoder (a shared, noisy machine).

    python docs/experiments/jpeg_decoders.py --photos ../shared/data/photos --resize 256 --rounds 3
    python docs/experiments/jpeg_decoders.py --photos ../shared/data/photos --resize 32      # the CIFAR models

Needs, besides the serve extra: ``pip install simplejpeg opencv-python-headless PyTurboJPEG`` and Debian's
``libturbojpeg0`` (PyTurboJPEG loads it). Results: docs/experiments/serving-log.md, "JPEG decoders".
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

from service.imaging import draft_size


def scale_denominator(width: int, height: int, resize: int) -> int:
    """The reduction the service's draft rule (``imaging.draft_size``) gives: 1, 2, 4 or 8."""
    target = draft_size(width, height, resize)
    return 1 if target is None else max(d for d in (1, 2, 4, 8) if min(width, height) / d >= min(target))


def pillow(data: bytes, denominator: int, resize: int) -> np.ndarray:
    img = Image.open(io.BytesIO(data))
    if denominator > 1:
        img.draft("RGB", draft_size(*img.size, resize))
    img.load()
    return np.asarray(img if img.mode == "RGB" else img.convert("RGB"))  # one copy into numpy, as the others make


def decoders(turbo_lib: str | None) -> dict:
    import cv2
    import simplejpeg
    from turbojpeg import TJPF_RGB, TurboJPEG

    cv2.setNumThreads(1)
    reduced = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}
    turbo = TurboJPEG(turbo_lib)

    def opencv(data: bytes, denominator: int, resize: int) -> np.ndarray:
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), reduced[denominator])
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def simple(data: bytes, denominator: int, resize: int) -> np.ndarray:
        h, w = simplejpeg.decode_jpeg_header(data)[:2]
        return simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=h // denominator, min_width=w // denominator)

    def pyturbo(data: bytes, denominator: int, resize: int) -> np.ndarray:
        return turbo.decode(data, pixel_format=TJPF_RGB, scaling_factor=(1, denominator))

    return {"Pillow (draft)": pillow, "simplejpeg": simple, "OpenCV": opencv, "PyTurboJPEG": pyturbo}


def enlarge(data: bytes, megapixels: float = 12.0) -> bytes:
    """A photo scaled up to about ``megapixels`` and saved as a JPEG (quality 90), as a phone would send it."""
    img = Image.open(io.BytesIO(data)).convert("RGB")
    factor = (megapixels * 1e6 / (img.width * img.height)) ** 0.5
    out = io.BytesIO()
    img.resize((round(img.width * factor), round(img.height * factor)), Image.Resampling.BICUBIC).save(out, "JPEG", quality=90)
    return out.getvalue()


def rate(decode, images: list[tuple[bytes, int]], resize: int, threads: int) -> float:
    """Images per second decoding every image once, on ``threads`` threads."""
    began = time.perf_counter()
    if threads == 1:
        for data, d in images:
            decode(data, d, resize)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda item: decode(item[0], item[1], resize), images))
    return len(images) / (time.perf_counter() - began)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", type=Path, required=True)
    p.add_argument("--resize", type=int, default=256, help="the model's resize (256: ImageNet models, 32: CIFAR)")
    p.add_argument("--large", type=int, default=20, help="how many photos to enlarge to ~12 MP")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--turbo-lib", default=None, help="libturbojpeg's path, if PyTurboJPEG does not find it")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    photos = [f.read_bytes() for f in sorted(args.photos.iterdir()) if f.suffix.lower() in (".jpg", ".jpeg")]
    sets = {"photos": photos, "12 MP": [enlarge(d) for d in photos[: args.large]]}
    table = decoders(args.turbo_lib)
    results: dict = {}
    for set_name, datas in sets.items():
        images = []
        for data in datas:
            w, h = Image.open(io.BytesIO(data)).size
            images.append((data, scale_denominator(w, h, args.resize)))
        for threads in (1, 2):
            best: dict[str, float] = {}
            for _ in range(args.rounds):  # interleaved: every decoder once per round
                for name, decode in table.items():
                    best[name] = max(best.get(name, 0.0), rate(decode, images, args.resize, threads))
            results[f"{set_name}, {threads} thread{'s' if threads > 1 else ''}"] = best
            pil = best["Pillow (draft)"]
            shown = ", ".join(f"{n} {v:.0f} img/s ({v / pil:.2f}x)" for n, v in best.items())
            print(f"{set_name}, {threads} thread(s), scale 1/{images[0][1]}: {shown}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"resize": args.resize, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
