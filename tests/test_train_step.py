"""training/step.py: the eager step, which settings --cuda-graphs refuses, evaluation batch size, and the step
benchmark on the CPU. (The graphed step itself needs a GPU: bench/train_step.py checks it against eager steps
there; docs/experiments/serving-log.md has the numbers.)"""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from tests.conftest import ROOT, train_argv
from training.data import ImageTensors, TensorSplit
from training.models import get_model
from training.step import TrainStep, graph_support_problem
from training.train import evaluate

pytestmark = pytest.mark.full  # torch

CUDA = torch.device("cuda")  # graph_support_problem only looks at the device's type: no GPU needed


def flags(**changes):
    """train.py's resolved flags that graph_support_problem reads: the paper's schedule, no warm-up."""
    return SimpleNamespace(**({"compile": False, "lr_schedule": "paper", "warmup_iters": 0, "warmup_mode": "constant"} | changes))


@pytest.mark.parametrize(
    ("args", "device", "world", "amp", "refused_for"),
    [
        (flags(), torch.device("cpu"), 1, torch.bfloat16, "needs a CUDA device"),
        (flags(), CUDA, 2, torch.bfloat16, "one GPU"),
        (flags(compile=True), CUDA, 1, torch.bfloat16, "--compile"),
        (flags(), CUDA, 1, torch.float16, "fp16's loss scaling"),
        (flags(), CUDA, 1, None, "fp32 graphed steps"),
        (flags(lr_schedule="cosine"), CUDA, 1, torch.bfloat16, "piecewise-constant"),
        (flags(warmup_iters=400, warmup_mode="linear"), CUDA, 1, torch.bfloat16, "linear warm-up"),
        (flags(), CUDA, 1, torch.bfloat16, None),
        (flags(warmup_iters=400), CUDA, 1, torch.bfloat16, None),
        (flags(lr_schedule="step"), CUDA, 1, torch.bfloat16, None),
    ],
)
def test_which_settings_cuda_graphs_refuses(args, device, world, amp, refused_for):
    problem = graph_support_problem(args, device, world, amp)
    if refused_for is None:
        assert problem is None
    else:
        assert refused_for in problem


def test_cuda_graphs_on_a_cpu_is_refused_with_a_clear_error(toy_cifar, tmp_path):
    argv = train_argv(toy_cifar, tmp_path / "run", "--epochs", "1", "--device", "cpu", "--cuda-graphs")
    proc = subprocess.run([sys.executable, str(ROOT / "training" / "train.py"), *argv], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "--cuda-graphs needs a CUDA device, not cpu" in proc.stderr
    assert not (tmp_path / "run" / "last.pt").exists()


def test_the_eager_step_updates_the_weights_and_returns_detached_outputs():
    torch.manual_seed(0)
    model = get_model("resnet20", num_classes=10).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    step = TrainStep(model, optimizer, torch.amp.GradScaler("cpu", enabled=False), None)
    images, labels = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    before = [p.detach().clone() for p in model.parameters()]
    losses = [step(images, labels, 0.05)[0].item() for _ in range(5)]
    loss, logits = step(images, labels, 0.05)
    assert logits.shape == (8, 10) and not loss.requires_grad and not logits.requires_grad
    assert optimizer.param_groups[0]["lr"] == 0.05
    assert losses[-1] < losses[0]  # five steps on one batch: it is learnt
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_the_evaluation_batch_size_does_not_change_the_result():
    torch.manual_seed(0)
    data = ImageTensors(
        torch.randint(0, 256, (50, 3, 32, 32), dtype=torch.uint8), torch.randint(0, 10, (50,)), list("abcdefghij")
    )
    model = get_model("resnet20", num_classes=10)
    model.train()(torch.randn(16, 3, 32, 32))  # BatchNorm statistics that are not the initial ones
    results = [evaluate(model, TensorSplit(data, size, torch.device("cpu"), train=False), None) for size in (7, 50)]
    assert results[0]["error"] == results[1]["error"] and results[0]["top5_error"] == results[1]["top5_error"]
    assert results[0]["loss"] == pytest.approx(results[1]["loss"], rel=1e-5)


def test_step_benchmark_smoke_on_the_cpu(tmp_path):
    out = tmp_path / "step.json"
    argv = ["--device", "cpu", "--models", "resnet20", "--amp", "none", "--repeats", "1", "--json", str(out)]
    subprocess.run([sys.executable, str(ROOT / "bench" / "train_step.py"), *argv], check=True, capture_output=True, timeout=300)
    (row,) = json.loads(out.read_text())["rows"]
    assert row["model"] == "resnet20" and row["eager_ms"] > 0
    assert "graph_ms" not in row  # graphs need CUDA
