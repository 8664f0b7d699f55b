"""Export a checkpoint or torchvision weights to a validated ONNX model in a model repository.

    python -m export --checkpoint runs/x/best.pt --name cifar10-resnet56 --repository models
    python -m export --torchvision resnet50 --weights IMAGENET1K_V2 --weights-file resnet50.pth \\
        --name resnet50 --repository models
    python -m export --random resnet50 --name resnet50-load-test --parity-images photos/   # random weights
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from export.errors import ExportError
from export.pipeline import ExportOptions, export_to_repository, summary
from export.sources import TORCHVISION_ARCHS, from_checkpoint, from_random, from_torchvision
from training.models import list_models


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", type=Path, help="a training/train.py checkpoint (last.pt or best.pt)")
    src.add_argument("--torchvision", choices=TORCHVISION_ARCHS, help="our network with torchvision's pretrained weights")
    src.add_argument(
        "--random",
        choices=list_models(),
        metavar="ARCH",
        help="our network with random weights, for load tests and benchmarks (no training, no download)",
    )
    p.add_argument("--num-classes", type=int, help="--random: output classes (default 10 for CIFAR nets, 1000 otherwise)")
    p.add_argument("--seed", type=int, default=0, help="--random: the seed of the weights (default 0)")
    p.add_argument("--weights", help="which torchvision weights (default IMAGENET1K_V1; e.g. IMAGENET1K_V2)")
    p.add_argument("--weights-file", type=Path, help="a local copy of those weights (a state dict), instead of downloading")
    p.add_argument("--name", required=True, help="model name in the repository, e.g. cifar10-resnet56")
    p.add_argument("--repository", type=Path, default=Path("models"), help="model repository root (default: models)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (>= 17; default 18)")
    p.add_argument("--fp16", action="store_true", help="fp16 weights and activations, float32 input/output")
    p.add_argument(
        "--int8", action="store_true", help="int8 static quantization (QDQ, per-channel), calibrated on --calibration-images"
    )
    p.add_argument("--calibration-images", type=Path, help="a folder of real images for --int8 calibration (first 64)")
    p.add_argument("--static-batch", type=int, help="a fixed batch size (for TensorRT engines); default: dynamic batch")
    p.add_argument("--simplify", action="store_true", help="run onnxslim and keep the result if it shrinks the graph")
    p.add_argument("--parity-images", type=Path, help="a folder of real photos for the PyTorch/ONNX Runtime parity check")
    p.add_argument("--no-parity", action="store_true", help="skip the parity check (discouraged; recorded in the manifest)")
    p.add_argument(
        "--with-checkpoint",
        action="store_true",
        help="also write the weights-only training checkpoint into the version (checkpoint.pt; --checkpoint sources)",
    )
    p.add_argument(
        "--evaluation-images",
        type=Path,
        help="held-out images (an ImageFolder, or a .tar.gz of one: its test/ split) for the model's evaluation set, "
        "on which the service scores every version before promoting it",
    )
    p.add_argument("--evaluation-count", type=int, default=1000, help="images in the evaluation set (class-stratified)")
    p.add_argument("--evaluation-seed", type=int, default=0, help="the seed of the evaluation set's sample")
    p.add_argument("--replace-evaluation", action="store_true", help="replace a different evaluation set the model has")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    # The flags named as ExportOptions' fields, plus --no-parity (negative: parity is on unless it is given).
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(ExportOptions) if hasattr(args, f.name)}
    options = ExportOptions(**given, parity=not args.no_parity)
    try:
        if args.checkpoint and (args.weights or args.weights_file):
            raise ExportError("--weights and --weights-file go with --torchvision, not --checkpoint")
        if args.num_classes is not None and not args.random:
            raise ExportError("--num-classes goes with --random")
        if args.checkpoint:
            source = from_checkpoint(args.checkpoint)
        elif args.random:
            source = from_random(args.random, args.num_classes, args.seed)
        else:
            source = from_torchvision(args.torchvision, args.weights, args.weights_file)
        path = export_to_repository(source, args.repository, args.name, options)
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(summary(path))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
