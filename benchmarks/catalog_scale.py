"""Everything between the atomic files and the first training step, at 10^4, 10^5 and 10^6 items.

A synthetic catalog per size (``.inter``, ``.item``, ``.guided`` with 8 attributes, a 64-wide base
``.npz``) in a temporary folder; a modest, fixed number of users and interactions, so the catalog
and not the training data is what grows. Each size runs in a fresh process, and each stage is
measured for wall time and peak memory: the peak resident set size during the stage minus the
resident size when it began (Linux ``VmHWM``, reset before each stage through
``/proc/self/clear_refs``): everything the stage holds at its peak, numpy and torch included.

Stages: reading and validating the guided and base files, RecBole's own dataset and split (the
parent pays them too), aligning tokens to RecBole ids, PCA, building the refined table (files
read again, normalization, PCA: what the model constructor does), the model constructor, one
training step with CE and with BPR, the switch to evaluation (``model.eval()``, once per
evaluation pass) and one full-ranking evaluation batch (scores, history masked, top-10), each for
GuidedSASRec and SASRec; and the scorer's answer cache with as many answers as
items (load, look up every item, and a resume with all but 100 cached through ``score_all``).

    OMP_NUM_THREADS=1 python benchmarks/catalog_scale.py [--sizes=10000,100000,1000000]
        [--users=2000] [--per_user=20] [--output=benchmarks/results/catalog_scale.json]
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).absolute().parents[1]
sys.path.insert(0, str(ROOT))

ATTRIBUTES = ["family_friendly", "humor", "tension", "romance", "action", "darkness", "thought_provoking",
              "spectacle"]
BASE_WIDTH = 64
STEPS = 3            # timed training steps (after one warm-up step), median reported
RESUME_MISSING = 100  # answers left out of the cache in the resume stage


# --- memory -------------------------------------------------------------------------------------

def _status(field: str) -> float:
    """A ``/proc/self/status`` field in MB."""
    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024


PROCESS_PEAK = [0.0]  # the process's own peak RSS (clear_refs resets VmHWM, so it is kept here)


def measure(results: dict, name: str, fn, *args, **kwargs):
    """Run ``fn``, record its wall time and peak memory above the resident size it started from."""
    gc.collect()
    PROCESS_PEAK[0] = max(PROCESS_PEAK[0], _status("VmHWM"))
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    start_rss = _status("VmRSS")
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    seconds = time.perf_counter() - start
    peak = _status("VmHWM")
    PROCESS_PEAK[0] = max(PROCESS_PEAK[0], peak)
    results[name] = {"seconds": round(seconds, 4), "peak_mb": round(peak - start_rss, 1)}
    print(f"  {name}: {seconds:.3f} s, +{results[name]['peak_mb']:.0f} MB", file=sys.stderr, flush=True)
    return out


# --- the synthetic catalog ---------------------------------------------------------------------

def make_catalog(folder: Path, n_items: int, users: int, per_user: int, seed: int = 0) -> dict:
    """Atomic files of ``n_items`` items; the guided and base files list them in shuffled order."""
    import numpy as np

    from recbole_guided.data_files import BaseEmbeddings, GuidedTable

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    name = folder.name
    tokens = [f"i{k}" for k in range(n_items)]
    with open(folder / f"{name}.inter", "w") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for u in range(users):
            for t, k in enumerate(rng.choice(n_items, size=per_user, replace=False)):
                f.write(f"u{u}\t{tokens[k]}\t{u * 1000 + t}\n")
    (folder / f"{name}.item").write_text("item_id:token\n" + "".join(t + "\n" for t in tokens))
    order = rng.permutation(n_items)
    shuffled = [tokens[k] for k in order]
    GuidedTable("item_id", shuffled, ATTRIBUTES, rng.integers(1, 10, size=(n_items, len(ATTRIBUTES))) +
                rng.random((n_items, len(ATTRIBUTES)))).write(folder / f"{name}.guided")
    # float32, as a trained model exports it
    BaseEmbeddings(shuffled, rng.normal(size=(n_items, BASE_WIDTH)).astype(np.float32)).write(folder / "base.npz")
    return {"guided_file_mb": round((folder / f"{name}.guided").stat().st_size / 1e6, 1),
            "base_file_mb": round((folder / "base.npz").stat().st_size / 1e6, 1)}


def settings(root: Path, **overrides) -> dict:
    return {"data_path": str(root), "checkpoint_dir": str(root / "saved"), "log_root": str(root / "log"),
            "load_col": {"inter": ["user_id", "item_id", "timestamp"], "item": ["item_id"]},
            "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full"},
            "MAX_ITEM_LIST_LENGTH": 50, "train_batch_size": 128, "eval_batch_size": 128,
            "show_progress": False, "save_dataset": False, "save_dataloaders": False, "seed": 2020,
            "base_embedding_file": str(root / "synth" / "base.npz"), **overrides}


BPR = {"loss_type": "BPR", "train_neg_sample_args": {"distribution": "uniform", "sample_num": 1}}


# --- the stages ----------------------------------------------------------------------------------

def train_steps(model, batch) -> list[float]:
    """One warm-up step (Adam's state is allocated there), then ``STEPS`` timed ones."""
    import torch

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    times = []
    for step in range(STEPS + 1):
        start = time.perf_counter()
        optimizer.zero_grad()
        model.calculate_loss(batch).backward()
        optimizer.step()
        if step:
            times.append(time.perf_counter() - start)
    return times


def eval_batch(model, batch, n_items: int):
    """What ``Trainer._full_sort_batch_eval`` does with one batch: scores, history masked, top-10
    (the model already in eval mode: ``Trainer.evaluate`` switches once per pass)."""
    import torch

    interaction, history_index, _, _ = batch
    with torch.no_grad():
        scores = model.full_sort_predict(interaction).view(-1, n_items)
        scores[:, 0] = -math.inf
        if history_index is not None:
            scores[history_index] = -math.inf
        return torch.topk(scores, 10, dim=-1)


def model_stages(results: dict, tag: str, loss: str, model_class, config, data, n_items: int) -> None:
    """The constructor, then (CE) one evaluation batch and the training steps, or (BPR) the steps."""
    import torch

    model = measure(results, f"model_init[{tag}]", model_class, config, data.train_data._dataset)
    batch = next(iter(data.train_data))
    if loss == "CE":
        eval_input = next(iter(data.test_data))
        # once per evaluation pass; a Guided model re-places its cold rows there (place_cold_rows)
        measure(results, f"eval_switch[{tag}]", model.eval)
        measure(results, f"eval_batch[{tag}]", eval_batch, model, eval_input, n_items)
        results["eval_users_per_batch"] = len(eval_input[0])
    else:  # what RecBole's uniform sampler adds to a BPR batch
        negatives = torch.randint(1, n_items, (len(batch),))
        batch = type(batch)({**{k: batch[k] for k in batch.columns}, model.NEG_ITEM_ID: negatives})
    name, times = f"train_step_{loss.lower()}[{tag}]", []
    measure(results, name, lambda: times.extend(train_steps(model, batch)))
    results[name]["seconds"] = round(statistics.median(times), 4)  # per step
    print(f"  {name}: {results[name]['seconds']:.3f} s per step", file=sys.stderr, flush=True)
    if loss == "BPR":  # the constructor is measured in the CE process
        del results[f"model_init[{tag}]"]


def _look_up(cache, hashes: dict, model_id: str) -> int:
    return sum(cache.get(token, prompt, model_id) is None for token, prompt in hashes.items())


def cache_stages(results: dict, folder: Path, n_items: int) -> None:
    from recbole_guided.llm.prompts import RenderedPrompts, prompt_hash
    from recbole_guided.llm.scorer import AnswerCache, score_all

    def render(token):  # a prompt as long as a real one (~1.8 KB), distinct per item
        return [{"role": "system", "content": "You are an experienced salesperson."},
                {"role": "user", "content": "Rate the movie on each attribute. " * 50 + f"The movie: {token}"}]

    tokens = [f"i{k}" for k in range(n_items)]
    messages = RenderedPrompts({t: t for t in tokens}, render)
    path = folder / "answers.jsonl"
    model_id = "http://127.0.0.1:8000/v1#default"
    with open(path, "w") as f:  # every answer but RESUME_MISSING of them, spread over the catalog
        skip = set(tokens[:: max(1, n_items // RESUME_MISSING)])
        for t in tokens:
            if t not in skip:
                f.write(json.dumps({"token": t, "prompt": prompt_hash(messages[t], "logprob"), "model": model_id,
                                    "mode": "logprob", "scores": {a: 5.0 for a in ATTRIBUTES}}) + "\n")
    cache = measure(results, "cache_load", AnswerCache, path)
    hashes = {t: prompt_hash(messages[t], "logprob") for t in tokens}
    measure(results, "cache_lookup", _look_up, cache, hashes, model_id)
    del cache, hashes
    gc.collect()

    class Instant:
        """A server that answers at once: the resume's own cost, with no network in it."""
        model_id, batch_size, asked = "http://127.0.0.1:8000/v1#default", 64, 0

        def expected_scores(self, prompts, schema):
            Instant.asked += len(prompts)
            return [{a: 5.0 for a in schema.names} for _ in prompts]

    from recbole_guided.llm.schema import Attribute, AttributeSchema
    schema = AttributeSchema("movies", "", "{title}", 1, 9, tuple(Attribute(a, a, "low", "high") for a in ATTRIBUTES))
    table, report = measure(results, "cache_resume", score_all, schema, messages, Instant(), "logprob", path,
                            folder / "resumed.guided", show_progress=False)
    results["cache_resume"].update(asked=Instant.asked, cached=report.cached, rows=len(table.tokens))
    assert Instant.asked == len(skip) and len(table.tokens) == n_items


def prepare(root: Path, model: str, **overrides):
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import init_seed

    from recbole_guided.config import GuidedConfig
    from recbole_guided.pipeline import Prepared

    config = GuidedConfig(model, "synth", config_dict=settings(root, **overrides))
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    return config, Prepared(dataset, *data_preparation(config, dataset))


def data_part(root: Path, n_items: int) -> dict:
    """The plugin's own stages, and RecBole's dataset and split for scale."""
    import torch
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import init_seed

    from recbole_guided.config import GuidedConfig
    from recbole_guided.data_files import BaseEmbeddings, GuidedTable, align_rows
    from recbole_guided.options import GuidedOptions
    from recbole_guided.refined_embedding import build_refined_embedding, pca_reduce
    from recbole_guided.training_split import warm_items

    torch.set_num_threads(1)
    results: dict = {}
    table = measure(results, "read_guided", GuidedTable.read, root / "synth" / "synth.guided", "item_id")
    base = measure(results, "read_base", BaseEmbeddings.read, root / "synth" / "base.npz")
    config = GuidedConfig("GuidedSASRec", "synth", config_dict=settings(root))
    init_seed(config["seed"], config["reproducibility"])
    dataset = measure(results, "recbole_dataset", create_dataset, config)
    train, _, _ = measure(results, "recbole_split", data_preparation, config, dataset)
    assert dataset.item_num == n_items + 1, dataset.item_num
    id2token = dataset.field2id_token[dataset.iid_field]
    results["warm_items"] = int(warm_items(train._dataset).sum())

    measure(results, "align_guided", align_rows, table.tokens, table.values, id2token, "guided")
    vectors = measure(results, "align_base", align_rows, base.tokens, base.vectors, id2token, "base")
    del table, base
    measure(results, "pca", pca_reduce, vectors[1:], BASE_WIDTH - len(ATTRIBUTES))
    del vectors
    parent_table = torch.nn.Embedding(n_items + 1, BASE_WIDTH, padding_idx=0)
    measure(results, "build_refined", build_refined_embedding, GuidedOptions.from_config(config), config,
            train._dataset, parent_table)
    return results


def model_part(root: Path, n_items: int, model: str, loss: str) -> dict:
    import torch
    from recbole.model.sequential_recommender import SASRec

    from recbole_guided.models import GuidedSASRec

    torch.set_num_threads(1)
    cls = {"GuidedSASRec": GuidedSASRec, "SASRec": SASRec}[model]
    config, data = prepare(root, model, **(BPR if loss == "BPR" else {}))
    results: dict = {}
    model_stages(results, model, loss, cls, config, data, n_items + 1)
    return results


def one_size(n_items: int, users: int, per_user: int) -> dict:
    """Write the catalog, then measure each part in a fresh process (memory figures of its own)."""
    row: dict = {"items": n_items}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        row["files"] = make_catalog(Path(tmp) / "synth", n_items, users, per_user)
        row["files"]["make_seconds"] = round(time.perf_counter() - start, 1)
        print(f"{n_items} items: catalog written in {row['files']['make_seconds']} s", file=sys.stderr, flush=True)
        for part in ("data", "cache", "GuidedSASRec:CE", "SASRec:CE", "GuidedSASRec:BPR", "SASRec:BPR"):
            done = subprocess.run([sys.executable, __file__, f"--part={part}", f"--root={tmp}", f"--one={n_items}"],
                                  stdout=subprocess.PIPE, text=True, check=True)
            row.update(json.loads(done.stdout.strip().splitlines()[-1]))
    return row


# --- growth ----------------------------------------------------------------------------------------

def growth(rows: list[dict]) -> dict:
    """For each stage, the exponent k in cost ~ items^k between consecutive sizes (1 = linear)."""
    out = {}
    stages = [k for k, v in rows[0].items() if isinstance(v, dict) and "seconds" in v]
    for stage in stages:
        entry = {}
        for a, b in zip(rows, rows[1:]):
            ratio = math.log(b["items"] / a["items"])
            span = f"{a['items']:.0e}->{b['items']:.0e}".replace("+0", "")
            for what in ("seconds", "peak_mb"):
                x, y = a[stage][what], b[stage][what]
                # memory below 5 MB is noise of the allocator, not something that grows
                ok = x > 0 and y > 0 and (what == "seconds" or max(x, y) >= 5)
                entry[f"{what}_exponent {span}"] = round(math.log(y / x) / ratio, 2) if ok else None
        out[stage] = entry
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--per_user", type=int, default=20)
    parser.add_argument("--one", type=int, default=None, help="(internal) the size a --part measures")
    parser.add_argument("--part", default=None, help="(internal) data | cache | <model>:<CE|BPR>, printed as JSON")
    parser.add_argument("--root", default=None, help="(internal) the catalog's folder")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "catalog_scale.json"))
    args = parser.parse_args()
    if args.part:
        results: dict = {}
        if args.part == "data":
            results = data_part(Path(args.root), args.one)
        elif args.part == "cache":
            cache_stages(results, Path(args.root), args.one)
        else:
            results = model_part(Path(args.root), args.one, *args.part.split(":"))
        results.setdefault(f"process_peak_rss_mb[{args.part}]", round(PROCESS_PEAK[0], 1))
        print(json.dumps(results))
        return

    from recbole_guided.provenance import git_commit, machine

    rows = []
    for n in map(int, args.sizes.split(",")):
        start = time.perf_counter()
        rows.append(one_size(n, args.users, args.per_user))
        rows[-1]["total_seconds"] = round(time.perf_counter() - start, 1)
    out = {"command": "OMP_NUM_THREADS=1 python benchmarks/catalog_scale.py " + " ".join(sys.argv[1:]),
           "machine": machine(), "threads": 1, "commit": git_commit(ROOT),
           "memory": "peak_mb: peak resident set size during the stage minus the resident size when it began "
                     "(VmHWM reset through /proc/self/clear_refs); a fresh process per size and part (data "
                     "stages, GuidedSASRec, SASRec)",
           "setup": {"users": args.users, "per_user": args.per_user, "attributes": len(ATTRIBUTES),
                     "base_width": BASE_WIDTH, "hidden_size": 64, "train_batch_size": 128, "eval_batch_size": 128,
                     "MAX_ITEM_LIST_LENGTH": 50, "train_steps": f"median of {STEPS} after one warm-up (Adam)"},
           "sizes": rows, "growth": growth(rows) if len(rows) > 1 else {}}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(out, indent=2) + "\n")
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
