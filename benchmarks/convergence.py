"""Is the sweep's `base` a fair baseline, or cut short by the sweep's epoch cap?

For each parent model, train it as the sweep's base stage does (same config files, seed, split),
but with the cap lifted (``--epochs``, default 100; ``--stopping_step``, default RecBole's patience
of 10), and compare its test result with the capped `base` row of the sweep CSV for the same seed. With
``reproducibility`` on, the capped run is the first epochs of this one (the valid curves match
epoch by epoch), so the curve also shows where the cap stopped it.

    python benchmarks/convergence.py --models=GRU4Rec,BERT4Rec,SASRec --seed=2020

Writes ``benchmarks/results/convergence.json``, one entry per model as it finishes (a rerun skips
finished models); the benchmark report sets each beside the sweep's capped row.
"""

from __future__ import annotations

import argparse
import json
import sys
from logging import getLogger
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from recbole.utils import init_logger  # noqa: E402

from recbole_guided.atomic_files import atomic_path  # noqa: E402
from recbole_guided.benchmark import load_sweep, run_settings  # noqa: E402
from recbole_guided.benchmark_report import capped_base_row, read_rows  # noqa: E402
from recbole_guided.config import GuidedConfig, parent_model  # noqa: E402
from recbole_guided.pipeline import train_and_evaluate  # noqa: E402
from recbole_guided.provenance import git_commit, machine  # noqa: E402

METRICS = ["mrr@10", "ndcg@10", "recall@10", "recall@20"]


def finished_runs(output: Path) -> dict:
    return json.loads(output.read_text()) if output.is_file() else {"runs": {}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sweep", default=str(REPO / "benchmarks" / "configs" / "ml-100k.yaml"))
    parser.add_argument("--models", default="SASRec,GRU4Rec,BERT4Rec")
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--stopping_step", type=int, default=10, help="RecBole's default patience")
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "convergence.json"))
    args = parser.parse_args()
    sweep = load_sweep(args.sweep)
    output = Path(args.output)
    done = finished_runs(output)

    for parent in args.models.split(","):
        key = f"{parent}-seed{args.seed}"
        if key in done["runs"]:
            continue
        guided = next(m for m in sweep["models"] if parent_model(m) == parent)
        settings = {**run_settings(sweep, guided, "base", args.seed),  # the sweep's own settings,
                    "epochs": args.epochs, "stopping_step": args.stopping_step}  # the cap lifted
        config = GuidedConfig(parent, sweep["datasets"][0], [str(REPO / f) for f in sweep["config_files"]], settings)
        init_logger(config)
        getLogger().info(config)
        result = train_and_evaluate(config, saved=True)
        curve = result["valid_scores"]
        done = finished_runs(output)  # again: another seed's process may have written meanwhile
        done["runs"][key] = {
            "model": parent, "seed": args.seed, "budget": settings,
            "epochs_trained": result["epochs_trained"],
            # 0-based, as RecBole logs epochs; the last of tied epochs, as RecBole keeps it (``>=``)
            "best_epoch": len(curve) - 1 - curve[::-1].index(max(curve)),
            f"valid_{config['valid_metric'].lower()}_curve": curve,
            "test": {m: float(result["test_result"][m]) for m in METRICS},
            "seconds_per_epoch": result["seconds_per_epoch"],
            "command": "python benchmarks/convergence.py " + " ".join(sys.argv[1:]),
            "commit": git_commit(),
            "machine": machine(),
        }
        done["sweep"] = str(Path(args.sweep).resolve().relative_to(REPO))
        with atomic_path(output) as tmp:  # the benchmark report may read it meanwhile
            tmp.write_text(json.dumps(done, indent=2))
        row = done["runs"][key]
        capped = capped_base_row(read_rows(REPO / sweep["results"]), parent, args.seed)
        capped_mrr = float(capped["test_mrr@10"]) if capped else float("nan")
        print(f"{parent} seed {args.seed}: best epoch {row['best_epoch']} of {row['epochs_trained']}, test MRR@10 "
              f"{row['test']['mrr@10']:.4f} (capped base row: {capped_mrr:.4f})", flush=True)


if __name__ == "__main__":
    main()
