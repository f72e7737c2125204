"""Rate every item (or user) on the schema's attributes, caching each answer as it arrives.

The cache is JSONL, one record per answer, keyed by token, prompt hash and model: an interrupted
run (Ctrl-C, a killed process) resumes from it and loses nothing. The final ``.guided`` file is
written atomically, so no half-written output is ever left in place.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from recbole_guided.data_files import GuidedTable
from recbole_guided.llm.prompts import AnswerError, parse_json_answer, prompt_hash
from recbole_guided.llm.schema import AttributeSchema

logger = logging.getLogger(__name__)


@dataclass
class ScoringReport:
    scored: int = 0           # answered in this run
    cached: int = 0           # already in the cache
    failures: dict[str, str] = field(default_factory=dict)  # token -> last error
    seconds: float = 0.0

    @property
    def items_per_second(self) -> float:
        return self.scored / self.seconds if self.seconds else 0.0


class AnswerCache:
    """Append-only JSONL of answers; a torn last line (killed mid-write) is ignored."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.answers: dict[tuple[str, str, str], dict] = {}
        if self.path.is_file():
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    if record.get("scores") is not None:
                        self.answers[(record["token"], record["prompt"], record["model"])] = record["scores"]

    def get(self, token: str, prompt: str, model: str) -> dict | None:
        return self.answers.get((token, prompt, model))

    def append(self, records: list[dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write("".join(json.dumps(r) + "\n" for r in records))
            f.flush()
            os.fsync(f.fileno())
        for r in records:
            if r.get("scores") is not None:
                self.answers[(r["token"], r["prompt"], r["model"])] = r["scores"]


def _answer(backend, schema: AttributeSchema, mode: str, prompts: list[list[dict]],
            retries: int) -> list[tuple[dict | None, str | None, str | None]]:
    """(scores, error, raw answer) per prompt; malformed answers are asked again ``retries`` times."""
    results: list = [None] * len(prompts)
    pending = list(range(len(prompts)))
    for attempt in range(retries + 1):
        asked = [prompts[k] for k in pending]
        answers = backend.expected_scores(asked, schema) if mode == "logprob" \
            else backend.generate(asked, sample=attempt > 0)  # greedy first, then sample on retries
        still = []
        for k, answer in zip(pending, answers):
            if isinstance(answer, Exception):
                results[k] = (None, str(answer), None)
            elif mode == "logprob":
                results[k] = ({n: round(v, 4) for n, v in answer.items()}, None, None)
            else:
                try:
                    results[k] = (parse_json_answer(answer, schema), None, answer)
                except AnswerError as err:
                    results[k] = (None, str(err), answer)
            if results[k][0] is None:
                still.append(k)
        pending = still
        if not pending:
            break
    return results


def score_all(schema: AttributeSchema, messages: dict[str, list[dict]], backend, mode: str,
              cache_path: str | Path, output: str | Path | None, key_field: str = "item_id",
              retries: int = 2, show_progress: bool = True) -> tuple[GuidedTable, ScoringReport]:
    """Score ``messages`` (token -> chat prompt), resuming from the cache; write ``output`` atomically.

    Items that still fail after the retries are left out of the table and listed in the report
    (a rerun asks them again); everything answered is in the cache either way.
    """
    cache = AnswerCache(cache_path)
    hashes = {token: prompt_hash(m, mode) for token, m in messages.items()}
    todo = [t for t in messages if cache.get(t, hashes[t], backend.model_id) is None]
    report = ScoringReport(cached=len(messages) - len(todo))
    start = time.perf_counter()
    bar = tqdm(total=len(messages), initial=report.cached, unit="item", disable=not show_progress,
               desc=f"{mode} {backend.model_id}", dynamic_ncols=True)
    try:
        for begin in range(0, len(todo), backend.batch_size):
            tokens = todo[begin:begin + backend.batch_size]
            results = _answer(backend, schema, mode, [messages[t] for t in tokens], retries)
            records = []
            for token, (scores, error, raw) in zip(tokens, results):
                records.append({"token": token, "prompt": hashes[token], "model": backend.model_id,
                                "mode": mode, "scores": scores, **({"error": error, "raw": raw} if error else {})})
                if error:
                    report.failures[token] = error
                else:
                    report.scored += 1
                    report.failures.pop(token, None)
            cache.append(records)
            bar.update(len(tokens))
    finally:
        bar.close()
        report.seconds = time.perf_counter() - start
    done = [t for t in messages if cache.get(t, hashes[t], backend.model_id) is not None]
    values = np.array([[cache.get(t, hashes[t], backend.model_id)[n] for n in schema.names] for t in done],
                      dtype=np.float64).reshape(len(done), len(schema.names))
    table = GuidedTable(key_field, done, schema.names, values)
    if output is not None:
        table.write(output)
    return table, report
