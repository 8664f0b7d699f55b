"""Train a ResNet of He et al. (2015) on CIFAR-10 or an ImageFolder tree, on CPU, one GPU or many (DDP).

python training/train.py --model resnet56 --dataset cifar10 --data-dir DIR --epochs 164 --output-dir runs/r56
torchrun --nproc_per_node=2 training/train.py --model resnet20 --data-dir DIR ...
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from training.checkpoint import Checkpoint, git_revision, load_checkpoint, restore_rng_states, rng_states, save_atomic
from training.config import get_args_parser, resolve_args
from training.data import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    DataError,
    Split,
    TensorSplit,
    load_cifar10,
    split_holdout,
)
from training.distributed import finish_distributed, reduce_sums, setup_distributed, sync_buffers
from training.imagefolder import LoaderSplit, imagefolder_datasets
from training.models import deepen, get_model, get_spec
from training.schedule import LRSchedule
from training.step import CudaGraphTrainStep, TrainStep, graph_support_problem


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is left as it was."""


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    if amp == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else None
    return {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def build_data(args, rank: int, world_size: int, device: torch.device) -> tuple[Split, dict[str, Split], list[str], tuple, tuple]:
    """(train split, evaluation splits by name, class names, mean, std)."""
    per_rank_batch = max(args.batch_size // world_size, 1)
    # Evaluation runs BatchNorm in eval mode: any batch size gives the same result.
    per_rank_eval_batch = max((args.eval_batch_size or args.batch_size) // world_size, 1)
    common = dict(device=device, seed=args.seed, rank=rank, world_size=world_size)
    if args.dataset == "cifar10":
        splits = load_cifar10(args.data_dir, args.cache_dir, args.download)
        train = splits["train"]
        evals = {name: splits[name] for name in ("test", "val") if name in splits}
        if args.val_split:
            train, evals["val"] = split_holdout(train, args.val_split, args.seed)
        make = lambda data, batch, is_train: TensorSplit(data, batch, train=is_train, cutout_size=args.cutout, **common)  # noqa: E731
        evaluated = {k: make(v, per_rank_eval_batch, False) for k, v in evals.items()}
        return make(train, per_rank_batch, True), evaluated, train.classes, CIFAR10_MEAN, CIFAR10_STD
    train_ds, eval_ds, classes = imagefolder_datasets(Path(args.data_dir), args.input_size, args.val_split, args.seed)
    make = lambda ds, batch, is_train: LoaderSplit(ds, classes, batch, train=is_train, workers=args.workers, **common)  # noqa: E731
    evaluated = {k: make(v, per_rank_eval_batch, False) for k, v in eval_ds.items()}
    return make(train_ds, per_rank_batch, True), evaluated, classes, IMAGENET_MEAN, IMAGENET_STD


def build_model(args, num_classes: int) -> nn.Module:
    opts = {"zero_init_residual": args.zero_init_residual}
    if args.shortcut and get_spec(args.model).residual:
        opts["shortcut"] = args.shortcut
    if args.variant:
        opts["variant"] = args.variant
    return get_model(args.model, num_classes=num_classes, **opts)


def initial_weights(model: nn.Module, args) -> nn.Module:
    """``--init-from`` (and ``--deepen``): start from a checkpoint's weights, or from its deepened copy."""
    ckpt = Checkpoint.load(args.init_from)
    source = ckpt.build_model()
    if args.deepen:
        deeper = deepen(source, args.deepen)
        if sum(p.numel() for p in deeper.parameters()) != sum(p.numel() for p in model.parameters()):
            raise SystemExit(f"error: deepening {ckpt.arch} to {args.deepen} layers does not give a {args.model}")
        return deeper
    model.load_state_dict(source.state_dict())
    return model


def build_optimizer(model: nn.Module, args) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if args.no_bn_weight_decay and p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": args.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return torch.optim.SGD(groups, lr=args.lr, momentum=args.momentum)


# Reading a GPU value (``.item()``) waits for every queued kernel; doing it each step would leave the GPU idle
# while Python launches the next step. The loop keeps its sums on the device and looks at them this often.
HOST_SYNC_EVERY = 50


def train_one_epoch(step_fn: TrainStep, split: Split, epoch: int, state: dict, schedule: LRSchedule, args, progress):
    """One pass over this rank's share of the training split; stops early at ``schedule.total_steps``."""
    step_fn.model.train()
    device = split.device
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)  # sum of per-image losses; NaN once any is
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    checked_step = state["step"]  # the loss sum was finite up to this step
    start = time.perf_counter()
    bar = progress(total=min(len(split), schedule.total_steps - state["step"]), desc=f"epoch {epoch}", leave=False)

    def check_finite(lr: float) -> float:
        """The loss sum so far (one device read); raises if it is NaN or infinite."""
        nonlocal checked_step
        total = loss_sum.item()
        if not math.isfinite(total):
            raise TrainingDiverged(
                f"loss is {total} at epoch {epoch}, between steps {checked_step} and {state['step']} (lr {lr:g}); "
                f"stopping. The last good checkpoint in {args.output_dir} is unchanged."
            )
        checked_step = state["step"]
        bar.set_postfix(loss=f"{total / max(seen, 1):.3f}", lr=f"{lr:.3g}", img_s=f"{seen / (time.perf_counter() - start):.0f}")
        return total

    lr = schedule(state["step"])
    for images, labels in split.batches(epoch):
        if state["step"] >= schedule.total_steps:
            break
        lr = schedule(state["step"])
        if args.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        loss, logits = step_fn(images, labels, lr)
        state["step"] += 1
        n = labels.numel()
        loss_sum += loss.double() * n
        correct += (logits.argmax(1) == labels).sum()
        seen += n
        bar.update(1)
        if state["step"] % HOST_SYNC_EVERY == 0:
            check_finite(lr)
    loss_total = check_finite(lr)
    bar.close()
    seconds = time.perf_counter() - start
    loss_total, correct_total, seen = reduce_sums([loss_total, float(correct.item()), float(seen)], device)
    return {
        "train_loss": loss_total / max(seen, 1),
        "train_error": 100 * (1 - correct_total / max(seen, 1)),
        "lr": lr,
        "images_per_s": seen / seconds,
        "train_seconds": seconds,
    }


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, amp, channels_last: bool = True) -> dict[str, float]:
    """Loss, top-1 and top-5 error (%) over the whole split (summed across ranks)."""
    model.eval()
    # Sums stay on the device until the end: one read per split, not four per batch.
    sums = torch.zeros(3, dtype=torch.float64, device=split.device)  # loss, top-1 hits, top-5 hits
    seen = 0
    for images, labels in split.batches(0):
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(images.device.type, dtype=amp or torch.float32, enabled=amp is not None):
            logits = model(images).float()  # (N, num_classes)
        topk = logits.topk(min(5, logits.shape[1]), dim=1).indices  # (N, 5)
        hits = topk == labels[:, None]
        sums += torch.stack(
            [F.cross_entropy(logits, labels, reduction="sum").double(), hits[:, 0].sum().double(), hits.any(1).sum().double()]
        )
        seen += labels.numel()
    loss_sum, top1, top5, seen = reduce_sums([*sums.tolist(), seen], split.device)
    return {"loss": loss_sum / seen, "error": 100 * (1 - top1 / seen), "top5_error": 100 * (1 - top5 / seen)}


def main(args) -> dict:
    """Train; returns the final checkpoint's metrics entry."""
    args = resolve_args(args)
    rank, world_size, device = setup_distributed(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: pick the fastest convolution once
    amp = resolve_amp(args.amp, device)
    if args.cuda_graphs and (problem := graph_support_problem(args, device, world_size, amp)):
        raise SystemExit(f"error: {problem}")
    out = Path(args.output_dir)
    is_main = rank == 0
    log = print if is_main else (lambda *a, **k: None)

    train_split, eval_splits, classes, mean, std = build_data(args, rank, world_size, device)
    steps_per_epoch = len(train_split)
    if args.iterations:
        total_steps = args.iterations
        args.epochs = math.ceil(total_steps / steps_per_epoch)
    else:
        total_steps = args.epochs * steps_per_epoch
    schedule = LRSchedule(
        args.lr_schedule,
        args.lr,
        total_steps,
        step_size_steps=args.lr_step_epochs * steps_per_epoch,
        warmup_steps=args.warmup_iters,
        warmup_lr=args.warmup_lr,
        warmup_mode=args.warmup_mode,
    )

    resume = args.resume
    if resume == "auto":
        resume = str(out / "last.pt") if (out / "last.pt").exists() else None
    model = build_model(args, len(classes))
    if args.init_from and not resume:  # a resumed run continues from its own checkpoint instead
        model = initial_weights(model, args)
    model = model.to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, args)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    state = {"epoch": 0, "step": 0, "best_error": None, "history": []}

    if resume:
        ckpt = load_checkpoint(resume, device)
        if ckpt["arch"] != args.model:
            raise SystemExit(f"error: {resume} holds a {ckpt['arch']}, not a {args.model}")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        state.update(epoch=ckpt["epoch"], step=ckpt["step"], best_error=ckpt["best_error"], history=list(ckpt["metrics"]))
        restore_rng_states(ckpt["rng"])
        log(f"resumed from {resume} at epoch {state['epoch']}, step {state['step']}")

    train_model = model
    if world_size > 1:
        if args.sync_bn:
            train_model = nn.SyncBatchNorm.convert_sync_batchnorm(train_model)
        train_model = nn.parallel.DistributedDataParallel(
            train_model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if args.compile:
        train_model = torch.compile(train_model)
    step_kind = CudaGraphTrainStep if args.cuda_graphs else TrainStep
    step_fn = step_kind(train_model, optimizer, scaler, amp, args.label_smoothing)

    resolved = dict(vars(args))
    resolved.update(world_size=world_size, total_steps=total_steps, steps_per_epoch=steps_per_epoch, amp_dtype=str(amp))
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "args.json").write_text(json.dumps(resolved, indent=2) + "\n")
        log(
            f"{args.model}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params, {len(classes)} classes, "
            f"{train_split.num_samples} training images, {total_steps} steps, device {device}, amp {amp}, world {world_size}"
        )

    from tqdm import tqdm

    progress = (lambda **kw: tqdm(disable=True, **kw)) if (args.no_progress or not is_main) else tqdm
    primary = "val" if "val" in eval_splits else "test"
    entry: dict = state["history"][-1] if state["history"] else {}
    started = time.perf_counter()
    first_epoch = state["epoch"]
    for epoch in range(state["epoch"], args.epochs):
        if state["step"] >= total_steps or (args.stop_after and epoch - first_epoch >= args.stop_after):
            break
        epoch_start = time.perf_counter()
        entry = {
            "epoch": epoch + 1,
            **train_one_epoch(step_fn, train_split, epoch, state, schedule, args, progress),
        }
        entry["step"] = state["step"]
        sync_buffers(model)
        last = epoch + 1 == args.epochs or state["step"] >= total_steps
        if (epoch + 1) % args.eval_every == 0 or last:
            for name, split in eval_splits.items():
                entry.update({f"{name}_{k}": v for k, v in evaluate(model, split, amp, args.channels_last).items()})
        entry["seconds"] = time.perf_counter() - epoch_start
        state["epoch"] = epoch + 1
        state["history"].append(entry)
        improved = f"{primary}_error" in entry and (
            state["best_error"] is None or entry[f"{primary}_error"] < state["best_error"]
        )
        if improved:
            state["best_error"] = entry[f"{primary}_error"]
        if is_main:
            ckpt = Checkpoint(
                arch=args.model,
                state_dict=model.state_dict(),
                num_classes=len(classes),
                classes=classes,
                mean=tuple(mean),
                std=tuple(std),
                input_size=train_split_input_size(args),
                model_opts=model_opts(model),
                args=resolved,
                metrics=state["history"],
                git_revision=git_revision(),
            ).to_dict(
                optimizer=optimizer.state_dict(),
                scheduler={"step": state["step"]},
                scaler=scaler.state_dict(),
                epoch=state["epoch"],
                step=state["step"],
                best_error=state["best_error"],
                rng=rng_states(),
            )
            save_atomic(ckpt, out / "last.pt")
            if improved:
                save_atomic(ckpt, out / "best.pt")
            with open(out / "metrics.jsonl", "a") as fh:
                fh.write(json.dumps(entry) + "\n")
            shown = ", ".join(f"{k} {v:.4g}" for k, v in entry.items() if k not in ("epoch", "step"))
            log(f"epoch {epoch + 1}/{args.epochs} step {state['step']}: {shown}")
    if world_size > 1:
        del train_model  # the DDP wrapper holds the process group; drop it before the group goes
        finish_distributed(model, out / "last.pt" if is_main else None)
    log(f"done in {time.perf_counter() - started:.0f}s; checkpoints in {out}")
    return entry


def train_split_input_size(args) -> int:
    return 32 if args.dataset == "cifar10" else args.input_size


def model_opts(model: nn.Module) -> dict:
    """The constructor options that rebuild ``model`` with ``get_model``."""
    opts = {}
    if getattr(model, "shortcut", None) is not None:
        opts["shortcut"] = model.shortcut
    if getattr(model, "variant", None):
        opts["variant"] = model.variant
    return opts


def cli(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    try:
        main(args)
    except (DataError, FileNotFoundError, TrainingDiverged) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
