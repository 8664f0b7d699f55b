"""``python -m training.models``: every registered network with measured parameters and multiply-adds."""

from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from .cifar import CIFAR_DEPTHS
from .imagenet import IMAGENET_DEPTHS
from .registry import get_model, get_spec, list_models


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: torch.nn.Module, input_size: int) -> int:
    """Multiply-adds of one forward pass on one image (FLOPs / 2, as the paper counts them)."""
    model.eval()
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, input_size, input_size))
    return counter.get_total_flops() // 2


def paper_reference(name: str) -> str:
    spec = get_spec(name)
    if spec.family == "cifar":
        _, params_m, error = CIFAR_DEPTHS[spec.depth]
        return f"{params_m}M params, {error}% error (Table 6)" if spec.residual else "Figure 6 (plain)"
    _, _, gmacs, params_m = IMAGENET_DEPTHS[spec.depth]
    return f"{gmacs}e9 FLOPs (Table 1), torchvision {params_m}M" if spec.residual else "Figure 4 (plain)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--family", choices=["cifar", "imagenet"], help="only this family")
    args = parser.parse_args()
    header = f"{'model':<10} {'input':>7} {'shortcut':>8} {'params':>10} {'mult-adds':>11}  paper"
    print(header)
    print("-" * len(header))
    for name in list_models(args.family):
        spec = get_spec(name)
        model = get_model(name)
        shortcut = getattr(model, "shortcut", None) or "none"
        params = count_params(model)
        macs = count_macs(model, spec.input_size)
        size = f"{spec.input_size}x{spec.input_size}"
        print(f"{name:<10} {size:>7} {shortcut:>8} {params / 1e6:>9.2f}M {macs / 1e9:>10.3f}G  {paper_reference(name)}")


if __name__ == "__main__":
    main()
