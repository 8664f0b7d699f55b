"""JPEG draft mode (DCT-domain downscaling) against full decoding, on real photos scaled up to ~12 megapixels.

    python docs/experiments/draft_decode.py --photos ../shared/data/photos --model models/cifar10-resnet56/1

For each photo: a 4000x3000-class JPEG is made from it; both paths decode + preprocess it for the given
model's manifest (and for ImageNet's 256/224); reports time per image, the largest input difference and,
with a model, the largest probability change and top-1 agreement. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

import numpy as np
from PIL import Image

from model_repository import Preprocess, read_manifest
from model_repository.postprocess import softmax
from model_repository.preprocess import preprocess_image
from service import imaging

IMAGENET = Preprocess(resize=256, crop=224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def full_decode(data: bytes, spec: Preprocess) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return preprocess_image(img.convert("RGB"), spec)


def big_jpeg(path: Path, megapixels: float = 12.0) -> bytes:
    with Image.open(path) as img:
        img = img.convert("RGB")
        scale = (megapixels * 1e6 / (img.width * img.height)) ** 0.5
        big = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    big.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def timed(fn, *args, repeat: int = 3):
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - t)
    return out, best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", type=Path, required=True)
    p.add_argument("--model", type=Path, help="a model version directory whose preprocessing and outputs to compare")
    p.add_argument("--limit", type=int, default=20)
    args = p.parse_args()
    specs = {"imagenet 256/224": (IMAGENET, None)}
    if args.model:
        import onnxruntime as ort

        manifest = read_manifest(args.model)
        session = ort.InferenceSession(str(args.model / manifest.file), providers=["CPUExecutionProvider"])
        specs[f"{manifest.name} {manifest.preprocess.resize}/{manifest.preprocess.crop}"] = (manifest.preprocess, session)
    photos = sorted(args.photos.iterdir())[: args.limit]
    for label, (spec, session) in specs.items():
        t_full = t_draft = 0.0
        worst_input = worst_prob = 0.0
        agree = 0
        for photo in photos:
            data = big_jpeg(photo)
            full, tf = timed(full_decode, data, spec)
            draft, td = timed(imaging.image_to_input, data, spec, 100_000_000)
            t_full, t_draft = t_full + tf, t_draft + td
            worst_input = max(worst_input, float(np.abs(full - draft).max()))
            if session is not None:
                logits = session.run(None, {"input": np.stack([full, draft])})[0]
                probs = softmax(logits)
                worst_prob = max(worst_prob, float(np.abs(probs[0] - probs[1]).max()))
                agree += int(probs[0].argmax() == probs[1].argmax())
        n = len(photos)
        line = (
            f"{label}: {n} photos at ~12 MP: full decode {1000 * t_full / n:.1f} ms/img, draft {1000 * t_draft / n:.1f} ms/img "
            f"({t_full / t_draft:.1f}x faster); max |input diff| {worst_input:.3f}"
        )
        if session is not None:
            line += f"; max |dprob| {worst_prob:.4f}; top-1 agreement {agree}/{n}"
        print(line)


if __name__ == "__main__":
    main()
