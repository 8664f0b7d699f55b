"""Running train.py under torchrun: process-group setup, sums and buffers across ranks, and the end-of-run check
that every rank holds the same weights. Without torchrun (world size 1) the reductions are no-ops."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
import torch.distributed as dist

# Imported before any process group exists, on purpose: this module's functions take ``group=group.WORLD`` as
# default arguments, evaluated when it is first imported. DDP imports it (through torch._dynamo) when it is
# constructed; imported then, its defaults hold the default group for good, destroy_process_group cannot free it,
# and gloo's threads live on into interpreter shutdown: the likely cause of a rank that once in ~10 suites aborted
# at exit ("terminate called without an active exception"). Test: test_ddp_leaves_the_process_group_freed
import torch.distributed.nn.functional
from torch import nn

from training.checkpoint import load_checkpoint, save_atomic


def setup_distributed(device_flag: str) -> tuple[int, int, torch.device]:
    """(rank, world size, device). torchrun sets RANK/WORLD_SIZE/LOCAL_RANK; NCCL on GPUs, gloo on CPU."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = device_flag == "cuda" or (device_flag == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but no CUDA device is available")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if world_size > 1:
        dist.init_process_group("nccl" if use_cuda else "gloo")
        return dist.get_rank(), world_size, device
    return 0, 1, device


def weights_fingerprint(model: nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def sync_buffers(model: nn.Module) -> None:
    """Average BatchNorm running statistics across ranks.

    DDP keeps parameters identical, but each rank updates its running mean/var from its own batches after
    the last broadcast; averaging makes evaluation and the saved checkpoint the same on every rank.
    """
    if not dist.is_initialized():
        return
    for buf in model.buffers():
        if buf.is_floating_point():
            dist.all_reduce(buf, op=dist.ReduceOp.AVG)


def reduce_sums(values: list[float], device: torch.device) -> list[float]:
    if not dist.is_initialized():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def finish_distributed(model: nn.Module, last_checkpoint: Path | None) -> None:
    """Check every rank ended with the same weights, record their fingerprints in ``last_checkpoint`` (the main
    rank passes it, the others None), and leave the process group."""
    fingerprints = [None] * dist.get_world_size()
    dist.all_gather_object(fingerprints, weights_fingerprint(model))
    if last_checkpoint is not None and last_checkpoint.exists():
        ckpt = load_checkpoint(last_checkpoint)
        ckpt["rank_fingerprints"] = fingerprints
        save_atomic(ckpt, last_checkpoint)
    # Every rank leaves together, after the main one has written the fingerprints: a rank that tears gloo down
    # while its peer still talks to it can abort at exit ("terminate called without an active exception").
    dist.barrier()
    if len(set(fingerprints)) != 1:
        raise RuntimeError(f"DDP ranks hold different weights: {fingerprints}")
    dist.destroy_process_group()
