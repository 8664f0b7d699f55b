"""Where one image's preprocessing time goes: decode, resize + crop, normalise, and the whole ``image_to_input``.

One thread, mean over the photos, best of ``--rounds``. Run it at two commits to compare implementations:

    python bench/preprocess_cost.py --resize 256 --crop 224          # ImageNet models
    python bench/preprocess_cost.py --resize 32 --crop 32            # the CIFAR models (draft decoding applies)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from common import DEFAULT_PHOTOS, photo_bytes

from model_repository import Preprocess
from model_repository.preprocess import normalize, resize_and_crop
from service.imaging import decode_image, image_to_input

NO_PIXEL_LIMIT = 10**9


def per_item_ms(fn, items: list, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for item in items:
            fn(item)
        best = min(best, (time.perf_counter() - start) / len(items))
    return best * 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    p.add_argument("--limit", type=int, default=50, help="how many photos")
    p.add_argument("--resize", type=int, default=256)
    p.add_argument("--crop", type=int, default=224)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    spec = Preprocess(resize=args.resize, crop=args.crop, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    photos = photo_bytes(args.photos, args.limit)
    images = [decode_image(d, spec, NO_PIXEL_LIMIT) for d in photos]
    crops = [np.asarray(resize_and_crop(img, spec), dtype=np.uint8) for img in images]
    result = {
        "resize": args.resize,
        "crop": args.crop,
        "photos": len(photos),
        "decode_ms": per_item_ms(lambda d: decode_image(d, spec, NO_PIXEL_LIMIT), photos, args.rounds),
        "resize_and_crop_ms": per_item_ms(lambda img: resize_and_crop(img, spec), images, args.rounds),
        "normalize_ms": per_item_ms(lambda c: normalize(c, spec), crops, args.rounds),
        "image_to_input_ms": per_item_ms(lambda d: image_to_input(d, spec, NO_PIXEL_LIMIT), photos, args.rounds),
    }
    print("  ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items()))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
