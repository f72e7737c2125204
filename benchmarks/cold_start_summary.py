"""New items at a glance, from the new-items sweep's rank files: per model and variant, NDCG@10,
Recall@10 and MRR@10 on the Cold, Warm and All test users (full ranking, mean over the user x seed
pairs), the median rank of a cold target among all items, and NDCG@10 of cold users in sampled
`uni100` ranking; and a figure of Cold/Warm/All NDCG@10 with 95% bootstrap intervals.

    python benchmarks/cold_start_summary.py [--sweep=benchmarks/configs/ml-100k-new-items.yaml]

Writes benchmarks/results/cold_start_table.md and docs/cold_start.png.
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
from recbole_guided.benchmark_report import pooled_pairs, read_ranks, read_rows  # noqa: E402
from recbole_guided.evaluation import UserRanks  # noqa: E402
from recbole_guided.paired_test import paired_rank_change  # noqa: E402

GROUPS = ["cold", "warm", "all"]


def pooled(rows: list[dict], results_dir: Path, group: str, metric: str = "ndcg", mode: str = "full") -> np.ndarray:
    """``metric``@10 of every test case of ``group`` over the rows' runs (user x seed); ``rank``: the rank."""
    values = []
    for row in rows:
        ranks = read_ranks(results_dir / row["ranks_file"])
        mask = ranks.groups[group]
        by_user = UserRanks(ranks.users, ranks.targets, ranks.ranks[mode])
        values.append((by_user.ranks if metric == "rank" else by_user.metric(metric, 10))[mask])
    return np.concatenate(values) if values else np.zeros(0)


PAIRS = [("base", "guided"), ("random-guided", "guided"), ("guided-cold-train", "guided"), ("guided-cold-mean", "guided"),
         ("metadata-guided", "guided"), ("base", "text-base"), ("text-base", "text-guided"), ("guided", "text-guided")]


def paired_ranks(rows: list[dict], results_dir: Path, model: str, a: str, b: str) -> str | None:
    """Cold targets' ranks under ``b`` against ``a``, same users and seeds (NDCG@10 is 0 for every
    cold user under every variant here, so the rank is what can be compared)."""
    pairs = pooled_pairs([r for r in rows if r["model"] == model], results_dir, a, b, "full", "cold", "rank")
    if pairs is None:
        return None
    c = paired_rank_change(pairs[0], pairs[1], runs=pairs[2])
    p = "<0.001" if c.p < 0.001 else f"{c.p:.3f}"
    return (f"| `{b}` vs `{a}` | {c.users} | {round(c.higher * c.users)} | {c.ratio:.2f} [{c.ci_low:.2f}, "
            f"{c.ci_high:.2f}] | {p} |")


def table(rows: list[dict], results_dir: Path, models: list[str], variants: list[str]) -> str:
    lines = ["| model | variant | seeds | NDCG@10 Cold / Warm / All | Recall@10 Cold / Warm / All | "
             "MRR@10 Cold / Warm / All | median rank of a cold target | uni100 NDCG@10 Cold |",
             "|---|---|---|---|---|---|---|---|"]
    for model in models:
        for variant in variants:
            mine = [r for r in rows if r["model"] == model and r["variant"] == variant]
            if not mine:
                continue
            cells = [" / ".join(f"{pooled(mine, results_dir, g, m).mean():.4f}" for g in GROUPS)
                     for m in ("ndcg", "recall", "mrr")]
            rank = np.median(pooled(mine, results_dir, "cold", "rank"))
            sampled = pooled(mine, results_dir, "cold", "ndcg", "uni100").mean()
            lines.append(f"| {model} | {variant} | {len(mine)} | " + " | ".join(cells) + f" | {rank:.0f} | {sampled:.4f} |")
    return "\n".join(lines)


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
    text = table(rows, results.parent, models, variants)
    for model in models:
        lines = [paired_ranks(rows, results.parent, model, a, b) for a, b in PAIRS]
        text += (f"\n\n{model}, cold users, paired over the same users and seeds: how often the new target ranks "
                 "higher under the first variant, the geometric mean of the ratio of its rank (first / second; "
                 "below 1: the first ranks it higher) with its 95% bootstrap interval (seeds, then users), and "
                 "the Wilcoxon signed-rank p of the log ranks.\n\n| comparison | user x seed pairs | ranked "
                 "higher | rank ratio [95% CI] | p |\n|---|---|---|---|---|\n" + "\n".join(line for line in lines if line))
    (REPO / "benchmarks" / "results" / "cold_start_table.md").write_text(
        f"`python benchmarks/cold_start_summary.py --sweep={Path(args.sweep).name}` from `{sweep['results']}`; "
        f"{sweep['datasets'][0]}, leave-one-out, full ranking over all items unless marked uni100.\n\n{text}\n")
    print(text)
    print(f"wrote {args.output} and benchmarks/results/cold_start_table.md")


if __name__ == "__main__":
    main()
