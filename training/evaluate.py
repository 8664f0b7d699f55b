"""Top-1/top-5 error of a checkpoint: ``python training/evaluate.py --checkpoint C --dataset cifar10 --data-dir D``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from training.checkpoint import Checkpoint, CheckpointError
from training.data import DataError, TensorSplit, load_cifar10
from training.imagefolder import LoaderSplit, imagefolder_datasets
from training.train import evaluate, resolve_amp


def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, Checkpoint]:
    """The network a training checkpoint holds (eval mode) and the checkpoint itself."""
    ckpt = Checkpoint.load(path, device)
    return ckpt.build_model().to(device), ckpt


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--dataset", choices=["cifar10", "imagefolder"], default="cifar10")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--split", default="test", help="which split to evaluate (test or val)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--amp", choices=["auto", "none", "bf16", "fp16"], default="none")
    p.add_argument("--cache-dir")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    args = p.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        model, ckpt = load_model(args.checkpoint, device)
        if args.dataset == "cifar10":
            splits = load_cifar10(args.data_dir, args.cache_dir)
            if args.split not in splits:
                raise DataError(f"{args.data_dir} has no {args.split} split (has: {', '.join(splits)})")
            split = TensorSplit(splits[args.split], args.batch_size, device, train=False, mean=ckpt.mean, std=ckpt.std)
        else:
            _, evals, _ = imagefolder_datasets(Path(args.data_dir), ckpt.input_size, 0, 0)
            if "test" not in evals:
                raise DataError(f"{args.data_dir} has no val/ or test/ directory")
            split = LoaderSplit(evals["test"], ckpt.classes, args.batch_size, device, train=False, workers=args.workers)
    except (DataError, FileNotFoundError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    result = evaluate(model, split, resolve_amp(args.amp, device), channels_last=False)
    result = {
        "checkpoint": str(args.checkpoint),
        "images": split.num_samples,
        "top1_error": result["error"],
        "top5_error": result["top5_error"],
        "loss": result["loss"],
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{ckpt.arch} on {result['images']} {args.split} images: top-1 error {result['top1_error']:.2f}%, "
            f"top-5 error {result['top5_error']:.2f}% (top-1 accuracy {100 - result['top1_error']:.2f}%)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
