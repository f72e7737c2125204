"""Where a training epoch's time goes on this machine: the torch operations of one epoch, profiled.

Why: the sweeps are CPU-bound (a GuidedSASRec run is about 5 minutes of a core here); before
optimizing anything, see which operations the time is spent in. Dropout stood out, so the same
dropout is also timed against a mask drawn with ``torch.rand``, side by side in one process.

    OMP_NUM_THREADS=1 python benchmarks/epoch_profile.py [--model=SASRec] [--dataset=ml-100k]

Writes benchmarks/results/epoch_profile.json with the command, commit and machine. It profiles the
parent: a Guided model's epoch costs the same (``benchmarks/speed.py``, README "Cost").
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from speed import build  # noqa: E402

from recbole_guided.provenance import git_commit, machine  # noqa: E402


def profile_epoch(trainer, train) -> tuple[float, list[dict]]:
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    trainer._train_epoch(train, 0)
    profiler.disable()
    seconds = time.perf_counter() - start
    stats = pstats.Stats(profiler).stats  # (file, line, name) -> (calls, primitive, own time, cumulative, callers)
    top = sorted(stats.items(), key=lambda item: -item[1][2])[:12]
    return seconds, [{"function": name if file == "~" else f"{Path(file).name}:{line}({name})",
                      "calls": calls, "own_seconds": round(own, 3), "share": round(own / seconds, 3)}
                     for (file, line, name), (_, calls, own, _, _) in top]


def dropout_side_by_side(shape, p: float = 0.5, repeats: int = 50) -> dict:
    """Milliseconds per call of ``F.dropout`` and of a ``torch.rand`` mask (same expectation)."""
    x = torch.randn(*shape)
    ways = {"F.dropout": lambda: torch.nn.functional.dropout(x, p, True),
            "rand mask": lambda: x * (torch.rand_like(x) >= p) / (1 - p)}
    times = {name: [] for name in ways}
    for _ in range(repeats):  # alternating, so both see the same machine load
        for name, way in ways.items():
            start = time.perf_counter()
            way()
            times[name].append(time.perf_counter() - start)
    medians = {name: 1000 * statistics.median(t) for name, t in times.items()}
    return {"shape": list(shape), "ms_median": medians, "ratio": medians["F.dropout"] / medians["rand mask"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="SASRec")
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--config_files", default=str(REPO / "properties" / "quickstart.yaml"))
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "epoch_profile.json"))
    args = parser.parse_args()
    settings = yaml.safe_load(Path(args.config_files).read_text())
    trainer, train, _ = build(args.model, args.dataset, {**settings, "show_progress": False})
    seconds, top = profile_epoch(trainer, train)
    hidden = trainer.config["hidden_size"] or trainer.config["embedding_size"]
    shape = (trainer.config["train_batch_size"], trainer.config["MAX_ITEM_LIST_LENGTH"], hidden)
    result = {"command": "python benchmarks/epoch_profile.py " + " ".join(sys.argv[1:]),
              "commit": git_commit(REPO), "machine": machine(), "torch_threads": torch.get_num_threads(),
              "model": args.model, "dataset": args.dataset, "epoch_seconds_profiled": round(seconds, 1),
              "top_own_time": top, "dropout_one_batch": dropout_side_by_side(shape)}
    Path(args.output).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
