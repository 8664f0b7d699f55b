"""Checkpoints: written atomically, loadable with ``torch.load(..., weights_only=True)``."""

from __future__ import annotations

import os
import random
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import torch


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
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return torch.load(path, map_location=map_location, weights_only=True)
