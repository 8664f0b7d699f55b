"""Top-1 agreement and accuracy of reduced precision against fp32, on the full CIFAR-10 test set and on photos.

    python bench/precision_agreement.py --model models/cifar10-resnet56/1 --int8-model /tmp/q/cifar10-resnet56-int8/1 \\
        --cifar ../shared/data/cifar10-jpeg.tar.gz --photos ../shared/data/photos

Runs the exported graph on CPU/fp32 (the reference), OpenVINO/fp32, OpenVINO/bf16 and, if given, an int8 export,
through the service's own runtime and preprocessing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from common import DEFAULT_PHOTOS, manifest_of, photo_bytes

from service.backends import Backend
from service.imaging import image_to_input
from service.runtime import OrtRunner
from training.data import load_cifar10


def run_all(runner: OrtRunner, x: np.ndarray, batch: int = 256) -> np.ndarray:
    return np.concatenate([runner(x[i : i + batch]) for i in range(0, len(x), batch)])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="an fp32 version directory")
    p.add_argument("--int8-model", type=Path, help="an int8 export of the same network")
    p.add_argument("--cifar", type=Path, help="CIFAR-10 source for the test split (any form training/train.py takes)")
    p.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    manifest = manifest_of(args.model)
    spec = manifest.preprocess
    runs = {
        "CPU/fp32": (args.model, Backend("CPUExecutionProvider", "fp32")),
        "OpenVINO/fp32": (args.model, Backend("OpenVINOExecutionProvider", "fp32")),
        "OpenVINO/bf16": (args.model, Backend("OpenVINOExecutionProvider", "bf16")),
    }
    if args.int8_model:
        runs["OpenVINO/int8"] = (args.int8_model, Backend("OpenVINOExecutionProvider", "int8"))
    runners = {k: OrtRunner(d / manifest_of(d).file, manifest_of(d), b) for k, (d, b) in runs.items()}
    sets: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
    if args.cifar:
        test = load_cifar10(args.cifar)["test"]
        mean = np.asarray(spec.mean, np.float32)[None, :, None, None]
        std = np.asarray(spec.std, np.float32)[None, :, None, None]
        x = (test.images.numpy().astype(np.float32) / 255 - mean) / std  # 32x32 already: resize/crop are identities
        sets[f"CIFAR-10 test ({len(x)} images)"] = (x, test.labels.numpy())
    photos = photo_bytes(args.photos)
    sets[f"photos ({len(photos)})"] = (np.stack([image_to_input(d, spec, 100_000_000) for d in photos]), None)
    results = {}
    for name, (x, labels) in sets.items():
        outputs = {k: run_all(r, x) for k, r in runners.items()}
        reference = outputs["CPU/fp32"].argmax(1)
        for k, out in outputs.items():
            top1 = out.argmax(1)
            row = {"top1_agreement_with_fp32_pct": float(100 * (top1 == reference).mean())}
            if labels is not None:
                row["accuracy_pct"] = float(100 * (top1 == labels).mean())
            results.setdefault(name, {})[k] = row
            print(f"{name:<28} {k:<14} " + "  ".join(f"{m} {v:.2f}" for m, v in row.items()), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
