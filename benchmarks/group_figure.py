"""The evidence at a glance: change of NDCG@10 over the parent, per user group and model, with the
95% paired-bootstrap interval over users and seeds (the report's numbers, drawn).

    python benchmarks/group_figure.py [--sweep=benchmarks/configs/ml-100k-5seeds.yaml] [--variant=guided]

Writes docs/groups.png.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from recbole_guided.benchmark import load_sweep  # noqa: E402
from recbole_guided.benchmark_report import GROUP_HEAD, pooled_paired_change, read_rows  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sweep", default=str(REPO / "benchmarks" / "configs" / "ml-100k-5seeds.yaml"))
    parser.add_argument("--variant", default="guided")
    parser.add_argument("--output", default=str(REPO / "docs" / "groups.png"))
    args = parser.parse_args()
    sweep = load_sweep(args.sweep)
    results = REPO / sweep["results"]
    rows = read_rows(results)
    models = [m for m in sweep["models"] if any(r["model"] == m and r["variant"] == args.variant for r in rows)]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    width = 0.8 / max(len(models), 1)
    for ax, (mode, title) in zip(axes, [("full", "full ranking"), ("uni100", "sampled (uni100)")]):
        for k, model in enumerate(models):
            mine = [r for r in rows if r["model"] == model]
            seeds = len({r["seed"] for r in mine if r["variant"] == "base"} & {r["seed"] for r in mine
                                                                              if r["variant"] == args.variant})
            for g, group in enumerate(GROUP_HEAD):
                change = pooled_paired_change(mine, results.parent, "base", args.variant, mode, group)
                if change is None:
                    continue
                x = g + (k - (len(models) - 1) / 2) * width
                err = [[100 * (change.change - change.ci_low)], [100 * (change.ci_high - change.change)]]
                ax.bar(x, 100 * change.change, width, yerr=err, capsize=3,
                       color=f"C{k}", label=f"{model} ({seeds} seeds)" if g == 0 else None)
        ax.axhline(0, color="black", lw=0.6)
        ax.set_xticks(range(len(GROUP_HEAD)), GROUP_HEAD)
        ax.set_title(title, fontsize=10)
    axes[0].set_ylabel(f"NDCG@10 change of `{args.variant}`\nover the parent (%)")
    axes[0].legend(fontsize=8)
    fig.suptitle("Change over the parent per user group, paired over the same users and seeds (95% bootstrap CI)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(args.output, dpi=110)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
