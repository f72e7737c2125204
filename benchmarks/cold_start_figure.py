"""New items at a glance: NDCG@10 on the Cold, Warm and All test users of the new-items sweep, per
variant and model, with the 95% bootstrap interval over users and seeds (from the runs' rank files).

    python benchmarks/cold_start_figure.py [--sweep=benchmarks/configs/ml-100k-new-items.yaml]

Writes docs/cold_start.png.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from recbole_guided.benchmark import load_sweep  # noqa: E402
from recbole_guided.benchmark_report import read_rows  # noqa: E402
from recbole_guided.evaluation import RunRanks, UserRanks  # noqa: E402

GROUPS = ["cold", "warm", "all"]


def pooled(rows: list[dict], results_dir: Path, group: str) -> np.ndarray:
    """NDCG@10 of every test case of ``group`` over the rows' runs (user x seed)."""
    values = []
    for row in rows:
        ranks = RunRanks.read(results_dir / row["ranks_file"])
        mask = ranks.groups[group]
        values.append(UserRanks(ranks.users, ranks.targets, ranks.ranks["full"]).metric("ndcg", 10)[mask])
    return np.concatenate(values) if values else np.zeros(0)


def interval(values: np.ndarray, resamples: int = 2000) -> tuple[float, float]:
    picks = np.random.default_rng(0).integers(len(values), size=(resamples, len(values)))
    low, high = np.percentile(values[picks].mean(axis=1), [2.5, 97.5])
    return float(low), float(high)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sweep", default=str(REPO / "benchmarks" / "configs" / "ml-100k-new-items.yaml"))
    parser.add_argument("--output", default=str(REPO / "docs" / "cold_start.png"))
    args = parser.parse_args()
    sweep = load_sweep(args.sweep)
    results = REPO / sweep["results"]
    rows = [r for r in read_rows(results) if r.get("ranks_file")]
    models = [m for m in sweep["models"] if any(r["model"] == m for r in rows)]
    variants = [v for v in sweep["variants"] if any(r["variant"] == v for r in rows)]
    fig, axes = plt.subplots(1, len(models), figsize=(5 + 3.5 * len(models), 3.8), sharey=True, squeeze=False)
    width = 0.8 / max(len(variants), 1)
    for ax, model in zip(axes[0], models):
        for k, variant in enumerate(variants):
            mine = [r for r in rows if r["model"] == model and r["variant"] == variant]
            if not mine:
                continue
            for g, group in enumerate(GROUPS):
                values = pooled(mine, results.parent, group)
                if not len(values):
                    continue
                low, high = interval(values)
                x = g + (k - (len(variants) - 1) / 2) * width
                ax.bar(x, values.mean(), width, yerr=[[values.mean() - low], [high - values.mean()]], capsize=2,
                       color=f"C{k}", label=f"{variant} ({len(mine)} seeds)" if g == 0 else None)
        ax.set_xticks(range(len(GROUPS)), [g.capitalize() for g in GROUPS])
        ax.set_title(f"{model} on {sweep['datasets'][0]}", fontsize=10)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("NDCG@10 (full ranking)")
    fig.suptitle("New items: NDCG@10 by group, mean over users and seeds (95% bootstrap CI)", fontsize=10)
    fig.tight_layout()
    fig.savefig(args.output, dpi=110)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
