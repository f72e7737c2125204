"""How much item popularity the attribute ratings carry, and what a trained model does with it.

Why: with the qwen2.5-1.5b ratings, GuidedSASRec ranks long-tail targets lower than SASRec does
(docs/benchmarks.md). A rater that knows the films also knows which ones are famous; if the
ratings predict popularity, the guided part of the score is a popularity channel.

Two measurements, written to benchmarks/results/popularity_in_attributes.json:

1. Per guided file: the cross-validated R^2 of log(1 + training count) from the item's ratings
   (ridge, 5 shuffled folds), raw and with each item's mean removed (``guided_center: item``);
   random vectors of the same shape as the floor.
2. Per checkpoint given with ``--checkpoints``: over the test users, the Spearman correlation of
   the guided part of the score (averaged over users) with log popularity, and NDCG@10 / the median
   rank of tail and head targets under the whole score and under its base part alone.

    python benchmarks/popularity_in_attributes.py --checkpoints saved/GuidedSASRec-...pth ...

``--residualized_file PATH`` also writes the shipped ratings with each item's mean removed and then
each attribute's linear fit on training log popularity subtracted: the popularity-free ratings
for a run with ``--guided_file=PATH --guided_center=none``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import KFold, cross_val_score

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from recbole_guided.provenance import git_commit, machine  # noqa: E402

FILES = {"qwen2.5-1.5b (shipped)": REPO / "dataset" / "ml-100k" / "ml-100k.guided",
         "SmolLM2-135M": REPO / "benchmarks" / "results" / "ml-100k.smollm2-135m.guided"}


def read_table(path: Path) -> pd.DataFrame:
    table = pd.read_csv(path, sep="\t")
    tokens = [c for c in table.columns if c.endswith(":token")]
    table[tokens] = table[tokens].astype(str)  # item ids compare as tokens, as RecBole reads them
    table.columns = [c.split(":")[0] for c in table.columns]
    return table


def training_log_popularity(inter_file: Path, items: pd.Series) -> np.ndarray:
    """log(1 + count) over ml-100k's training split (each user's last two interactions held out)."""
    inter = read_table(inter_file).sort_values(["user_id", "timestamp"], kind="stable")
    train = inter[inter.groupby("user_id").cumcount(ascending=False) >= 2]
    return np.log1p(items.map(train["item_id"].value_counts()).fillna(0).to_numpy(float))


def popularity_r2(features: np.ndarray, log_pop: np.ndarray) -> float:
    folds = KFold(5, shuffle=True, random_state=0)
    return float(cross_val_score(RidgeCV(), features, log_pop, cv=folds, scoring="r2").mean())


def file_rows() -> list[dict]:
    rows = []
    for name, path in FILES.items():
        table = read_table(path)
        ratings = table.iloc[:, 1:].to_numpy(float)
        log_pop = training_log_popularity(REPO / "dataset" / "ml-100k" / "ml-100k.inter", table.iloc[:, 0])
        centered = ratings - ratings.mean(axis=1, keepdims=True)
        rows.append({"ratings": name, "raw": popularity_r2(ratings, log_pop),
                     "item-centered": popularity_r2(centered, log_pop)})
    noise = np.random.default_rng(0).normal(size=ratings.shape)
    rows.append({"ratings": "random (same shape)", "raw": popularity_r2(noise, log_pop), "item-centered": None})
    return rows


def write_residualized(path: Path) -> None:
    table = read_table(FILES["qwen2.5-1.5b (shipped)"])
    ratings = table.iloc[:, 1:].to_numpy(float)
    ratings = ratings - ratings.mean(axis=1, keepdims=True)  # centered first: centering after would put popularity back
    log_pop = training_log_popularity(REPO / "dataset" / "ml-100k" / "ml-100k.inter", table.iloc[:, 0])
    design = np.c_[np.ones_like(log_pop), log_pop]
    fit, *_ = np.linalg.lstsq(design, ratings, rcond=None)
    header = FILES["qwen2.5-1.5b (shipped)"].read_text().split("\n", 1)[0] + "\n"
    body = pd.DataFrame(ratings - design @ fit).round(4)
    body.insert(0, "item", table.iloc[:, 0])
    with open(path, "w") as f:
        f.write(header)
        body.to_csv(f, sep="\t", header=False, index=False)


def checkpoint_row(path: str) -> dict:
    import torch

    from recbole_guided.evaluation import UserRanks, decompose, head_items, training_counts
    from recbole_guided.quick_start import load_guided_model

    torch.set_num_threads(1)
    config, model, dataset, train_data, _, test_data = load_guided_model(path)
    counts, _ = training_counts(train_data.dataset)  # the evaluation's groups, from the same counts
    head = head_items(counts)
    ranks = {"whole score": [], "base part alone": []}
    tail, guided_mean = [], []
    for interaction, history, users, targets in test_data:
        base, contributions = decompose(model, interaction)
        guided = contributions.sum(-1)
        for name, scores in (("whole score", base + guided), ("base part alone", base.clone())):
            scores[:, 0] = -torch.inf
            if history is not None:
                scores[history[0], history[1]] = -torch.inf
            target = scores[users, targets]
            ranks[name].append(((scores > target[:, None]).sum(1) + 1).numpy())
        tail.append(~head[targets.numpy()])
        guided_mean.append(guided.sum(0).numpy())
    tail = np.concatenate(tail)
    mean_guided = np.sum(guided_mean, axis=0)[1:] / len(tail)
    row = {"checkpoint": path, "seed": config["seed"], "guided_source": config["guided_source"],
           "guided_center": config["guided_center"],  # as trained (config.checkpoint_config)
           "spearman(guided part, log popularity)": float(spearmanr(mean_guided, np.log1p(counts[1:]))[0]),
           "tail users": int(tail.sum()), "head users": int((~tail).sum())}
    for name, parts in ranks.items():
        rank = np.concatenate(parts)
        ndcg = UserRanks(None, None, rank).metric("ndcg", 10)
        row[name] = {"ndcg@10 tail": float(ndcg[tail].mean()), "ndcg@10 head": float(ndcg[~tail].mean()),
                     "median rank tail": float(np.median(rank[tail])), "median rank head": float(np.median(rank[~tail]))}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", nargs="*", default=[])
    parser.add_argument("--residualized_file", default=None)
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "popularity_in_attributes.json"))
    args = parser.parse_args()
    if args.residualized_file:
        write_residualized(Path(args.residualized_file))
    result = {"command": "python benchmarks/popularity_in_attributes.py " + " ".join(sys.argv[1:]),
              "commit": git_commit(REPO), "machine": machine(),
              "popularity R^2 from the ratings": file_rows(),
              "trained models": [checkpoint_row(p) for p in args.checkpoints]}
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
