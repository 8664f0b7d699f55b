"""Command line of ``training/train.py``: flags, the paper's recipes, and how they resolve."""

from __future__ import annotations

import argparse

from .models import SHORTCUTS, list_models
from .schedule import SCHEDULES

# Named presets of the paper's hyper-parameters; explicit flags override them.
RECIPES: dict[str, dict[str, object]] = {
    # Section 4.2: batch 128, lr 0.1 /10 at 32k and 48k iterations, stop at 64k, wd 1e-4, momentum 0.9,
    # 45k/5k train/val split; ResNet-110 warms up at 0.01 for 400 iterations.
    "paper-cifar": dict(
        dataset="cifar10",
        batch_size=128,
        lr=0.1,
        momentum=0.9,
        weight_decay=1e-4,
        lr_schedule="paper",
        iterations=64_000,
        val_split=5000,
    ),
    # Section 3.4: batch 256, lr 0.1 /10 every 30 epochs (the paper: when the error plateaus), 90 epochs.
    "paper-imagenet": dict(
        dataset="imagefolder",
        batch_size=256,
        lr=0.1,
        momentum=0.9,
        weight_decay=1e-4,
        lr_schedule="step",
        lr_step_epochs=30,
        epochs=90,
    ),
}

# Defaults for flags a recipe may set; applied after the recipe.
DEFAULTS: dict[str, object] = dict(
    dataset="cifar10",
    batch_size=128,
    lr=0.1,
    momentum=0.9,
    weight_decay=1e-4,
    lr_schedule="cosine",
    epochs=None,
    iterations=None,
    val_split=0,
    lr_step_epochs=30,
    warmup_iters=0,
    warmup_lr=None,
)


class FlagParser(argparse.ArgumentParser):
    """An ArgumentParser that lists the flags it defines, its groups' included (``flags``)."""

    @property
    def flags(self) -> list[argparse.Action]:
        # argparse keeps this list private but stable; every argument group appends to the parser's own list.
        return list(self._actions)


def get_args_parser() -> FlagParser:
    p = FlagParser(
        description="Train a ResNet of He et al. (2015) on CIFAR-10 or an ImageFolder tree.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--model", default="resnet20", choices=list_models(), metavar="NAME", help=f"network: {', '.join(list_models())}"
    )
    p.add_argument("--shortcut", choices=SHORTCUTS, help="shortcut option (residual nets; default A for CIFAR, B for ImageNet)")
    p.add_argument("--variant", choices=["v1", "v1.5"], help="bottleneck stride placement (ImageNet nets)")
    p.add_argument("--zero-init-residual", action="store_true", help="start every residual branch at zero")
    p.add_argument("--init-from", help="start from the weights of this training checkpoint (not its optimizer or epoch)")
    p.add_argument(
        "--deepen",
        type=int,
        help="with --init-from: the paper's constructed deeper net (section 3.1): copy the "
        "shallower CIFAR net and add identity blocks up to this depth (--model must be that deeper net)",
    )
    p.add_argument("--recipe", choices=sorted(RECIPES), help="the paper's hyper-parameters; explicit flags override them")
    g = p.add_argument_group("data")
    g.add_argument("--dataset", choices=["cifar10", "imagefolder"], default=None, help="default cifar10")
    g.add_argument(
        "--data-dir",
        required=True,
        help="cifar10: ImageFolder dir, its .tar.gz, or cifar-10-batches-py; imagefolder: a dir with train/ and val/ or test/",
    )
    g.add_argument("--download", action="store_true", help="cifar10: fetch with torchvision's downloader (needs a network)")
    g.add_argument("--cache-dir", help="where decoded CIFAR tensors are cached (default ~/.cache/resnet-serve)")
    g.add_argument(
        "--val-split",
        type=int,
        default=None,
        help="hold out this many training images for validation (the paper: 5000); 0 validates on the test split",
    )
    g.add_argument("--input-size", type=int, default=224, help="imagefolder crop size")
    g.add_argument("--workers", type=int, default=4, help="DataLoader workers (imagefolder)")
    g.add_argument(
        "--cutout",
        type=int,
        default=0,
        metavar="SIZE",
        help="cifar10: also blank a SIZE x SIZE square per training image (Cutout; 16 in its paper; default 0: off)",
    )
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=None, help="epochs to train (overrides a recipe's iterations)")
    g.add_argument("--iterations", type=int, default=None, help="total SGD steps (the paper's CIFAR runs: 64000)")
    g.add_argument("--batch-size", type=int, default=None, help="global batch size, split across DDP ranks (default 128)")
    g.add_argument("--lr", type=float, default=None, help="peak learning rate (default 0.1)")
    g.add_argument("--momentum", type=float, default=None, help="SGD momentum (default 0.9)")
    g.add_argument("--weight-decay", type=float, default=None, help="L2 weight decay (default 1e-4)")
    g.add_argument("--no-bn-weight-decay", action="store_true", help="no weight decay on BatchNorm and bias parameters")
    g.add_argument(
        "--lr-schedule",
        choices=SCHEDULES,
        default=None,
        help="paper: /10 at 50%% and 75%% of training; step: /10 every --lr-step-epochs; cosine; onecycle (default cosine)",
    )
    g.add_argument("--lr-step-epochs", type=int, default=None, help="step schedule period in epochs (default 30)")
    g.add_argument("--warmup-iters", type=int, default=None, help="warm-up iterations (default 0)")
    g.add_argument("--warmup-lr", type=float, default=None, help="warm-up learning rate (default lr / 10)")
    g.add_argument(
        "--warmup-mode",
        choices=["constant", "linear"],
        default="constant",
        help="constant: hold --warmup-lr (the paper's ResNet-110); linear: ramp to --lr",
    )
    g.add_argument("--label-smoothing", type=float, default=0.0, help="cross-entropy label smoothing")
    g = p.add_argument_group("speed and devices")
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto: cuda if available")
    g.add_argument(
        "--amp",
        choices=["auto", "none", "bf16", "fp16"],
        default="auto",
        help="mixed precision; auto: bf16 where the device supports it (AMX/AVX-512-BF16 CPUs, Ampere+ GPUs)",
    )
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True, help="NHWC memory format")
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g.add_argument(
        "--cuda-graphs",
        action="store_true",
        help="one GPU: record each training step as a CUDA graph and replay it (needs a piecewise-constant lr)",
    )
    g.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    g.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm under DDP")
    g = p.add_argument_group("run")
    g.add_argument("--output-dir", default="runs/train", help="checkpoints, args.json and metrics.jsonl")
    g.add_argument("--resume", help="checkpoint to continue from ('auto': OUTPUT_DIR/last.pt if it exists)")
    g.add_argument("--seed", type=int, default=0, help="seed for init, data order and augmentation")
    g.add_argument(
        "--stop-after",
        type=int,
        default=0,
        help="leave after this many epochs in this invocation (time-limited jobs); --resume auto continues",
    )
    g.add_argument("--eval-every", type=int, default=1, help="evaluate every N epochs (and after the last)")
    g.add_argument("--eval-batch-size", type=int, default=None, help="evaluation batch size (default: --batch-size)")
    g.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    return p


def resolve_args(args: argparse.Namespace) -> argparse.Namespace:
    """Fill unset flags from the recipe, then from DEFAULTS; check combinations."""
    recipe = RECIPES.get(args.recipe or "", {})
    explicit_epochs = args.epochs is not None
    for key, default in DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, recipe.get(key, default))
    if explicit_epochs and args.recipe and "iterations" in recipe and args.iterations == recipe["iterations"]:
        args.iterations = None  # an explicit --epochs replaces the recipe's iteration budget
    if args.epochs is None and args.iterations is None:
        args.epochs = 30
    if args.recipe == "paper-cifar" and args.model == "resnet110" and args.warmup_iters == 0:
        args.warmup_iters, args.warmup_lr = 400, 0.01
    if args.warmup_lr is None:
        args.warmup_lr = args.lr / 10
    if args.batch_size <= 0:
        raise SystemExit("error: --batch-size must be positive")
    if args.lr < 0:
        raise SystemExit("error: --lr must not be negative")
    if args.deepen and not args.init_from:
        raise SystemExit("error: --deepen needs --init-from (the shallower trained net)")
    if args.cutout and args.dataset != "cifar10":
        raise SystemExit("error: --cutout is implemented for --dataset cifar10 only")
    return args


def command_line(resolved: dict[str, object]) -> list[str]:
    """The train.py flags that resolve to ``resolved`` (a checkpoint's or args.json's arguments).

    Every flag whose value differs from the parser's default is written out and ``--recipe`` is left out,
    so the command does not depend on later changes to recipes or defaults:
    ``resolve_args(parse(command_line(r)))`` gives back ``r`` but for its ``recipe`` name. Keys that are not
    flags (train.py's ``world_size``, ``total_steps``, ...) are ignored.
    """
    parser = get_args_parser()
    argv: list[str] = []
    for action in parser.flags:
        if action.dest in ("help", "recipe") or action.dest not in resolved:
            continue
        value, flag = resolved[action.dest], action.option_strings[0]
        if value == action.default and action.dest != "model":  # the network is named even when it is the default
            continue
        if action.nargs == 0:  # a switch: store_true reaches here only when set, --[no-]x when it differs
            argv.append(flag if value else f"--no-{flag[2:]}")
        elif value is not None:
            argv.extend([flag, str(value)])
    return argv
