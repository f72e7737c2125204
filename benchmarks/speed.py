"""Does the refined table cost anything? Time each Guided model against its parent, side by side.

For each pair, on the same data and settings, in one process: one training epoch and one
full-ranking evaluation of the parent, then of the Guided model, repeated ``--repeats`` times
(alternating, so both see the same machine load); the medians' ratio is written out.

    python benchmarks/speed.py --dataset=ml-100k --repeats=2

The Guided models are built from a random base embedding file here: the values do not change
the cost, and no base stage is needed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from recbole.data import create_dataset  # noqa: E402

from recbole_guided.compat import SafeTrainer  # noqa: E402
from recbole_guided.config import GuidedConfig  # noqa: E402
from recbole_guided.pipeline import build_model, prepare_data  # noqa: E402
from recbole_guided.provenance import git_commit, machine  # noqa: E402
from recbole_guided.data_files import BaseEmbeddings  # noqa: E402

PAIRS = [("SASRec", "GuidedSASRec"), ("BERT4Rec", "GuidedBERT4Rec"), ("GRU4Rec", "GuidedGRU4Rec")]


def build(model_name: str, dataset: str, settings: dict):
    config = GuidedConfig(model_name, dataset, config_dict=settings)
    data = prepare_data(config)
    return SafeTrainer(config, build_model(config, data), data.dataset), data.train_data, data.valid_data


def time_once(trainer, train, valid) -> tuple[float, float]:
    start = time.perf_counter()
    trainer._train_epoch(train, 0)
    mid = time.perf_counter()
    trainer.evaluate(valid, load_best_model=False)
    return mid - start, time.perf_counter() - mid


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--config_files", default=str(REPO / "properties" / "quickstart.yaml"))
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "speed.json"))
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())

    settings = {k: v for k, v in GuidedConfig("SASRec", args.dataset, args.config_files.split()).final_config_dict.items()
                if k in ("MAX_ITEM_LIST_LENGTH", "train_batch_size", "eval_batch_size")}
    settings["show_progress"] = False
    with tempfile.TemporaryDirectory() as tmp:
        probe = GuidedConfig("SASRec", args.dataset, config_dict=settings)
        data = create_dataset(probe)
        tokens = [str(t) for t in data.field2id_token[data.iid_field][1:]]
        base_file = Path(tmp) / "random-base.npz"
        BaseEmbeddings(tokens, np.random.default_rng(0).normal(size=(len(tokens), 64))).write(base_file)
        guided_settings = {**settings, "base_embedding_file": str(base_file), "guided_source": "metadata"}

        rows = []
        for parent, guided in PAIRS:
            runs = {parent: build(parent, args.dataset, settings), guided: build(guided, args.dataset, guided_settings)}
            times = {name: ([], []) for name in runs}
            for _ in range(args.repeats):
                for name, (trainer, train, valid) in runs.items():
                    t_train, t_eval = time_once(trainer, train, valid)
                    times[name][0].append(t_train)
                    times[name][1].append(t_eval)
            med = {name: (statistics.median(t[0]), statistics.median(t[1])) for name, t in times.items()}
            rows.append({
                "parent": parent, "guided": guided,
                "train_epoch_s": {parent: med[parent][0], guided: med[guided][0]},
                "full_ranking_eval_s": {parent: med[parent][1], guided: med[guided][1]},
                "guided_table": repr(runs[guided][0].model.item_embedding),
                "train_ratio": med[guided][0] / med[parent][0],
                "eval_ratio": med[guided][1] / med[parent][1],
            })
            print(f"{guided}/{parent}: train x{rows[-1]['train_ratio']:.3f}, eval x{rows[-1]['eval_ratio']:.3f}", flush=True)

    out = {
        "command": "python benchmarks/speed.py " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "threads": torch.get_num_threads(),  # results and times depend on it (OMP_NUM_THREADS)
        "commit": git_commit(),
        "dataset": args.dataset,
        "settings": settings,
        "guided_part": "guided_source=metadata (ml-100k genres as attributes), user guided vectors on",
        "repeats": args.repeats,
        "results": rows,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(out, indent=2))
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
