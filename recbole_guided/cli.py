"""Command line, shaped like RecBole's ``run_recbole.py``.

    run_recbole_guided.py [train] --model=GuidedSASRec --dataset=ml-100k [--config_files="a.yaml b.yaml"]
                          [--results_file=out.json] [--any_recbole_key=value ...]
                          [--resume_file=saved/<model>-<date>.pth]
                          [--nproc=N [--world_size=W --ip=HOST --port=P --group_offset=K]]
    run_recbole_guided.py score ...      (LLM attribute scoring, see docs/llm_scoring.md)
    run_recbole_guided.py embed-items ... (text-encoder base embeddings, see docs/text_embedding.md)
    run_recbole_guided.py new-items ...  (the new-items protocol's dataset, see docs/cold_start.md)
    run_recbole_guided.py add-items ...  (new catalog items into a trained model, see docs/cold_start.md)
    run_recbole_guided.py finetune-llm ... (LoRA-tune the rating LLM on users, see docs/lora.md)
    run_recbole_guided.py explain ...    (attribute-level explanations, see recbole_guided/explain.py)
    run_recbole_guided.py benchmark ...  (the sweep, see docs/benchmarks.md)

User errors (bad files, unknown models, impossible options) print one clear message and exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from recbole_guided.errors import GuidedError

COMMANDS = ("train", "score", "embed-items", "new-items", "add-items", "finetune-llm", "explain", "benchmark")


def train_main(argv: list[str]) -> int:
    from recbole_guided.atomic_files import atomic_path
    from recbole_guided.quick_start import results_record, run_recbole_guided

    parser = argparse.ArgumentParser(prog="run_recbole_guided.py", description="Train and evaluate a model.")
    parser.add_argument("--model", "-m", default=None, help="GuidedSASRec, GuidedBERT4Rec, GuidedGRU4Rec or a RecBole model")
    parser.add_argument("--dataset", "-d", default=None, help="dataset name (default ml-100k)")
    parser.add_argument("--config_files", default=None, help="space separated YAML files")
    parser.add_argument("--results_file", default=None, help="write baseline vs Guided results as JSON here")
    parser.add_argument("--resume_file", default=None, help="continue training from this checkpoint")
    # RecBole's run_recbole.py arguments for several processes (docs/scale.md)
    parser.add_argument("--nproc", type=int, default=1, help="processes on this node (one GPU each; CPU: gloo)")
    parser.add_argument("--world_size", type=int, default=-1, help="processes on all nodes (default: nproc)")
    parser.add_argument("--ip", default="localhost", help="address of the node that holds rank 0")
    parser.add_argument("--port", default="5678", help="free port on that node")
    parser.add_argument("--group_offset", type=int, default=0, help="global rank of this node's first process")
    args, overrides = parser.parse_known_args(argv)
    bad = [a for a in overrides if not (a.startswith("--") and "=" in a)]
    if bad:
        parser.error(f"unrecognized arguments {bad}: RecBole settings are given as --key=value")
    config_files = args.config_files.split() if args.config_files else None
    model = args.model
    if model is None and not config_files:
        model = "GuidedSASRec"
    dataset = args.dataset or (None if config_files else "ml-100k")
    result = run_recbole_guided(model, dataset, config_files, cmd_args=overrides, resume_file=args.resume_file,
                                nproc=args.nproc, world_size=args.world_size, ip=args.ip, port=args.port,
                                group_offset=args.group_offset)
    if result is None:  # another node of a multi-node run: rank 0's node reports
        print(f"ranks {args.group_offset}..{args.group_offset + args.nproc - 1} done; the node with rank 0 reports")
        return 0
    if result["baseline"] is None:  # with a baseline, the run has logged the comparison table already
        print(json.dumps({"evaluation": result["evaluation"], "test_result": dict(result["test_result"])}, indent=2))
    if args.results_file:
        with atomic_path(args.results_file) as tmp:
            tmp.write_text(json.dumps(results_record(result), indent=2))
        print(f"results written to {args.results_file}")
    return 0


def dispatch(argv: list[str]) -> int:
    command = argv[0] if argv and argv[0] in COMMANDS else "train"
    rest = argv[1:] if argv and argv[0] in COMMANDS else argv
    if command == "train":
        return train_main(rest)
    if command == "score":
        from recbole_guided.llm.command import main as score_main
        return score_main(rest)
    if command == "new-items":
        from recbole_guided.new_items import main as new_items_main
        return new_items_main(rest)
    if command == "add-items":
        from recbole_guided.catalog_update import main as add_items_main
        return add_items_main(rest)
    if command == "embed-items":
        from recbole_guided.text_embedding import main as embed_main
        return embed_main(rest)
    if command == "finetune-llm":
        from recbole_guided.llm.finetune import main as finetune_main
        return finetune_main(rest)
    if command == "explain":
        from recbole_guided.explain import main as explain_main
        return explain_main(rest)
    from recbole_guided.benchmark_command import main as benchmark_main
    return benchmark_main(rest)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        return dispatch(argv)
    except GuidedError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
