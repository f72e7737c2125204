"""``run_recbole_guided.py score``: rate a dataset's items (or users) with an LLM.

    python run_recbole_guided.py score --dataset=ml-100k --attributes=movies
        [--llm=smollm2-135m | --llm=path/to/model_or.gguf | --llm=http://host:8000/v1 --llm_model=NAME]
        [--mode=logprob|generate] [--target=items|users] [--limit=N] [--batch_size=4]
        [--data_path=dataset/] [--output=PATH] [--cache=PATH] [--history_length=20]
        [--config_files="a.yaml b.yaml"] [--api_key_env=OPENAI_API_KEY] [--concurrency=4]
        [--timeout=60] [--retries=4] [--answer_retries=2] [--max_new_tokens=160] [--adapter=DIR]

Items: writes ``<data_path>/<dataset>/<dataset>.guided`` (with ``--limit``, a sample under
``saved/llm/`` instead, so a trial never replaces a full file). Users (``--target=users``): rates
each user from their training history only and writes ``<dataset>.uguided``. Every answer is
cached in ``saved/llm/<dataset>.<target>.jsonl`` as it arrives; rerun the same command to resume.
"""

from __future__ import annotations

import argparse
import logging
import sys
from itertools import islice
from pathlib import Path

from recbole_guided.atomic_files import AtomicFormat
from recbole_guided.errors import ConfigError
from recbole_guided.llm.backends import DEFAULT_LLM, make_backend
from recbole_guided.llm.prompts import MODES, RenderedPrompts, item_messages, read_item_texts, user_messages
from recbole_guided.llm.schema import AttributeSchema
from recbole_guided.llm.scorer import score_all

logger = logging.getLogger("recbole_guided.llm")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="run_recbole_guided.py score", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True)
    p.add_argument("--attributes", required=True, help="schema name in properties/attributes/ or a YAML path")
    p.add_argument("--llm", default=DEFAULT_LLM)
    p.add_argument("--llm_model", default="default", help="model name sent to an OpenAI-compatible server")
    p.add_argument("--mode", default="logprob", choices=MODES)
    p.add_argument("--target", default="items", choices=("items", "users"))
    p.add_argument("--limit", type=int, default=None, help="score only the first N items/users")
    p.add_argument("--data_path", default=None, help="folder holding <dataset>/ (default: RecBole's dataset/, "
                   "or the bundled copy of ml-100k)")
    p.add_argument("--output", default=None)
    p.add_argument("--cache", default=None)
    p.add_argument("--batch_size", type=int, default=4, help="items per forward pass (local model)")
    p.add_argument("--history_length", type=int, default=20, help="most recent training items in a user prompt")
    p.add_argument("--config_files", default=None, help="RecBole YAML(s) of the dataset: its id fields and separators "
                   "(ITEM_ID_FIELD, USER_ID_FIELD, field_separator, seq_separator) and, for users, the split")
    p.add_argument("--api_key_env", default="OPENAI_API_KEY")
    p.add_argument("--concurrency", type=int, default=4, help="items asked at once of an OpenAI-compatible server "
                   "(each answer is cached as it arrives; docs/scale.md has the throughput per value)")
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--retries", type=int, default=4, help="retries of a failed HTTP request, with backoff")
    p.add_argument("--answer_retries", type=int, default=2, help="retries of a malformed answer")
    p.add_argument("--max_new_tokens", type=int, default=160)
    p.add_argument("--adapter", default=None, help="a LoRA adapter folder from finetune-llm (local model)")
    p.add_argument("--no_progress", action="store_true")
    return p


def dataset_config(args):
    """The dataset's RecBole settings (id fields, separators, data_path, split), from the same YAML
    files and defaults a training run reads. The model only has to be a sequential one."""
    from recbole_guided.config import GuidedConfig

    return GuidedConfig("SASRec", args.dataset, args.config_files.split() if args.config_files else None,
                        {"data_path": args.data_path} if args.data_path else None)


def prompts_for(args, config, schema: AttributeSchema) -> RenderedPrompts:
    """Token -> prompt, rendered when asked for (``--limit``: the first N only)."""
    item_file = Path(config["data_path"]) / f"{args.dataset}.item"
    texts = read_item_texts(item_file, schema, AtomicFormat.from_config(config))
    if args.target == "items":
        return RenderedPrompts(_first(texts, args.limit), lambda text: item_messages(schema, text, args.mode))
    from recbole_guided.llm.users import user_histories

    return RenderedPrompts(_first(user_histories(config), args.limit), lambda items: user_messages(
        schema, [texts[i] for i in items[-args.history_length:]], args.mode))


def _first(sources: dict, limit: int | None) -> dict:
    return sources if limit is None else dict(islice(sources.items(), limit))


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit={args.limit}: expected a positive number of items")
    if args.adapter and args.llm.startswith(("http://", "https://")):
        raise ConfigError("--adapter applies to a local model; a server loads its own adapters")
    schema = AttributeSchema.load(args.attributes)
    config = dataset_config(args)
    fmt = AtomicFormat.from_config(config)
    messages = prompts_for(args, config, schema)
    suffix = "guided" if args.target == "items" else "uguided"
    output = args.output or (Path("saved/llm") / f"{args.dataset}.limit{args.limit}.{suffix}" if args.limit
                             else Path(config["data_path"]) / f"{args.dataset}.{suffix}")
    cache = args.cache or Path("saved/llm") / f"{args.dataset}.{args.target}.jsonl"
    backend = make_backend(args.llm, model=args.llm_model, batch_size=args.batch_size,
                           api_key_env=args.api_key_env, concurrency=args.concurrency, timeout=args.timeout,
                           retries=args.retries, max_new_tokens=args.max_new_tokens,
                           adapter=args.adapter)
    key_field = fmt.item_field if args.target == "items" else fmt.user_field
    table, report = score_all(schema, messages, backend, args.mode, cache, None, key_field=key_field,
                              retries=args.answer_retries, show_progress=not args.no_progress)
    table.write(output, fmt)  # atomically, with the dataset's own separators
    logger.info("%s: %d %s scored now (%.2f/s), %d from the cache, %d failed",
                output, report.scored, args.target, report.items_per_second, report.cached, len(report.failures))
    for token, error in list(report.failures.items())[:20]:
        logger.warning("failed %s: %s", token, error)
    if report.failures:
        print(f"error: {len(report.failures)} {args.target} could not be scored (see the log); they are "
              f"left out of {output}; rerun the same command to ask them again", file=sys.stderr)
        return 1
    print(f"wrote {output}: {len(table.tokens)} {args.target} x {len(schema.names)} attributes")
    return 0
