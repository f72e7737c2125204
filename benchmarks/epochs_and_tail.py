"""Does a Guided run's tail score follow how long early stopping let it train? Per model, over the
sweep's Guided runs (every variant but ``base``): Spearman's rank correlation of ``epochs_trained``
with test NDCG@10 on tail users and on all users, and the runs' tail NDCG@10 by epochs trained.

    python benchmarks/epochs_and_tail.py [--sweep=benchmarks/configs/ml-100k-5seeds.yaml]

Writes benchmarks/results/epochs_and_tail.json (no training: it reads the sweep's CSV).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scipy.stats import spearmanr  # noqa: E402

from recbole_guided.benchmark import load_sweep  # noqa: E402
from recbole_guided.benchmark_report import read_rows  # noqa: E402
from recbole_guided.provenance import git_commit, machine  # noqa: E402


def model_summary(rows: list[dict]) -> dict:
    epochs = [int(r["epochs_trained"]) for r in rows]
    tail = [float(r["test_tail_ndcg@10"]) for r in rows]
    overall = [float(r["test_ndcg@10"]) for r in rows]
    by_epochs: dict[int, list[float]] = {}
    for e, t in zip(epochs, tail):
        by_epochs.setdefault(e, []).append(round(t, 4))
    tail_rho, tail_p = spearmanr(epochs, tail)
    all_rho, all_p = spearmanr(epochs, overall)
    return {"runs": len(rows), "variants": sorted({r["variant"] for r in rows}),
            "spearman_epochs_tail_ndcg@10": {"rho": round(float(tail_rho), 3), "p": float(f"{tail_p:.2g}")},
            "spearman_epochs_all_ndcg@10": {"rho": round(float(all_rho), 3), "p": float(f"{all_p:.2g}")},
            "tail_ndcg@10_by_epochs_trained": {str(e): by_epochs[e] for e in sorted(by_epochs)}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sweep", default=str(REPO / "benchmarks" / "configs" / "ml-100k-5seeds.yaml"))
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "epochs_and_tail.json"))
    args = parser.parse_args()
    sweep = load_sweep(args.sweep)
    rows = [r for r in read_rows(REPO / sweep["results"]) if r["variant"] != "base"]
    out = {"command": "python benchmarks/epochs_and_tail.py --sweep="
                      f"{Path(args.sweep).resolve().relative_to(REPO)}",
           "date": date.today().isoformat(), "commit": git_commit(REPO), "machine": f"{machine()}; reads a CSV (no training)",
           "results": sweep["results"],
           "models": {m: model_summary([r for r in rows if r["model"] == m])
                      for m in sweep["models"] if any(r["model"] == m for r in rows)}}
    Path(args.output).write_text(json.dumps(out, indent=1) + "\n")
    for model, s in out["models"].items():
        tail, overall = s["spearman_epochs_tail_ndcg@10"], s["spearman_epochs_all_ndcg@10"]
        print(f"{model}: {s['runs']} Guided runs; Spearman(epochs trained, tail NDCG@10) {tail['rho']:+.2f} "
              f"(p={tail['p']}), (epochs, all-user NDCG@10) {overall['rho']:+.2f} (p={overall['p']})")
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
