"""One SGD step (forward, loss, backward, update), eager or replayed from CUDA graphs.

Eager PyTorch launches every kernel from Python: a CIFAR ResNet's step at batch 128 is ~1,000 small kernels, and
on a GPU the step costs what launching them costs (resnet56 on an H200: 19-24 ms at batch 128, 29 ms at 512).
``CudaGraphTrainStep`` records the whole step once as a CUDA graph and replays it, so the GPU runs the kernels
back to back: 5.35 ms for the same step, bf16, with weights bit for bit those of eager steps
(docs/experiments/serving-log.md, 2026-12-04). The weights, momentum buffers and BatchNorm statistics are the
same tensors in both, so a run may switch between them at any step and its checkpoints do not change.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class TrainStep:
    """``step(images, labels, lr) -> (loss, logits)``: one optimisation step at learning rate ``lr``.

    ``images``: (N, 3, H, W) float on the model's device; ``labels``: (N,) int64. ``loss`` is the batch's mean
    loss (a 0-d tensor) and ``logits`` (N, num_classes), both detached.
    """

    def __init__(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, scaler, amp: torch.dtype | None, label_smoothing: float = 0.0
    ):
        self.model, self.optimizer, self.scaler = model, optimizer, scaler
        self.amp, self.label_smoothing = amp, label_smoothing

    def __call__(self, images: Tensor, labels: Tensor, lr: float) -> tuple[Tensor, Tensor]:
        return self.run(images, labels, lr)

    def run(self, images: Tensor, labels: Tensor, lr: float, cache_casts: bool = True) -> tuple[Tensor, Tensor]:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        # cache_casts=False inside a graph capture: autocast's cache of bf16 weight copies would outlive it.
        autocast = torch.autocast(
            images.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None, cache_enabled=cache_casts
        )
        with autocast:
            logits = self.model(images)  # (N, num_classes)
            loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach(), logits.detach()


def graph_support_problem(args, device: torch.device, world_size: int, amp) -> str | None:
    """Why ``--cuda-graphs`` cannot run with these (resolved) arguments, or None when it can. It reads only the
    flags, so train.py asks before it decodes any data."""
    if device.type != "cuda":
        return f"--cuda-graphs needs a CUDA device, not {device.type}"
    if world_size > 1:
        return "--cuda-graphs runs on one GPU (DDP's gradient hooks are not captured)"
    if args.compile:
        return "--cuda-graphs and --compile exclude each other (torch.compile(mode='reduce-overhead') graphs by itself)"
    if amp == torch.float16:
        return "--cuda-graphs needs --amp bf16: fp16's loss scaling reads the GPU every step"
    if amp is None:
        # bf16 graphs matched eager steps bit for bit; fp32 (TF32) ones did not (bench/train_step.py), and until
        # the eager-against-eager baseline says that is cuDNN's non-determinism, they are not trusted with a run.
        return (
            "--cuda-graphs needs --amp bf16: fp32 graphed steps ended 0.80-0.87 of the steps' change away from eager "
            "ones on an H200 (docs/experiments/serving-log.md), not yet told apart from cuDNN's non-determinism"
        )
    # The learning rate is recorded into the graph as a constant, so a graph serves only while it holds.
    if args.lr_schedule not in ("paper", "step") or (args.warmup_iters and args.warmup_mode != "constant"):
        return (
            "--cuda-graphs needs a piecewise-constant learning rate (--lr-schedule paper or step, constant warm-up); "
            f"{args.lr_schedule} with {args.warmup_mode} warm-up changes it every step"
        )
    return None


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    images: Tensor  # the static input the graph reads: (N, 3, H, W), filled before each replay
    labels: Tensor  # (N,)
    loss: Tensor  # the static outputs each replay overwrites
    logits: Tensor


class CudaGraphTrainStep(TrainStep):
    """The same step, captured once per batch shape and learning rate and then replayed.

    A new (shape, lr) first runs ``WARMUP_STEPS`` real steps eagerly on the capture stream (cuDNN's algorithm
    search, cuBLAS handles and the momentum buffers are made outside the capture), then is captured; the capture
    itself computes nothing, so its batch runs as the graph's first replay. A paper-recipe epoch has two shapes
    (352 batches: 351 of 128 and one of 72); the graphs of the previous learning rate are dropped when it changes.
    """

    WARMUP_STEPS = 3

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.stream = torch.cuda.Stream()
        self.graphs: dict[tuple, _Graph] = {}
        self.eager_steps: defaultdict[tuple, int] = defaultdict(int)
        self.lr: float | None = None
        self.captures = 0  # graphs recorded so far (bench/train_step.py checks that one was)

    def __call__(self, images: Tensor, labels: Tensor, lr: float) -> tuple[Tensor, Tensor]:
        if lr != self.lr:
            self.graphs.clear()
            self.eager_steps.clear()
            self.lr = lr
        key = (tuple(images.shape), images.stride(), tuple(labels.shape))
        if key not in self.graphs:
            if self.eager_steps[key] < self.WARMUP_STEPS:
                self.eager_steps[key] += 1
                return self._on_capture_stream(lambda: self.run(images, labels, lr), images, labels)
            self.graphs[key] = self._capture(images, labels, lr)
        graph = self.graphs[key]
        graph.images.copy_(images)
        graph.labels.copy_(labels)
        graph.graph.replay()
        return graph.loss, graph.logits

    def _on_capture_stream(self, fn, *inputs: Tensor):
        """Run ``fn`` on the capture stream, ordered after (and before) the current stream's work."""
        current = torch.cuda.current_stream()
        self.stream.wait_stream(current)
        with torch.cuda.stream(self.stream):
            outputs = fn()
        current.wait_stream(self.stream)
        for t in inputs:  # made on the current stream, used on the capture stream: not reused until both are done
            t.record_stream(self.stream)
        for t in outputs:
            t.record_stream(current)
        return outputs

    def _capture(self, images: Tensor, labels: Tensor, lr: float) -> _Graph:
        static_images, static_labels = torch.empty_like(images), torch.empty_like(labels)
        static_images.copy_(images)
        static_labels.copy_(labels)
        torch.cuda.current_stream().synchronize()
        # The gradients must be made inside the capture, in the graph's own memory pool, for every replay to
        # write to the same place.
        self.optimizer.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=self.stream):
            loss, logits = self.run(static_images, static_labels, lr, cache_casts=False)
        self.captures += 1
        return _Graph(graph, static_images, static_labels, loss, logits)
