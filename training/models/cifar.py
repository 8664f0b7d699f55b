"""CIFAR-10 networks of paper section 4.2 (Table 6): depth 6n+2, three stages on 32/16/8 maps.

Stem: 3x3 conv with 16 filters. Stages of n blocks with 16/32/64 filters, the first block of stages
2 and 3 subsampling by stride 2. Global average pool, then a ``num_classes``-way fc.
Shortcut option A by default (the paper's choice for CIFAR), so residual and plain nets have
exactly the same parameters.
"""

from __future__ import annotations

from torch import Tensor, nn

from .blocks import BasicBlock, Shortcut, init_weights, make_layer

# depth -> (n, paper's parameter count in millions, paper's Table 6 test error %)
CIFAR_DEPTHS = {20: (3, 0.27, 8.75), 32: (5, 0.46, 7.51), 44: (7, 0.66, 7.17), 56: (9, 0.85, 6.97), 110: (18, 1.7, 6.43)}


class CifarResNet(nn.Module):
    input_size = 32

    def __init__(
        self,
        depth: int,
        num_classes: int = 10,
        shortcut: Shortcut = "A",
        zero_init_residual: bool = False,
        width: int = 16,
    ) -> None:
        super().__init__()
        if (depth - 2) % 6 or depth < 8:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110, ...), got {depth}")
        n = (depth - 2) // 6
        self.depth, self.shortcut = depth, shortcut
        self.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = make_layer(BasicBlock, width, width, n, 1, shortcut, "v1.5")
        self.layer2 = make_layer(BasicBlock, width, 2 * width, n, 2, shortcut, "v1.5")
        self.layer3 = make_layer(BasicBlock, 2 * width, 4 * width, n, 2, shortcut, "v1.5")
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width, num_classes)
        init_weights(self, zero_init_residual)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))  # (N, 16, 32, 32)
        x = self.layer1(x)  # (N, 16, 32, 32)
        x = self.layer2(x)  # (N, 32, 16, 16)
        x = self.layer3(x)  # (N, 64, 8, 8)
        x = self.avgpool(x).flatten(1)  # (N, 64)
        return self.fc(x)  # (N, num_classes)
