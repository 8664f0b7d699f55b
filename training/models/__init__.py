"""The networks of He et al., "Deep Residual Learning for Image Recognition" (2015)."""

from .blocks import SHORTCUTS, BasicBlock, Bottleneck, PadShortcut
from .cifar import CIFAR_DEPTHS, CifarResNet
from .deepen import deepen
from .imagenet import IMAGENET_DEPTHS, ResNet
from .registry import ModelSpec, get_model, get_spec, list_models

__all__ = [
    "SHORTCUTS",
    "BasicBlock",
    "Bottleneck",
    "PadShortcut",
    "CIFAR_DEPTHS",
    "CifarResNet",
    "deepen",
    "IMAGENET_DEPTHS",
    "ResNet",
    "ModelSpec",
    "get_model",
    "get_spec",
    "list_models",
]
