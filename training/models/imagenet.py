"""ImageNet networks of paper Table 1: ResNet-18/34 (basic blocks) and 50/101/152 (bottlenecks).

Same module names as torchvision's ``models/resnet.py``: with shortcut option B (the default) and
``variant="v1.5"`` a torchvision state dict loads with ``strict=True`` and gives the same outputs.
"""

from __future__ import annotations

from torch import Tensor, nn

from .blocks import BasicBlock, Block, Bottleneck, Shortcut, init_weights, make_layer

# depth -> (block, blocks per stage, paper's Table 1 multiply-adds in 1e9, torchvision params in millions)
IMAGENET_DEPTHS: dict[int, tuple[Block, tuple[int, int, int, int], float, float]] = {
    18: (BasicBlock, (2, 2, 2, 2), 1.8, 11.69),
    34: (BasicBlock, (3, 4, 6, 3), 3.6, 21.80),
    50: (Bottleneck, (3, 4, 6, 3), 3.8, 25.56),
    101: (Bottleneck, (3, 4, 23, 3), 7.6, 44.55),
    152: (Bottleneck, (3, 8, 36, 3), 11.3, 60.19),
}


class ResNet(nn.Module):
    input_size = 224

    def __init__(
        self,
        depth: int,
        num_classes: int = 1000,
        shortcut: Shortcut = "B",
        variant: str = "v1.5",
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        if depth not in IMAGENET_DEPTHS:
            raise ValueError(f"ImageNet ResNet depth must be one of {sorted(IMAGENET_DEPTHS)}, got {depth}")
        block, layers, _, _ = IMAGENET_DEPTHS[depth]
        self.depth, self.shortcut, self.variant = depth, shortcut, variant
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_planes = 64
        for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers)):
            stride = 1 if i == 0 else 2
            setattr(self, f"layer{i + 1}", make_layer(block, in_planes, planes, blocks, stride, shortcut, variant))
            in_planes = planes * block.expansion
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(in_planes, num_classes)
        init_weights(self, zero_init_residual)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (N, 64, 56, 56)
        x = self.layer1(x)  # (N, 64 * e, 56, 56), e = block expansion
        x = self.layer2(x)  # (N, 128 * e, 28, 28)
        x = self.layer3(x)  # (N, 256 * e, 14, 14)
        x = self.layer4(x)  # (N, 512 * e, 7, 7)
        x = self.avgpool(x).flatten(1)  # (N, 512 * e)
        return self.fc(x)  # (N, num_classes)
