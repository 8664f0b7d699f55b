"""Where an exported network comes from: a training checkpoint, torchvision's pretrained weights, or random weights.

Each source gives the network (ours, from ``training.models``), its labels, preprocessing, metrics and
provenance: everything the manifest records besides the graph.
"""

from __future__ import annotations

import shlex
import socket
import urllib.error
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from model_repository import Preprocess, sha256_file
from training.checkpoint import Checkpoint, CheckpointError, eval_resize
from training.config import command_line
from training.data import CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD
from training.models import IMAGENET_DEPTHS, get_model, get_spec

from .errors import ExportError

TORCHVISION_ARCHS = tuple(f"resnet{d}" for d in IMAGENET_DEPTHS)


@dataclass
class ModelSource:
    model: nn.Module
    arch: str
    labels: list[str]
    preprocess: Preprocess
    metrics: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    checkpoint: dict[str, Any] | None = None  # weights-only training checkpoint, when the source is one


def eval_preprocess(input_size: int, mean, std) -> Preprocess:
    """The manifest's preprocessing for a network evaluated at ``input_size`` (training.checkpoint.eval_resize)."""
    return Preprocess(resize=eval_resize(input_size), crop=input_size, interpolation="bilinear", mean=tuple(mean), std=tuple(std))


def from_checkpoint(path: str | Path) -> ModelSource:
    path = Path(path)
    try:
        ckpt = Checkpoint.load(path)
    except (FileNotFoundError, CheckpointError) as exc:
        raise ExportError(str(exc)) from None
    source = {"type": "checkpoint", **provenance(path, ckpt), "training_args": ckpt.args}
    initialised_from = starting_point(ckpt.args)
    if initialised_from:
        source["init_from"] = initialised_from
    return ModelSource(
        model=ckpt.build_model(),
        arch=ckpt.arch,
        labels=ckpt.classes,
        preprocess=eval_preprocess(ckpt.input_size, ckpt.mean, ckpt.std),
        metrics=final_metrics(ckpt),
        source=source,
        checkpoint=ckpt.release(),
    )


def final_metrics(ckpt: Checkpoint) -> dict[str, Any]:
    """Top-1/top-5 accuracy on the evaluated splits, epoch and step after a checkpoint's last epoch."""
    history = ckpt.metrics
    metrics: dict[str, Any] = {}
    if history:
        last = history[-1]
        for split in ("test", "val"):
            if f"{split}_error" in last:
                metrics[f"{split}_top1_accuracy"] = round(100 - last[f"{split}_error"], 4)
                metrics[f"{split}_top5_accuracy"] = round(100 - last[f"{split}_top5_error"], 4)
        metrics.update(epoch=last["epoch"], step=last["step"])
    return metrics


def provenance(path: Path, ckpt: Checkpoint) -> dict[str, Any]:
    """What identifies a training checkpoint and retrains it: path, sha256, git revision, train.py command."""
    entry = {"checkpoint": str(path), "checkpoint_sha256": sha256_file(path), "git_revision": ckpt.git_revision}
    if ckpt.args:  # the flags that retrain this checkpoint, resolved so later default changes don't matter
        entry["training_command"] = "python training/train.py " + shlex.join(command_line(ckpt.args))
    return entry


def starting_point(args: dict[str, Any], depth: int = 0) -> dict[str, Any] | None:
    """Where a run trained with ``--init-from`` started: that checkpoint's sha256, command, result and its own
    starting point, so a manifest names every run needed to retrain the model. The path is read as train.py
    was given it (relative to where it ran, the repository root); a file gone since is recorded as missing."""
    init = args.get("init_from")
    if not init:
        return None
    entry: dict[str, Any] = {"checkpoint": str(init)}
    if args.get("deepen"):
        entry["deepened_to"] = args["deepen"]
    path = Path(init)
    if not path.is_file() or depth >= 8:  # depth: a guard against a chain that loops through overwritten files
        entry["found_at_export"] = False
        return entry
    try:
        parent = Checkpoint.load(path)
    except CheckpointError:
        entry["found_at_export"] = False  # replaced by something that is not a checkpoint
        return entry
    entry.update(provenance(path, parent))
    if "test_top1_accuracy" in (metrics := final_metrics(parent)):
        entry["test_top1_accuracy"] = metrics["test_top1_accuracy"]
    earlier = starting_point(parent.args, depth + 1)
    if earlier:
        entry["init_from"] = earlier
    return entry


def torchvision_weights(arch: str, weights_name: str | None):
    from torchvision.models import get_model_weights

    if arch not in TORCHVISION_ARCHS:
        raise ExportError(f"--torchvision takes one of {', '.join(TORCHVISION_ARCHS)}, got {arch!r}")
    enum = get_model_weights(arch)
    name = weights_name or "IMAGENET1K_V1"
    try:
        return enum[name]
    except KeyError:
        raise ExportError(f"{arch} has no torchvision weights {name!r}; choose one of {', '.join(enum.__members__)}") from None


def from_torchvision(arch: str, weights_name: str | None = None, weights_file: str | Path | None = None) -> ModelSource:
    """Our network with torchvision's pretrained weights: from ``weights_file``, else downloaded.

    Labels and preprocessing come from the weights' metadata, which needs no download.
    """
    weights = torchvision_weights(arch, weights_name)
    if weights_file is not None:
        weights_file = Path(weights_file)
        if not weights_file.is_file():
            raise ExportError(f"--weights-file {weights_file} does not exist")
        state = torch.load(weights_file, map_location="cpu", weights_only=True)
        provenance = {"weights_file": str(weights_file), "weights_sha256": sha256_file(weights_file)}
    else:
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(15)  # offline machines: fail fast instead of hanging
        try:
            state = weights.get_state_dict(progress=False, check_hash=True)
        except (urllib.error.URLError, OSError, RuntimeError) as exc:
            raise ExportError(
                f"could not download {weights} ({exc}). Without a network, pass --weights-file PATH: a local copy of "
                f"{weights.url.rsplit('/', 1)[-1]} (the state dict of {arch} {weights.name})"
            ) from None
        finally:
            socket.setdefaulttimeout(previous)
        provenance = {"weights_url": weights.url}
    model = get_model(arch)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ExportError(f"the weights do not fit {arch}: {str(exc)[:500]}") from None
    transforms = weights.transforms()
    preprocess = Preprocess(
        resize=transforms.resize_size[0],
        crop=transforms.crop_size[0],
        interpolation=transforms.interpolation.value,
        mean=tuple(transforms.mean),
        std=tuple(transforms.std),
    )
    reported = weights.meta.get("_metrics", {}).get("ImageNet-1K", {})
    metrics = {
        "imagenet1k_top1_accuracy_reported": reported.get("acc@1"),
        "imagenet1k_top5_accuracy_reported": reported.get("acc@5"),
    }
    source = {"type": "torchvision", "weights": f"{type(weights).__name__}.{weights.name}", **provenance}
    return ModelSource(model.eval(), arch, list(weights.meta["categories"]), preprocess, metrics, source)


def from_random(arch: str, num_classes: int | None = None, seed: int = 0) -> ModelSource:
    """Our network with random weights, for load tests and benchmarks (speed does not depend on the weights).

    BatchNorm gets random running statistics too, so outputs differ clearly between inputs. Labels are
    ``class0``.. (predictions mean nothing); preprocessing is the family's (CIFAR 32x32, ImageNet 256 -> 224).
    """
    try:
        spec = get_spec(arch)
    except (KeyError, ValueError) as exc:
        raise ExportError(str(exc)) from None
    num_classes = num_classes or spec.default_num_classes
    torch.manual_seed(seed)
    model = get_model(arch, num_classes=num_classes).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 2.0)
                m.running_mean.uniform_(-0.2, 0.2)
    cifar = spec.family == "cifar"
    preprocess = eval_preprocess(spec.input_size, *((CIFAR10_MEAN, CIFAR10_STD) if cifar else (IMAGENET_MEAN, IMAGENET_STD)))
    return ModelSource(
        model,
        arch,
        [f"class{i}" for i in range(num_classes)],
        preprocess,
        metrics={"note": "random weights: for load tests and benchmarks, predictions mean nothing"},
        source={"type": "random", "seed": seed},
    )
