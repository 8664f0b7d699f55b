"""Training (dashed) and test (solid) error against iterations for several runs, as in the paper's Figure 6.

python training/plot.py runs/plain20 runs/plain56 -o degradation.png
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


def plot(run_dirs: list[Path], output: Path, title: str | None = None, eval_key: str = "test_error") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, run in enumerate(run_dirs):
        rows = read_metrics(run)
        color = f"C{i}"
        label = run.name
        steps = [r["step"] / 1e3 for r in rows]
        ax.plot(steps, [r["train_error"] for r in rows], "--", color=color, linewidth=1)
        evals = [(r["step"] / 1e3, r[eval_key]) for r in rows if eval_key in r]
        if evals:
            ax.plot(*zip(*evals, strict=True), "-", color=color, linewidth=2, label=label)
        else:
            ax.plot([], [], "-", color=color, label=label)
    ax.set_xlabel("iter. (1e3)")
    ax.set_ylabel("error (%)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(title="dashed: training error, bold: test error", fontsize=8, title_fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="run directories holding metrics.jsonl")
    p.add_argument("-o", "--output", type=Path, default=Path("errors.png"))
    p.add_argument("--title")
    p.add_argument("--eval-key", default="test_error", help="metric drawn solid (test_error or val_error)")
    args = p.parse_args(argv)
    plot(args.runs, args.output, args.title, args.eval_key)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
