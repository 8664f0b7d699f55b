"""Name -> constructor registry: ``get_model("resnet56")``, ``get_model("plain18", num_classes=10)``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from .cifar import CIFAR_DEPTHS, CifarResNet
from .imagenet import IMAGENET_DEPTHS, ResNet


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str  # "cifar" or "imagenet"
    depth: int
    residual: bool

    @property
    def input_size(self) -> int:
        return 32 if self.family == "cifar" else 224

    @property
    def default_num_classes(self) -> int:
        return 10 if self.family == "cifar" else 1000


_REGISTRY: dict[str, ModelSpec] = {}
for _family, _depths in (("cifar", CIFAR_DEPTHS), ("imagenet", IMAGENET_DEPTHS)):
    for _depth in _depths:
        for _prefix, _residual in (("resnet", True), ("plain", False)):
            _name = f"{_prefix}{_depth}"
            _REGISTRY[_name] = ModelSpec(_name, _family, _depth, _residual)


def list_models(family: str | None = None) -> list[str]:
    """Registered names, CIFAR nets first, each family by depth, residual before plain."""
    specs = [s for s in _REGISTRY.values() if family is None or s.family == family]
    return [s.name for s in sorted(specs, key=lambda s: (s.family != "cifar", s.depth, not s.residual))]


def get_spec(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}") from None


def get_model(name: str, num_classes: int | None = None, **opts: Any) -> nn.Module:
    """Build a registered network.

    ``opts``: ``shortcut`` ("A"/"B"/"C"; residual nets only), ``zero_init_residual``, and for
    ImageNet nets ``variant`` ("v1.5" default, "v1" the paper's bottleneck).
    """
    spec = get_spec(name)
    if not spec.residual:
        if opts.get("shortcut") is not None:
            raise ValueError(f"{name} is a plain net: it has no shortcut to choose")
        opts["shortcut"] = None
    num_classes = spec.default_num_classes if num_classes is None else num_classes
    if spec.family == "cifar":
        if "variant" in opts:
            raise ValueError("variant applies to ImageNet bottleneck nets only")
        return CifarResNet(spec.depth, num_classes=num_classes, **opts)
    return ResNet(spec.depth, num_classes=num_classes, **opts)
