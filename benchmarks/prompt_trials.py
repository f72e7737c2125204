"""Prompt trials: score the first ``--limit`` ml-100k items with each schema variant (logprob mode,
one model load, a cache file per trial) and count the expected genre relations that hold on them.

    python benchmarks/prompt_trials.py --trials=base,knowledge [--limit=100] [--llm=qwen2.5-1.5b]
        [--dtype=bfloat16] [--genres=Horror,Documentary] [--cache_from=TRIAL:PATH]

``--genres`` adds every item of those genres to the first ``--limit`` (so that rare genres can be
tested); ``--cache_from`` starts a trial's cache from an earlier run's answers (same prompt and
model: reused, not asked again).

A trial is a schema YAML: ``benchmarks/prompt_trials/<name>.yaml`` (``base`` is the shipped
``properties/attributes/movies.yaml``). Writes ``benchmarks/results/prompt_trials.json`` (trials of
earlier runs are kept unless rerun) and prints one line per trial.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).absolute().parents[1]  # not resolve(): a copy run elsewhere reads its own tree
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from llm_validity import genre_correlations  # noqa: E402

from recbole_guided.llm.backends import HFBackend, locate_short_name  # noqa: E402
from recbole_guided.llm.prompts import item_messages, read_item_texts  # noqa: E402
from recbole_guided.llm.schema import SCHEMA_DIR, AttributeSchema  # noqa: E402
from recbole_guided.llm.scorer import score_all  # noqa: E402

ITEM_FILE = ROOT / "dataset/ml-100k/ml-100k.item"


def items_of_genres(genres: list[str]) -> list[str]:
    tokens = []
    for line in ITEM_FILE.read_text(encoding="utf-8").splitlines()[1:]:
        cells = line.split("\t")
        if set(cells[3].split()) & set(genres):
            tokens.append(cells[0])
    return tokens


def schema_path(trial: str) -> Path:
    return SCHEMA_DIR / "movies.yaml" if trial == "base" else ROOT / "benchmarks/prompt_trials" / f"{trial}.yaml"


def summary(rows: list[dict]) -> dict:
    testable = [r for r in rows if np.isfinite(r["spearman"])]
    right = [r for r in testable if np.sign(r["spearman"]) == r["expected_sign"]]
    holds = [r for r in right if r["p_value"] < 0.05]
    return {"testable": len(testable), "right_sign": len(right), "hold_p05": len(holds),
            "mean_signed_rho": float(np.mean([r["spearman"] * r["expected_sign"] for r in testable]))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", required=True)
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--llm", default="qwen2.5-1.5b")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--out_dir", default=str(ROOT / "saved/llm/trials"))
    parser.add_argument("--genres", default="")
    parser.add_argument("--cache_from", default="")
    args = parser.parse_args(argv)
    argv = argv if argv is not None else sys.argv[1:]
    backend = HFBackend(locate_short_name(args.llm) if not Path(args.llm).exists() else Path(args.llm),
                        device_map="cpu", dtype=args.dtype)
    results_file = ROOT / "benchmarks/results/prompt_trials.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    for trial in args.trials.split(","):
        schema = AttributeSchema.load(schema_path(trial))
        every = read_item_texts(ITEM_FILE, schema)
        wanted = set(list(every)[:args.limit]) | set(items_of_genres(args.genres.split(",")) if args.genres else ())
        prompts = {t: item_messages(schema, text, "logprob") for t, text in every.items() if t in wanted}
        sample = f"limit{args.limit}" + (f"+{args.genres.replace(',', '+')}" if args.genres else "")
        out = Path(args.out_dir) / f"{trial}.{sample}.guided"
        cache = Path(args.out_dir) / f"{trial}.jsonl"
        for entry in filter(None, args.cache_from.split(",")):
            name, path = entry.split(":", 1)
            if name == trial and not cache.exists():
                cache.parent.mkdir(parents=True, exist_ok=True)
                cache.write_bytes(Path(path).read_bytes())
        start = time.perf_counter()
        table, report = score_all(schema, prompts, backend, "logprob", cache, out, show_progress=False)
        rows = genre_correlations(out, ITEM_FILE)
        spread = float(np.mean(table.values.std(axis=0)))
        results[f"{trial}@{sample}" if args.genres else trial] = {"command": "python benchmarks/prompt_trials.py " + " ".join(argv),
                          "schema": str(schema_path(trial).relative_to(ROOT)) if schema_path(trial).is_relative_to(ROOT) else str(schema_path(trial)),
                          "model_id": backend.model_id, "items": len(table.tokens),
                          "seconds": round(time.perf_counter() - start, 1), "scored_now": report.scored,
                          "mean_std_of_scores": spread, **summary(rows),
                          "relations": {f"{r['attribute']}/{r['genre']}": round(r["spearman"], 3) for r in rows}}
        s = results[f"{trial}@{sample}" if args.genres else trial]
        print(f"{trial}: {s['hold_p05']}/{s['testable']} hold (right sign {s['right_sign']}), "
              f"mean signed rho {s['mean_signed_rho']:+.3f}, score spread {spread:.2f}, {s['seconds']} s; "
              + ", ".join(f"{k} {v:+.2f}" for k, v in s["relations"].items()), flush=True)
        results_file.parent.mkdir(parents=True, exist_ok=True)
        results_file.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
