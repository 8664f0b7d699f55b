"""The constructed solution of paper section 3.1: a deeper net that computes what a shallower one does.

"There exists a solution by construction to the deeper model: the added layers are identity mapping, and the
other layers are copied from the learned shallower model." ``deepen(resnet20, 56)`` appends (56 - 20) / 6 = 6
blocks to each of the three stages:

* residual nets: each added block's residual branch ends in a BatchNorm with weight 0 and bias 0, so the
  branch outputs 0 and the block computes ReLU(x) = x on the non-negative activations it receives;
* plain nets: each added block is conv(identity 3x3 kernel) -> BN(pass-through) -> ReLU, twice: exact identities
  in eval mode (BN's running statistics are set so that it passes its input through unchanged).
"""

from __future__ import annotations

import torch
from torch import nn

from .blocks import BasicBlock
from .cifar import CifarResNet


@torch.no_grad()
def _identity_conv_(conv: nn.Conv2d) -> None:
    """A 3x3 kernel that copies channel c to channel c: (C, C, 3, 3) zeros with 1 at [c, c, 1, 1]."""
    conv.weight.zero_()
    channels = conv.weight.shape[0]
    conv.weight[torch.arange(channels), torch.arange(channels), 1, 1] = 1.0


@torch.no_grad()
def _pass_through_bn_(bn: nn.BatchNorm2d) -> None:
    """Eval-mode BN that returns its input: (x - 0) / sqrt((1 - eps) + eps) * 1 + 0."""
    bn.running_mean.zero_()
    bn.running_var.fill_(1.0 - bn.eps)
    bn.weight.fill_(1.0)
    bn.bias.zero_()


@torch.no_grad()
def _make_identity_(block: BasicBlock) -> None:
    if block.residual:
        block.bn2.weight.zero_()
        block.bn2.bias.zero_()
        return
    for conv, bn in ((block.conv1, block.bn1), (block.conv2, block.bn2)):
        _identity_conv_(conv)
        _pass_through_bn_(bn)


@torch.no_grad()
def deepen(model: CifarResNet, depth: int) -> CifarResNet:
    """A ``depth``-layer copy of a CIFAR ``model`` whose added blocks are identities (paper section 3.1)."""
    if not isinstance(model, CifarResNet):
        raise TypeError("deepen takes a CIFAR net (resnet20/32/..., plain20/...)")
    if depth <= model.depth or (depth - 2) % 6:
        raise ValueError(f"depth must be 6n+2 and larger than {model.depth}, got {depth}")
    deeper = CifarResNet(depth, num_classes=model.fc.out_features, shortcut=model.shortcut, width=model.conv1.out_channels)
    # The stem, the fc and the first n blocks of every stage have the same names in both nets.
    missing, unexpected = deeper.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected, unexpected
    n = (model.depth - 2) // 6
    for stage in (deeper.layer1, deeper.layer2, deeper.layer3):
        for block in list(stage)[n:]:
            _make_identity_(block)
    return deeper.train(model.training)
