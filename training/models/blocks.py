"""Residual building blocks of He et al., "Deep Residual Learning for Image Recognition" (2015).

Module and parameter names follow torchvision's ``models/resnet.py`` (``conv1``, ``bn1``, ...,
``downsample.0``/``downsample.1``) so ImageNet state dicts load unchanged.

The shortcut of a block is one of (paper section 3.3, "Identity vs. Projection Shortcuts"):

* ``"A"``: identity; where the shape changes, zero-padded extra channels and stride-2 subsampling
  (:class:`PadShortcut`, no parameters).
* ``"B"``: identity; a 1x1 projection (conv + BN) only where the shape changes.
* ``"C"``: a 1x1 projection on every block.
* ``None``: no shortcut at all: the *plain* network the paper compares against.
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

Shortcut = Literal["A", "B", "C"] | None
SHORTCUTS = ("A", "B", "C")


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class PadShortcut(nn.Module):
    """Option A: parameter-free identity that subsamples by ``stride`` and zero-pads new channels.

    (N, C_in, H, W) -> (N, C_out, H/stride, W/stride); the C_out - C_in extra channels are zeros.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        if out_planes < in_planes:
            raise ValueError(f"option A cannot reduce channels ({in_planes} -> {out_planes})")
        self.in_planes, self.out_planes, self.stride = in_planes, out_planes, stride

    def forward(self, x: Tensor) -> Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        extra = self.out_planes - self.in_planes
        if extra:
            # F.pad pads the last dims first: (W_left, W_right, H_top, H_bottom, C_front, C_back).
            x = F.pad(x, (0, 0, 0, 0, 0, extra))
        return x

    def extra_repr(self) -> str:
        return f"{self.in_planes}, {self.out_planes}, stride={self.stride}"


def make_shortcut(shortcut: Shortcut, in_planes: int, out_planes: int, stride: int) -> nn.Module | None:
    """The module added to a block's output, or ``None`` for a plain identity (or no shortcut)."""
    if shortcut is None:
        return None
    if shortcut not in SHORTCUTS:
        raise ValueError(f"shortcut must be one of {SHORTCUTS} or None, got {shortcut!r}")
    changes_shape = stride != 1 or in_planes != out_planes
    if shortcut == "C" or (shortcut == "B" and changes_shape):
        return nn.Sequential(conv1x1(in_planes, out_planes, stride), nn.BatchNorm2d(out_planes))
    if shortcut == "A" and changes_shape:
        return PadShortcut(in_planes, out_planes, stride)
    return None


class BasicBlock(nn.Module):
    """Two 3x3 convolutions (paper Figure 5 left): ResNet-18/34 and every CIFAR net."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: Shortcut = "B", variant: str = "v1.5") -> None:
        super().__init__()
        del variant  # only the bottleneck has a stride placement to choose
        out_planes = planes * self.expansion
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, out_planes)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.residual = shortcut is not None
        self.downsample = make_shortcut(shortcut, in_planes, out_planes, stride)
        self.stride = stride

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (paper Figure 5 right): ResNet-50/101/152.

    ``variant="v1.5"`` (torchvision's default) puts the stride on the 3x3 convolution;
    ``variant="v1"`` puts it on the first 1x1, as in the paper.
    """

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: Shortcut = "B", variant: str = "v1.5") -> None:
        super().__init__()
        if variant not in ("v1", "v1.5"):
            raise ValueError(f"variant must be 'v1' or 'v1.5', got {variant!r}")
        out_planes = planes * self.expansion
        stride_1x1, stride_3x3 = (stride, 1) if variant == "v1" else (1, stride)
        self.conv1 = conv1x1(in_planes, planes, stride_1x1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride_3x3)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, out_planes)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.relu = nn.ReLU(inplace=True)
        self.residual = shortcut is not None
        self.downsample = make_shortcut(shortcut, in_planes, out_planes, stride)
        self.stride = stride

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


Block = type[BasicBlock] | type[Bottleneck]


def make_layer(block: Block, in_planes: int, planes: int, blocks: int, stride: int, shortcut: Shortcut, variant: str) -> nn.Sequential:
    """One stage: ``blocks`` blocks, the first of which may subsample by ``stride``."""
    layers = [block(in_planes, planes, stride, shortcut, variant)]
    in_planes = planes * block.expansion
    layers += [block(in_planes, planes, 1, shortcut, variant) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


def init_weights(model: nn.Module, zero_init_residual: bool = False) -> None:
    """He (fan_out) init for convolutions, BN weight 1 / bias 0 (paper section 3.4).

    ``zero_init_residual`` zeroes the last BN weight of each residual branch so every block starts
    as an identity (Goyal et al., 2017); plain nets have no branch to zero and ignore it.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if zero_init_residual:
        for m in model.modules():
            if isinstance(m, (BasicBlock, Bottleneck)) and m.residual:
                nn.init.zeros_(m.last_bn.weight)

