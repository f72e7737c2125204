"""LoRA fine-tuning of the rating LLM so that the profile it writes for a user predicts their next item.

For a user, the prompt holds their training history (most recent last) and the model's ``logprob``
expected score for each attribute is the profile ``p_u`` (differentiable through the score-token
probabilities). Two losses train a ``peft`` LoRA adapter:

* recommendation loss, **sampled softmax**: ``<p_u, g_i>`` (frozen, z-scored item guided vectors)
  must rank the user's next training item above ``negatives`` items drawn uniformly from those the
  user never chose. Sampled softmax rather than BPR: one step compares the target with many
  negatives at once, which is closer to the full-ranking MRR it is judged by and gives a steadier
  gradient per (expensive) LLM forward than one BPR pair would;
* format loss: the language-model loss of a well-formed ``generate`` answer (the JSON of the
  model's own initial ratings, rounded), so ``generate`` mode keeps producing valid answers.

Only the training split is used: the prompt is a user's training history without its last item,
the target is that last training item. Validation and test items never reach a training prompt.

    python run_recbole_guided.py finetune-llm --dataset=ml-100k --attributes=movies
        [--config_files=properties/quickstart.yaml] [--users=64] [--epochs=1] ... (see --help)
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml
from tqdm import tqdm

from recbole_guided.atomic_files import atomic_path
from recbole_guided.data_files import GuidedTable
from recbole_guided.errors import ConfigError
from recbole_guided.llm.backends import HFBackend, make_backend
from recbole_guided.llm.prompts import AnswerError, parse_json_answer, read_item_texts, user_messages
from recbole_guided.llm.schema import AttributeSchema
from recbole_guided.refined_embedding import normalize_columns

logger = logging.getLogger("recbole_guided.llm")


@dataclass
class LoraOptions:
    users: int = 64              # training users (one example each per epoch)
    history_length: int = 10     # most recent training items in the prompt
    negatives: int = 100         # sampled negatives per example
    format_weight: float = 0.5   # loss = recommendation + format_weight * format
    lora_r: int = 8
    lora_alpha: int = 16
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    lr: float = 5e-4
    epochs: int = 1
    batch_size: int = 4          # users per optimizer step
    seed: int = 2020


@dataclass
class Example:
    user: str
    history: list[str]   # item tokens in the prompt, most recent last (training items only)
    target: str          # the user's next training item


def training_examples(histories: dict[str, list[str]], options: LoraOptions) -> list[Example]:
    """One example per sampled user: their training history minus its last item -> that item."""
    eligible = sorted(u for u, seq in histories.items() if len(seq) >= 2)
    users = random.Random(options.seed).sample(eligible, min(options.users, len(eligible)))
    return [Example(u, histories[u][:-1][-options.history_length:], histories[u][-1]) for u in users]


class ItemGuided:
    """The frozen item guided vectors (z-scored, as the Guided models use them), by token."""

    def __init__(self, path: Path, schema: AttributeSchema):
        table = GuidedTable.read(path, key_field="item_id")
        table.check_attributes(schema.names, f"the schema {schema.source}", path)
        self.tokens = table.tokens
        self.index = {t: k for k, t in enumerate(table.tokens)}
        self.matrix = torch.from_numpy(normalize_columns(table.values, "zscore"))

    def scores(self, profile: torch.Tensor) -> torch.Tensor:
        return self.matrix.to(profile.dtype) @ profile


def centered_profile(logprobs: torch.Tensor, schema: AttributeSchema) -> torch.Tensor:
    """Expected score per attribute, mapped from the scale to [-1, 1] (so 'indifferent' is 0)."""
    scale = torch.tensor(schema.scale, dtype=logprobs.dtype)
    expected = (torch.softmax(logprobs, dim=-1) * scale).sum(-1)
    half = (schema.scale_max - schema.scale_min) / 2
    return (expected - (schema.scale_min + half)) / half


def recommendation_loss(profile, items: ItemGuided, example: Example, rng: np.random.Generator,
                        negatives: int) -> torch.Tensor:
    seen = {items.index[t] for t in example.history if t in items.index}
    target = items.index[example.target]
    pool = np.setdiff1d(np.arange(len(items.tokens)), list(seen | {target}))
    negs = rng.choice(pool, size=min(negatives, len(pool)), replace=False)
    logits = items.matrix[np.concatenate([[target], negs])].to(profile.dtype) @ profile
    return torch.nn.functional.cross_entropy(logits[None], torch.zeros(1, dtype=torch.long))


def format_loss(backend: HFBackend, messages: list[dict], answer: str) -> torch.Tensor:
    """Language-model loss on the answer tokens only (the prompt is context)."""
    prompt = backend.encode(backend.render(messages))
    target = backend.encode(answer + (backend.tokenizer.eos_token or ""))
    ids = torch.cat([prompt, target], dim=1)
    labels = ids.clone()
    labels[:, :prompt.shape[1]] = -100
    return backend.model(input_ids=ids, labels=labels).loss


def well_formed_answer(backend: HFBackend, schema: AttributeSchema, messages: list[dict]) -> str:
    """The model's own rating, rounded onto the scale, as the JSON ``generate`` mode asks for."""
    with torch.no_grad():
        logprobs = backend.scale_logprobs(messages, schema, reuse_prefix=False)
    scale = torch.tensor(schema.scale, dtype=logprobs.dtype)
    expected = (torch.softmax(logprobs, -1) * scale).sum(-1)
    return json.dumps({n: int(round(float(v))) for n, v in zip(schema.names, expected)})


def attach_lora(backend: HFBackend, options: LoraOptions) -> None:
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=options.lora_r, lora_alpha=options.lora_alpha, lora_dropout=0.0,
                        target_modules=list(options.target_modules), task_type="CAUSAL_LM")
    backend.model = get_peft_model(backend.model, config)
    backend.clear_prefix_cache()


def train_lora(backend: HFBackend, schema: AttributeSchema, examples: list[Example], texts: dict[str, str],
               items: ItemGuided, options: LoraOptions, show_progress: bool = True) -> list[dict]:
    """Train the adapter; returns one record per optimizer step (both losses)."""
    torch.manual_seed(options.seed)
    rng = np.random.default_rng(options.seed)
    prompts = {e.user: [texts[t] for t in e.history] for e in examples}
    answers = {e.user: well_formed_answer(backend, schema, user_messages(schema, prompts[e.user], "logprob"))
               for e in examples}
    attach_lora(backend, options)
    params = [p for p in backend.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=options.lr)
    backend.model.train()
    log, order = [], list(examples)
    steps = options.epochs * ((len(order) + options.batch_size - 1) // options.batch_size)
    bar = tqdm(total=steps, unit="step", disable=not show_progress, desc="LoRA")
    for epoch in range(options.epochs):
        random.Random(options.seed + epoch).shuffle(order)
        for begin in range(0, len(order), options.batch_size):
            batch = order[begin:begin + options.batch_size]
            optimizer.zero_grad()
            rec_total = fmt_total = 0.0
            for e in batch:
                profile = centered_profile(backend.scale_logprobs(
                    user_messages(schema, prompts[e.user], "logprob"), schema, reuse_prefix=False), schema)
                rec = recommendation_loss(profile, items, e, rng, options.negatives)
                fmt = format_loss(backend, user_messages(schema, prompts[e.user], "generate"), answers[e.user])
                ((rec + options.format_weight * fmt) / len(batch)).backward()
                rec_total += float(rec) / len(batch)
                fmt_total += float(fmt) / len(batch)
            optimizer.step()
            log.append({"step": len(log) + 1, "epoch": epoch + 1, "recommendation_loss": rec_total,
                        "format_loss": fmt_total})
            bar.set_postfix(rec=f"{rec_total:.3f}", fmt=f"{fmt_total:.3f}")
            bar.update(1)
    bar.close()
    backend.model.eval()
    backend.clear_prefix_cache()  # cached keys/values came from the model before tuning
    return log


@torch.no_grad()
def next_item_mrr(backend: HFBackend, schema: AttributeSchema, histories: dict[str, list[str]],
                  targets: dict[str, str], texts: dict[str, str], items: ItemGuided, users: list[str],
                  history_length: int, k: int = 10) -> float:
    """MRR@k of each user's held-out next item under ``<p_u, g_i>``, full ranking over every item
    the user has not chosen in training."""
    total = 0.0
    for user in users:
        history = histories[user]
        profile = centered_profile(backend.scale_logprobs(
            user_messages(schema, [texts[t] for t in history[-history_length:]], "logprob"), schema), schema)
        scores = items.scores(profile)
        scores[[items.index[t] for t in history if t in items.index]] = -torch.inf
        rank = int((scores > scores[items.index[targets[user]]]).sum()) + 1
        total += 1.0 / rank if rank <= k else 0.0
    return total / len(users)


def generate_failure_rate(backend: HFBackend, schema: AttributeSchema, histories, texts, users,
                          history_length: int) -> tuple[float, list[str]]:
    """Share of greedy ``generate`` answers (no retries) that fail validation."""
    failures = []
    for begin in range(0, len(users), 4):
        batch = users[begin:begin + 4]
        answers = backend.generate([user_messages(schema, [texts[t] for t in histories[u][-history_length:]],
                                                  "generate") for u in batch])
        for user, answer in zip(batch, answers):
            try:
                parse_json_answer(answer, schema)
            except AnswerError as err:
                failures.append(f"user {user}: {err}")
    return len(failures) / len(users), failures


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="run_recbole_guided.py finetune-llm", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True)
    p.add_argument("--attributes", required=True)
    # docs/lora.md was measured with the tiny model; LoRA-tuning the 1.5B rater on 2 CPU cores takes hours
    p.add_argument("--llm", default="smollm2-135m", help="a local model (short name, directory or GGUF)")
    p.add_argument("--data_path", default="dataset/")
    p.add_argument("--config_files", default=None, help="RecBole config of the split")
    p.add_argument("--guided_file", default=None, help="item guided scores (default <dataset>.guided)")
    p.add_argument("--output_dir", default=None, help="default saved/llm/lora-<dataset>")
    p.add_argument("--eval_users", type=int, default=200, help="users for the before/after MRR@10")
    p.add_argument("--generate_sample", type=int, default=20, help="users for the parse-failure rate")
    defaults = LoraOptions()
    for name, value in asdict(defaults).items():
        kind = (lambda s: s.split(",")) if isinstance(value, list) else type(value)
        p.add_argument(f"--{name}", type=kind, default=value)
    p.add_argument("--no_progress", action="store_true")
    return p


def main(argv: list[str]) -> int:
    from recbole_guided.config import GuidedConfig
    from recbole_guided.llm.users import user_splits

    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    options = LoraOptions(**{k: getattr(args, k) for k in asdict(LoraOptions())})
    schema = AttributeSchema.load(args.attributes)
    folder = Path(args.data_path) / args.dataset
    texts = read_item_texts(folder / f"{args.dataset}.item", schema)
    items = ItemGuided(Path(args.guided_file or folder / f"{args.dataset}.guided"), schema)
    config = GuidedConfig("SASRec", args.dataset, args.config_files.split() if args.config_files else None,
                          {"data_path": args.data_path})
    histories, valid_targets = user_splits(config)
    backend = make_backend(args.llm)
    if not isinstance(backend, HFBackend):
        raise ConfigError("finetune-llm trains a local model: --llm must be a short name, a directory or a GGUF file")
    out = Path(args.output_dir or f"saved/llm/lora-{args.dataset}")
    examples = training_examples(histories, options)
    eval_users = sorted(valid_targets)[:args.eval_users]
    sample = eval_users[:args.generate_sample]

    def measure(stage: str) -> dict:
        start = time.perf_counter()
        mrr = next_item_mrr(backend, schema, histories, valid_targets, texts, items, eval_users, options.history_length)
        rate, failures = generate_failure_rate(backend, schema, histories, texts, sample, options.history_length)
        logger.info("%s tuning: MRR@10 of <p_u, g_i> %.4f over %d users; generate parse failures %.0f%% of %d",
                    stage, mrr, len(eval_users), 100 * rate, len(sample))
        return {"mrr@10": mrr, "generate_parse_failure_rate": rate, "failures": failures[:5],
                "seconds": round(time.perf_counter() - start, 1)}

    report = {"llm": backend.model_id, "dataset": args.dataset, "options": asdict(options),
              "eval_users": len(eval_users), "generate_sample": len(sample), "before": measure("before")}
    start = time.perf_counter()
    log = train_lora(backend, schema, examples, texts, items, options, show_progress=not args.no_progress)
    report["train_seconds"] = round(time.perf_counter() - start, 1)
    report["after"] = measure("after")
    out.mkdir(parents=True, exist_ok=True)
    backend.model.save_pretrained(out)  # peft's own adapter format
    (out / "training_config.yaml").write_text(yaml.safe_dump(
        {"command": "run_recbole_guided.py finetune-llm " + " ".join(argv), "llm": args.llm, "dataset": args.dataset,
         "attributes": args.attributes, "config_files": args.config_files, **asdict(options)}, sort_keys=False))
    with atomic_path(out / "losses.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(log[0]))
        writer.writeheader()
        writer.writerows(log)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps({k: report[k] for k in ("before", "after", "train_seconds")}, indent=2))
    print(f"adapter written to {out}; score users with it: run_recbole_guided.py score --target=users "
          f"--dataset={args.dataset} --attributes={args.attributes} --adapter={out}")
    return 0
