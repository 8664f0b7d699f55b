"""Training (dashed) and test (solid) error against iterations for several runs, as in the paper's Figure 6.

python training/plot.py runs/plain20 runs/plain56 -o degradation.png
python training/plot.py --panel runs/plain20 runs/plain32 --panel runs/resnet20 runs/resnet32 --ymax 20 -o fig6.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def read_metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise SystemExit(f"error: {path} does not exist")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot(
    panels: list[list[Path]],
    output: Path,
    title: str | None = None,
    eval_key: str = "test_error",
    ymax: float | None = None,
) -> None:
    """One axes per panel, side by side (Figure 6: plain nets left, residual nets right), with a shared y range."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4.5), sharey=True, squeeze=False)
    for ax, run_dirs in zip(axes[0], panels, strict=True):
        for i, run in enumerate(run_dirs):
            rows = read_metrics(run)
            color = f"C{i}"
            steps = [r["step"] / 1e3 for r in rows]
            ax.plot(steps, [r["train_error"] for r in rows], "--", color=color, linewidth=1)
            evals = [(r["step"] / 1e3, r[eval_key]) for r in rows if eval_key in r]
            if evals:
                ax.plot(*zip(*evals, strict=True), "-", color=color, linewidth=2, label=run.name)
            else:
                ax.plot([], [], "-", color=color, label=run.name)
        ax.set_xlabel("iter. (1e3)")
        ax.set_ylim(0, ymax)
        ax.grid(alpha=0.3)
        ax.legend(title="dashed: training error, bold: test error", fontsize=8, title_fontsize=8)
    axes[0][0].set_ylabel("error (%)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="*", type=Path, help="run directories holding metrics.jsonl (one panel)")
    p.add_argument(
        "--panel",
        nargs="+",
        type=Path,
        action="append",
        default=[],
        metavar="RUN",
        help="the run directories of one panel; repeat for panels side by side (instead of RUNS)",
    )
    p.add_argument("-o", "--output", type=Path, default=Path("errors.png"))
    p.add_argument("--title")
    p.add_argument("--eval-key", default="test_error", help="metric drawn solid (test_error or val_error)")
    p.add_argument("--ymax", type=float, help="top of the error axis, in %% (the paper's Figure 6: 20)")
    args = p.parse_args(argv)
    if bool(args.runs) == bool(args.panel):
        p.error("give run directories either as RUNS (one panel) or with --panel, not both and not neither")
    plot(args.panel or [args.runs], args.output, args.title, args.eval_key, args.ymax)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
