"""Time one training step of a CIFAR ResNet, eager against CUDA-graph replay, and check that both train alike.

    python bench/train_step.py --device cuda --models resnet44 resnet56 resnet110 --amp bf16 none --json OUT.json

For each model and precision: ms per step at batch 128 (the paper's), eager and (on CUDA) graphed, on random
images; and ``graph_vs_eager``: after --check-steps identical steps from the same weights, the largest parameter
difference between a graphed and an eager run relative to the largest change the eager steps made (a graph that
failed to update the weights gives about 1), beside ``eager_vs_eager``, the same for two eager runs (what cuDNN's
non-deterministic algorithms alone make of it).
On a CPU only the eager step is timed.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from training.models import get_model
from training.step import CudaGraphTrainStep, TrainStep

AMPS = {"bf16": torch.bfloat16, "none": None}


def make_step(kind, model, amp):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    scaler = torch.amp.GradScaler(enabled=False)
    return kind(model, optimizer, scaler, amp)


def batches(n: int, batch: int, device: torch.device, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n`` random (images (batch, 3, 32, 32) channels-last, labels (batch,)) pairs on ``device``."""
    g = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(batch, 3, 32, 32, generator=g).to(device).contiguous(memory_format=torch.channels_last),
            torch.randint(0, 10, (batch,), generator=g).to(device),
        )
        for _ in range(n)
    ]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def ms_per_step(step, data, repeats: int, device: torch.device) -> float:
    for images, labels in data:  # warm-up: cuDNN's search, and for graphs the eager steps and the capture
        step(images, labels, 0.1)
    sync(device)
    start = time.perf_counter()
    for i in range(repeats):
        images, labels = data[i % len(data)]
        step(images, labels, 0.1)
    sync(device)
    return 1000 * (time.perf_counter() - start) / repeats


def divergence(name: str, amp, device: torch.device, steps: int) -> dict[str, float]:
    """After ``steps`` identical steps from the same weights: how far a graphed run and a second eager run end
    from an eager one (largest parameter difference over the largest change the eager steps made). The second
    eager run is the baseline: what cuDNN's non-deterministic algorithms alone make of the same steps."""
    torch.manual_seed(0)
    eager_model = get_model(name, num_classes=10).to(device, memory_format=torch.channels_last)
    models = {"eager": eager_model, "graph": copy.deepcopy(eager_model), "eager_again": copy.deepcopy(eager_model)}
    start = [p.detach().clone() for p in eager_model.parameters()]
    steps_by = {k: make_step(CudaGraphTrainStep if k == "graph" else TrainStep, m, amp) for k, m in models.items()}
    for images, labels in batches(steps, 128, device, seed=1):
        for step in steps_by.values():
            step(images, labels, 0.1)
    sync(device)
    if steps_by["graph"].captures == 0:
        raise RuntimeError("no graph was captured: raise --check-steps above CudaGraphTrainStep.WARMUP_STEPS")
    moved = max((a - b).abs().max().item() for a, b in zip(eager_model.parameters(), start, strict=True))

    def apart(other: nn.Module) -> float:
        return max((a - b).abs().max().item() for a, b in zip(eager_model.parameters(), other.parameters(), strict=True)) / moved

    return {"graph_vs_eager": apart(models["graph"]), "eager_vs_eager": apart(models["eager_again"])}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["resnet56"])
    p.add_argument("--amp", nargs="+", choices=sorted(AMPS), default=["bf16"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=50, help="timed steps per measurement")
    p.add_argument("--check-steps", type=int, default=8, help="steps of the graph-against-eager check (CUDA)")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    data = batches(4, 128, device)
    results = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "torch": torch.__version__, "rows": []}
    for name in args.models:
        for amp_name in args.amp:
            amp = AMPS[amp_name]
            row = {"model": name, "amp": amp_name}
            kinds = {"eager": TrainStep} | ({"graph": CudaGraphTrainStep} if device.type == "cuda" else {})
            for label, kind in kinds.items():
                torch.manual_seed(0)
                model = get_model(name, num_classes=10).to(device, memory_format=torch.channels_last)
                row[f"{label}_ms"] = round(ms_per_step(make_step(kind, model, amp), data * 2, args.repeats, device), 3)
            if device.type == "cuda":
                row |= divergence(name, amp, device, args.check_steps)
            results["rows"].append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
