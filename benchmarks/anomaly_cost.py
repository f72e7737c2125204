"""What RecBole's import-time anomaly detection costs: training steps with it on and off, side by side.

Importing RecBole's sequential models runs its ``sine.py``, which turns on
``torch.autograd.set_detect_anomaly`` for the whole process; ``recbole_guided.compat`` turns it off
again. For each parent, on ml-100k with the quickstart settings, this times the same training
steps (``--batches`` batches, from the same starting weights) alternately with anomaly detection
on and off, ``--repeats`` times, and writes the medians and their ratio. It also checks that both
give the same loss and weights: the detection only watches, it changes no number.

    OMP_NUM_THREADS=1 python benchmarks/anomaly_cost.py --batches=20 --repeats=2
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from recbole.utils import init_seed  # noqa: E402

from recbole_guided.config import GuidedConfig  # noqa: E402
from recbole_guided.pipeline import build_model, prepare_data  # noqa: E402
from recbole_guided.provenance import git_commit, machine  # noqa: E402


def train_steps(model, batches, anomaly: bool) -> tuple[float, torch.Tensor]:
    """Seconds for the steps, and the weights they end at."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    torch.autograd.set_detect_anomaly(anomaly)
    try:
        start = time.perf_counter()
        for batch in batches:
            optimizer.zero_grad()
            model.calculate_loss(batch).backward()
            optimizer.step()
        seconds = time.perf_counter() - start
    finally:
        torch.autograd.set_detect_anomaly(False)
    return seconds, torch.cat([p.detach().flatten() for p in model.parameters()])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="SASRec,BERT4Rec,GRU4Rec")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--config_files", default=str(REPO / "properties" / "quickstart.yaml"))
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "anomaly_cost.json"))
    args = parser.parse_args()

    rows = []
    for name in args.models.split(","):
        config = GuidedConfig(name, "ml-100k", args.config_files.split(), {"seed": 2020})
        data = prepare_data(config)
        batches = [batch for batch, _ in zip(data.train_data, range(args.batches))]
        start = build_model(config, data)
        times = {True: [], False: []}
        weights = {}
        for _ in range(args.repeats):
            for anomaly in (True, False):
                model = copy.deepcopy(start)
                init_seed(config["seed"], config["reproducibility"])  # same dropout masks both ways
                seconds, weights[anomaly] = train_steps(model, batches, anomaly)
                times[anomaly].append(seconds)
        on, off = statistics.median(times[True]), statistics.median(times[False])
        rows.append({"model": name, "seconds_anomaly_on": on, "seconds_anomaly_off": off, "slowdown": on / off,
                     "same_weights": bool(torch.equal(weights[True], weights[False]))})
        print(f"{name}: {args.batches} steps {on:.2f} s with anomaly detection, {off:.2f} s without: "
              f"x{on / off:.2f}; same weights: {rows[-1]['same_weights']}", flush=True)

    out = {"command": "python benchmarks/anomaly_cost.py " + " ".join(sys.argv[1:]),
           "threads": torch.get_num_threads(), "machine": machine(), "commit": git_commit(),
           "batch_size": config["train_batch_size"], "results": rows}
    Path(args.output).write_text(json.dumps(out, indent=2))
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
