"""The evidence at a glance: change of NDCG@10 over the parent (full ranking and uni100) and the
ratio of the target's rank (full ranking), per user group and model, with the 95% two-level
paired-bootstrap intervals over seeds and users (the report's numbers, drawn).

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
from recbole_guided.benchmark_report import GROUP_HEAD, pooled_pairs, read_rows  # noqa: E402
from recbole_guided.paired_test import paired_change, paired_rank_change  # noqa: E402


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
    panels = [("full", "ndcg", "NDCG@10, full ranking"), ("uni100", "ndcg", "NDCG@10, sampled (uni100)"),
              ("full", "rank", "the target's rank, full ranking")]
    fig, axes = plt.subplots(1, len(panels), figsize=(15, 3.8))
    width = 0.8 / max(len(models), 1)
    for ax, (mode, metric, title) in zip(axes, panels):
        for k, model in enumerate(models):
            mine = [r for r in rows if r["model"] == model]
            seeds = len({r["seed"] for r in mine if r["variant"] == "base"} & {r["seed"] for r in mine
                                                                              if r["variant"] == args.variant})
            for g, group in enumerate(GROUP_HEAD):
                pairs = pooled_pairs(mine, results.parent, "base", args.variant, mode, group, metric)
                if pairs is None:
                    continue
                if metric == "rank":  # drawn as the change of the rank: below 0, the target ranks higher
                    c = paired_rank_change(*pairs[:2], runs=pairs[2])
                    value, low, high = c.ratio - 1, c.ci_low - 1, c.ci_high - 1
                else:
                    c = paired_change(*pairs[:2], runs=pairs[2])
                    value, low, high = c.change, c.ci_low, c.ci_high
                x = g + (k - (len(models) - 1) / 2) * width
                ax.bar(x, 100 * value, width, yerr=[[100 * (value - low)], [100 * (high - value)]], capsize=3,
                       color=f"C{k}", label=f"{model} ({seeds} seeds)" if g == 0 else None)
        ax.axhline(0, color="black", lw=0.6)
        ax.set_xticks(range(len(GROUP_HEAD)), GROUP_HEAD)
        ax.set_title(title, fontsize=10)
    axes[0].set_ylabel(f"NDCG@10 change of `{args.variant}`\nover the parent (%): up is better")
    axes[2].set_ylabel(f"rank of the target under `{args.variant}`\nover the parent's (%): down is better")
    axes[0].legend(fontsize=8)
    fig.suptitle("Change over the parent per user group, paired over the same users and seeds (95% bootstrap CI)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(args.output, dpi=110)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
