"""Training throughput on this machine: the real CIFAR pipeline against the same step on synthetic tensors.

    python bench/train_throughput.py --data-dir ../shared/data/cifar10-jpeg.tar.gz --models resnet20 resnet56

For each model, alternates timed windows of (a) the training step fed by the real pipeline (uint8 cache ->
on-device pad/crop/flip -> normalise) and (b) the identical step on one batch already in memory, and reports
images/s of each and the pipeline's share of the step time. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from training.data import TensorSplit, load_cifar10
from training.models import get_model
from training.step import TrainStep


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--models", nargs="+", default=["resnet20", "resnet56"])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=20, help="steps per timed window")
    p.add_argument("--rounds", type=int, default=3, help="alternating windows per mode")
    p.add_argument("--amp", choices=["bf16", "none"], default="bf16")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    amp = torch.bfloat16 if args.amp == "bf16" else None
    data = load_cifar10(args.data_dir)["train"]
    split = TensorSplit(data, args.batch_size, torch.device("cpu"), train=True)
    results = []
    for name in args.models:
        model = get_model(name).to(memory_format=torch.channels_last).train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
        train_step = TrainStep(model, opt, torch.amp.GradScaler("cpu", enabled=False), amp)

        def step(x, y, train_step=train_step):
            train_step(x.contiguous(memory_format=torch.channels_last), y, 0.01)

        fixed_x, fixed_y = next(split.batches(0))
        for _ in range(3):
            step(fixed_x, fixed_y)  # warm-up
        times = {"pipeline": 0.0, "synthetic": 0.0}
        epoch = 0
        for _ in range(args.rounds):
            batches = split.batches(epoch := epoch + 1)
            t = time.perf_counter()
            for _ in range(args.steps):
                step(*next(batches))
            times["pipeline"] += time.perf_counter() - t
            t = time.perf_counter()
            for _ in range(args.steps):
                step(fixed_x, fixed_y)
            times["synthetic"] += time.perf_counter() - t
        images = args.rounds * args.steps * args.batch_size
        row = {
            "model": name,
            "pipeline_img_s": images / times["pipeline"],
            "synthetic_img_s": images / times["synthetic"],
            "pipeline_overhead_pct": 100 * (times["pipeline"] - times["synthetic"]) / times["pipeline"],
        }
        results.append(row)
        print(
            f"{name:<10} pipeline {row['pipeline_img_s']:7.1f} img/s  synthetic {row['synthetic_img_s']:7.1f} img/s  "
            f"data-pipeline overhead {row['pipeline_overhead_pct']:5.1f}% of step time"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
