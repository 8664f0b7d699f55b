"""Checkpoints, the contract between training and export: written atomically by train.py, loadable with
``torch.load(..., weights_only=True)``, read back as a typed :class:`Checkpoint` that rebuilds its network and
says how its inputs are evaluated (as torchvision's weight enums carry their transforms, labels and metrics)."""

from __future__ import annotations

import os
import random
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .models import get_model


def git_revision() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def rng_states() -> dict[str, Any]:
    states: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_atomic(obj: Any, path: str | Path) -> None:
    """Write to a temporary file in the same directory, fsync, then rename over ``path``.

    A crash at any point leaves either the old file or the new one, never a torn one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# What a released checkpoint keeps: weights, how to rebuild and feed the model, how it was trained. An allow-list, so
# training state added to last.pt later (optimizer, RNG, ...) stays out of releases until named here (resnet56:
# 3.4 MB instead of 6.8 MB).
RELEASE_KEYS = (
    "model",
    "arch",
    "model_opts",
    "num_classes",
    "classes",
    "mean",
    "std",
    "input_size",
    "args",
    "metrics",
    "epoch",
    "step",
    "git_revision",
)


def weights_only(ckpt: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint without optimizer and RNG state: the weights, the arguments, metrics and metadata."""
    return {k: v for k, v in ckpt.items() if k in RELEASE_KEYS}


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The raw dictionary (resuming needs its optimizer and RNG state); :meth:`Checkpoint.load` reads it typed."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return torch.load(path, map_location=map_location, weights_only=True)


class CheckpointError(ValueError):
    """A file that is not a train.py checkpoint (corrupt, foreign, or missing what rebuilds the network)."""


REQUIRED_KEYS = ("arch", "model", "num_classes", "classes", "mean", "std", "input_size")


def eval_resize(input_size: int) -> int:
    """The shorter side an evaluation image is resized to before the center crop of ``input_size``: 256 -> 224
    scaled to the crop (torchvision's ImageNet reference); CIFAR-sized inputs (<= 64) are used as they are."""
    return input_size if input_size <= 64 else round(input_size * 256 / 224)


@dataclass
class Checkpoint:
    """What train.py wrote (``raw``), typed: enough to rebuild the network and preprocess its inputs."""

    arch: str
    state_dict: dict[str, torch.Tensor]
    num_classes: int
    classes: list[str]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: int  # the evaluation crop
    model_opts: dict[str, Any] = field(default_factory=dict)  # constructor options besides depth and classes
    args: dict[str, Any] = field(default_factory=dict)  # the resolved train.py arguments
    metrics: list[dict[str, Any]] = field(default_factory=list)  # one entry per evaluated epoch
    git_revision: str = "unknown"
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
        """FileNotFoundError when absent; CheckpointError when not a train.py checkpoint."""
        try:
            raw = load_checkpoint(path, map_location)
        except FileNotFoundError:
            raise
        except Exception as exc:  # a corrupt or foreign file
            raise CheckpointError(f"{path}: not a training checkpoint ({exc})") from None
        return cls.from_dict(raw, str(path))

    @classmethod
    def from_dict(cls, raw: dict[str, Any], where: str = "checkpoint") -> Checkpoint:
        missing = [k for k in REQUIRED_KEYS if k not in raw] if isinstance(raw, dict) else list(REQUIRED_KEYS)
        if missing:
            raise CheckpointError(f"{where}: not a training/train.py checkpoint (missing {', '.join(missing)})")
        return cls(
            arch=raw["arch"],
            state_dict=raw["model"],
            num_classes=raw["num_classes"],
            classes=list(raw["classes"]),
            mean=tuple(raw["mean"]),
            std=tuple(raw["std"]),
            input_size=raw["input_size"],
            model_opts=dict(raw.get("model_opts") or {}),
            args=dict(raw.get("args") or {}),
            metrics=list(raw.get("metrics") or []),
            git_revision=raw.get("git_revision", "unknown"),
            raw=raw,
        )

    def build_model(self) -> nn.Module:
        """The network with these weights, in eval mode: the one place a checkpoint becomes a model."""
        model = get_model(self.arch, num_classes=self.num_classes, **self.model_opts)
        model.load_state_dict(self.state_dict)
        return model.eval()

    @property
    def eval_resize(self) -> int:
        return eval_resize(self.input_size)

    def to_dict(self, **training_state: Any) -> dict[str, Any]:
        """The dictionary train.py saves: these fields under their keys, plus ``training_state`` (optimizer,
        scaler, RNG, epoch, step, ...: what resuming needs and a release drops)."""
        return {
            "model": self.state_dict,
            "arch": self.arch,
            "num_classes": self.num_classes,
            "classes": list(self.classes),
            "mean": list(self.mean),
            "std": list(self.std),
            "input_size": self.input_size,
            "model_opts": self.model_opts,
            "args": self.args,
            "metrics": self.metrics,
            "git_revision": self.git_revision,
            **training_state,
        }

    def release(self) -> dict[str, Any]:
        """The weights-only dictionary a model version bundles (``weights_only``)."""
        return weights_only(self.raw)
