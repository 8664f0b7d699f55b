"""training/train.py end to end on tiny generated data: learning, checkpoints, resume, errors, DDP."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT, train_argv
from training import checkpoint as checkpoint_module
from training.checkpoint import RELEASE_KEYS, load_checkpoint, save_atomic, weights_only
from training.config import command_line, get_args_parser, resolve_args
from training.distributed import weights_fingerprint
from training.schedule import LRSchedule
from training.train import cli, main

pytestmark = pytest.mark.full  # torch

TRAIN_PY = str(ROOT / "training" / "train.py")


def args_for(data: Path, out: Path, *extra: str):
    argv = train_argv(data, out, "--lr", "0.05", "--lr-schedule", "cosine", *extra)
    return get_args_parser().parse_args(argv)


def test_loss_falls_and_beats_chance(toy_cifar, tmp_path):
    out = tmp_path / "run"
    main(args_for(toy_cifar, out, "--epochs", "4", "--amp", "bf16"))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert rows[-1]["test_error"] < 40.0  # chance is 66.7% on 3 classes
    for key in ("train_error", "test_loss", "test_top5_error", "lr", "images_per_s", "seconds"):
        assert key in rows[-1]
    args = json.loads((out / "args.json").read_text())
    assert args["model"] == "resnet20" and args["epochs"] == 4 and args["total_steps"] == 4 * 9


@pytest.fixture(scope="module")
def one_epoch_run(toy_cifar, tmp_path_factory) -> Path:
    """A run directory after one epoch; tests that change it work on a copy."""
    out = tmp_path_factory.mktemp("one-epoch") / "run"
    main(args_for(toy_cifar, out, "--epochs", "1"))
    return out


def test_checkpoint_contents_load_weights_only(one_epoch_run):
    ckpt = torch.load(one_epoch_run / "last.pt", weights_only=True)
    for key in (
        "model",
        "optimizer",
        "scheduler",
        "scaler",
        "epoch",
        "step",
        "rng",
        "args",
        "classes",
        "mean",
        "std",
        "input_size",
        "metrics",
        "git_revision",
        "arch",
        "num_classes",
    ):
        assert key in ckpt, key
    assert ckpt["classes"] == ["blue", "green", "red"] and ckpt["input_size"] == 32 and ckpt["step"] == 9
    assert ckpt["args"]["lr"] == 0.05 and ckpt["args"]["batch_size"] == 16
    assert (one_epoch_run / "best.pt").exists()


def test_resume_continues_exactly(toy_cifar, tmp_path):
    # Tolerance: exact. CPU kernels with a fixed thread count are deterministic, and the data order and
    # augmentation of each epoch depend only on (seed, epoch).
    # Cutout on: its squares too must come from (seed, epoch) alone.
    main(args_for(toy_cifar, tmp_path / "straight", "--epochs", "2", "--cutout", "8"))
    main(args_for(toy_cifar, tmp_path / "split", "--epochs", "2", "--stop-after", "1", "--cutout", "8"))
    first = load_checkpoint(tmp_path / "split" / "last.pt")
    assert first["epoch"] == 1 and first["args"]["cutout"] == 8
    resume = ("--resume", str(tmp_path / "split" / "last.pt"))
    main(args_for(toy_cifar, tmp_path / "split", "--epochs", "2", "--cutout", "8", *resume))
    a = load_checkpoint(tmp_path / "straight" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "split" / "last.pt")["model"]
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)
    main(args_for(toy_cifar, tmp_path / "no-cutout", "--epochs", "2", "--stop-after", "1"))
    plain = load_checkpoint(tmp_path / "no-cutout" / "last.pt")["model"]
    assert not torch.equal(plain["fc.weight"], first["model"]["fc.weight"])  # the flag reaches the training batches


def test_release_checkpoint_keeps_weights_and_metadata_only(one_epoch_run):
    ckpt = torch.load(one_epoch_run / "last.pt", weights_only=True)
    ckpt["future_training_state"] = torch.zeros(3)  # a key train.py might add later stays out of releases
    released = weights_only(ckpt)
    assert set(released) == set(RELEASE_KEYS) and "optimizer" not in released and "rng" not in released
    assert released["model"] is ckpt["model"]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(toy_cifar, one_epoch_run, tmp_path, capsys):
    out = Path(shutil.copytree(one_epoch_run, tmp_path / "run"))
    good = (out / "last.pt").read_bytes()
    argv = train_argv(toy_cifar, out, "--epochs", "2", "--lr", "1e30", "--resume", "auto")
    assert cli(argv) == 1
    assert "loss is" in capsys.readouterr().err
    assert (out / "last.pt").read_bytes() == good


def test_atomic_save_leaves_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_atomic({"a": torch.ones(2)}, path)

    def broken_save(obj, fh):
        fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_atomic({"a": torch.zeros(2)}, path)
    monkeypatch.undo()
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "resnet21", "--data-dir", "x"], "invalid choice"),
        (["--model", "resnet20", "--data-dir", "/nonexistent/dir"], "does not exist"),
        (["--model", "resnet20", "--data-dir", "/", "--dataset", "imagefolder"], "train/"),
        (["--model", "resnet20", "--data-dir", "/", "--dataset", "imagefolder", "--cutout", "16"], "cifar10 only"),
    ],
)
def test_cli_errors(argv, message):
    proc = subprocess.run([sys.executable, TRAIN_PY, *argv, "--output-dir", "/tmp/unused-run"], capture_output=True, text=True)
    assert proc.returncode != 0
    assert message in proc.stderr


def test_help_documents_flags():
    proc = subprocess.run([sys.executable, TRAIN_PY, "--help"], capture_output=True, text=True, check=True)
    for flag in ("--recipe", "--lr-schedule", "--amp", "--channels-last", "--resume", "--val-split", "--warmup-iters"):
        assert flag in proc.stdout


def test_recipes_fill_defaults_and_flags_override():
    parse = lambda *a: resolve_args(get_args_parser().parse_args(["--data-dir", "x", *a]))  # noqa: E731
    paper = parse("--recipe", "paper-cifar")
    assert (paper.batch_size, paper.lr, paper.iterations, paper.val_split, paper.lr_schedule) == (128, 0.1, 64000, 5000, "paper")
    assert parse("--recipe", "paper-cifar", "--lr", "0.05", "--epochs", "10").lr == 0.05
    assert parse("--recipe", "paper-cifar", "--epochs", "10").iterations is None
    r110 = parse("--recipe", "paper-cifar", "--model", "resnet110")
    assert (r110.warmup_iters, r110.warmup_lr) == (400, 0.01)
    imagenet = parse("--recipe", "paper-imagenet")
    assert (imagenet.batch_size, imagenet.epochs, imagenet.lr_schedule, imagenet.dataset) == (256, 90, "step", "imagefolder")


@pytest.mark.parametrize(
    "argv",
    [
        ["--data-dir", "d.tar.gz"],
        ["--data-dir", "d", "--recipe", "paper-cifar", "--model", "plain110", "--no-channels-last", "--zero-init-residual"],
        ["--data-dir", "d", "--lr-schedule", "cosine", "--warmup-iters", "391", "--warmup-mode", "linear", "--amp", "none"],
        ["--data-dir", "d", "--model", "resnet56", "--init-from", "r20.pt", "--deepen", "56", "--label-smoothing", "0.1"],
        ["--data-dir", "d", "--cutout", "16"],
    ],
)
def test_command_line_rebuilds_the_resolved_arguments(argv):
    parse = lambda a: vars(resolve_args(get_args_parser().parse_args(a)))  # noqa: E731
    resolved = parse(argv)
    derived = {"world_size": 1, "total_steps": 10, "steps_per_epoch": 5, "amp_dtype": "None"}  # added by train.py
    rebuilt = command_line({**resolved, **derived})
    assert "--recipe" not in rebuilt  # resolved values are written out, not the preset's name
    assert parse(rebuilt) == {**resolved, "recipe": None}


def test_schedules():
    paper = LRSchedule("paper", 0.1, 64000)
    assert paper(0) == 0.1 and paper(31999) == 0.1
    assert paper(32000) == pytest.approx(0.01) and paper(48000) == pytest.approx(0.001)
    warm = LRSchedule("paper", 0.1, 64000, warmup_steps=400, warmup_lr=0.01)
    assert warm(399) == 0.01 and warm(400) == 0.1
    step = LRSchedule("step", 0.1, 90, step_size_steps=30)
    assert step(29) == 0.1 and step(30) == pytest.approx(0.01) and step(60) == pytest.approx(0.001)
    cosine = LRSchedule("cosine", 0.1, 100)
    assert cosine(0) == 0.1 and cosine(50) == pytest.approx(0.05) and cosine(100) == pytest.approx(0)
    one = LRSchedule("onecycle", 0.1, 100)
    assert one(0) < one(15) < one(30) and one(30) == pytest.approx(0.1)
    assert one(30) > one(60) > one(99) > 0


def test_evaluate_and_plot_cli(toy_cifar, tmp_path):
    out = tmp_path / "run"
    main(args_for(toy_cifar, out, "--epochs", "2"))
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "training" / "evaluate.py"),
            "--checkpoint",
            str(out / "best.pt"),
            "--data-dir",
            str(toy_cifar),
            "--json",
            "--cache-dir",
            str(tmp_path / "c"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(proc.stdout)
    expected = min(json.loads(line)["test_error"] for line in (out / "metrics.jsonl").read_text().splitlines())
    assert result["images"] == 48 and result["top1_error"] == pytest.approx(expected, abs=1e-6)
    plot = [sys.executable, str(ROOT / "training" / "plot.py")]
    one, two = tmp_path / "one.png", tmp_path / "two.png"
    subprocess.run([*plot, str(out), str(out), "-o", str(one)], check=True, capture_output=True)
    subprocess.run([*plot, "--panel", str(out), "--panel", str(out), str(out), "--ymax", "20", "-o", str(two)], check=True)

    def png_width(path):  # the IHDR chunk's width, big-endian, after the 8-byte signature and the chunk's header
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        return int.from_bytes(data[16:20], "big")

    assert png_width(two) == 2 * png_width(one)  # Figure 6's two panels side by side
    both = subprocess.run([*plot, str(out), "--panel", str(out), "-o", str(two)], capture_output=True, text=True)
    assert both.returncode == 2 and "not both" in both.stderr


@pytest.mark.slow
def test_ddp_two_processes_gloo(toy_cifar, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--standalone",
            TRAIN_PY,
            *train_argv(toy_cifar, out, "--epochs", "2", "--device", "cpu", batch_size=32),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["args"]["world_size"] == 2
    assert ckpt["step"] == 2 * 5  # 144 images / 2 ranks / 16 per rank = 4.5 -> 5 steps per epoch
    fingerprints = ckpt["rank_fingerprints"]
    assert len(fingerprints) == 2 and fingerprints[0] == fingerprints[1]
    model = __import__("training.evaluate", fromlist=["load_model"]).load_model(out / "last.pt")[0]
    assert weights_fingerprint(model) == fingerprints[0]
    assert proc.stdout.count("epoch 2/2") == 1  # only rank 0 logs


LEAVE_GROUP_SCRIPT = """
import gc, weakref
import torch, torch.distributed as dist
from torch import nn
from training.distributed import finish_distributed, setup_distributed

setup_distributed("cpu")
model = nn.Linear(4, 2)
ddp = nn.parallel.DistributedDataParallel(model)  # imports torch._dynamo, after the group exists
ddp(torch.randn(2, 4)).sum().backward()
del ddp
group = weakref.ref(dist.group.WORLD)
finish_distributed(model, None)
gc.collect()
print("group freed" if group() is None else "group still alive")
"""


@pytest.mark.slow
def test_ddp_leaves_the_process_group_freed(tmp_path):
    """After finish_distributed nothing holds the gloo group: its threads are joined while Python is whole, not
    left running into interpreter shutdown (where they now and then abort the process)."""
    script = tmp_path / "leave_group.py"
    script.write_text(LEAVE_GROUP_SCRIPT)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone", str(script)],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("group freed") == 2, proc.stdout


def test_imagefolder_dataset_trains(tmp_path):
    from tests.conftest import make_image_folder

    root = make_image_folder(tmp_path / "tree", {"train": 12, "val": 4}, size=40, fmt="jpg")
    out = tmp_path / "run"
    extra = ("--dataset", "imagefolder", "--input-size", "32", "--epochs", "1", "--workers", "0")
    argv = train_argv(root, out, *extra, model="resnet18", batch_size=12)
    assert cli(argv) == 0
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["input_size"] == 32 and ckpt["classes"] == ["blue", "green", "red"]
    assert ckpt["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert "test_error" in ckpt["metrics"][-1]


def test_train_throughput_bench_smoke(toy_cifar, tmp_path):
    out = tmp_path / "bench.json"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "train_throughput.py"),
            "--data-dir",
            str(toy_cifar),
            "--models",
            "resnet20",
            "--batch-size",
            "16",
            "--steps",
            "1",
            "--rounds",
            "1",
            "--json",
            str(out),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    (row,) = json.loads(out.read_text())
    assert row["model"] == "resnet20" and row["pipeline_img_s"] > 0 and row["synthetic_img_s"] > 0


def test_init_from_a_checkpoint_deepened(toy_cifar, tmp_path):
    """--init-from + --deepen: the constructed resnet56 starts as the trained resnet20 plus identity blocks."""
    main(args_for(toy_cifar, tmp_path / "r20", "--epochs", "1"))
    shallow = load_checkpoint(tmp_path / "r20" / "last.pt")["model"]
    argv = [
        "--model",
        "resnet56",
        "--init-from",
        str(tmp_path / "r20" / "last.pt"),
        "--deepen",
        "56",
        "--lr",
        "0",
        "--epochs",
        "1",
        "--weight-decay",
        "0",
    ]
    main(args_for(toy_cifar, tmp_path / "r56", *argv, "--resume", "auto"))  # auto with no last.pt yet: start from init
    deep = load_checkpoint(tmp_path / "r56" / "last.pt")
    assert deep["arch"] == "resnet56" and deep["args"]["deepen"] == 56
    torch.testing.assert_close(deep["model"]["layer1.0.conv1.weight"], shallow["layer1.0.conv1.weight"])  # lr 0: unchanged
    assert (deep["model"]["layer3.8.bn2.weight"] == 0).all()  # an added block: an identity
    with pytest.raises(SystemExit, match="does not give"):
        main(
            args_for(
                toy_cifar,
                tmp_path / "bad",
                "--model",
                "resnet44",
                "--init-from",
                str(tmp_path / "r20" / "last.pt"),
                "--deepen",
                "56",
                "--epochs",
                "1",
            )
        )


@pytest.mark.slow
def test_torch_compile_trains_and_saves_plain_weights(toy_cifar, tmp_path):
    out = tmp_path / "compiled"
    main(args_for(toy_cifar, out, "--epochs", "1", "--compile"))
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["args"]["compile"] and not any(k.startswith("_orig_mod") for k in ckpt["model"])
    get_model = __import__("training.models", fromlist=["get_model"]).get_model
    get_model("resnet20", num_classes=3).load_state_dict(ckpt["model"])  # loads into an uncompiled net


def test_a_typed_checkpoint_rebuilds_its_network_and_refuses_what_is_not_one(one_epoch_run, tmp_path):
    from training.checkpoint import Checkpoint, CheckpointError, eval_resize

    ckpt = Checkpoint.load(one_epoch_run / "last.pt")
    model = ckpt.build_model()
    assert not model.training and ckpt.classes == ckpt.raw["classes"] and ckpt.input_size == 32
    x = torch.zeros(2, 3, 32, 32)
    reference = ckpt.raw["model"]
    assert all(torch.equal(model.state_dict()[k], reference[k]) for k in reference)
    assert model(x).shape == (2, ckpt.num_classes)
    assert set(ckpt.release()) <= set(RELEASE_KEYS) and "optimizer" not in ckpt.release()
    assert (ckpt.eval_resize, eval_resize(224), eval_resize(160)) == (32, 256, 183)  # 256/224 of the crop; CIFAR as is
    partial = {k: v for k, v in ckpt.raw.items() if k != "classes"}
    with pytest.raises(CheckpointError, match="missing classes"):
        Checkpoint.from_dict(partial)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a training checkpoint"):
        Checkpoint.load(tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError):
        Checkpoint.load(tmp_path / "absent.pt")
