"""Rate every item (or user) on the schema's attributes, caching each answer as it arrives.

The cache is JSONL, one record per answer, keyed by token, prompt hash and model: an interrupted
run (Ctrl-C, a killed process) resumes from it and loses nothing. The final ``.guided`` file is
written atomically, so no half-written output is ever left in place.

A server backend (one with ``concurrency``) keeps that many items in flight and each answer is
written the moment it is complete, so a killed run re-asks only the items that were in flight;
a local model answers a batch at a time. Only this module's thread writes the cache.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from recbole_guided.data_files import GuidedTable
from recbole_guided.llm.prompts import AnswerError, parse_json_answer, prompt_hash
from recbole_guided.llm.schema import AttributeSchema

logger = logging.getLogger(__name__)

# Each answer is flushed at once (a killed process keeps it); fsync, which can cost milliseconds,
# at most once per this many seconds and at the end (a power cut loses at most that much).
SYNC_SECONDS = 1.0


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
        self._torn = False  # the file ends mid-line: the next record must start on a line of its own
        if self.path.is_file():
            with open(self.path, "rb") as f:
                if f.seek(0, os.SEEK_END):
                    f.seek(-1, os.SEEK_END)
                    self._torn = f.read(1) != b"\n"
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    scores = record.get("scores")
                    if scores is not None:  # one copy of the model and attribute names, not one per answer:
                        # half the memory (a million answers: 0.75 GB instead of 1.35 GB)
                        self.answers[(record["token"], record["prompt"], sys.intern(record["model"]))] = \
                            {sys.intern(name): value for name, value in scores.items()}

    def get(self, token: str, prompt: str, model: str) -> dict | None:
        return self.answers.get((token, prompt, model))

    def append(self, records: list[dict], sync: bool = True) -> None:
        """Write ``records`` (flushed: a killed process keeps them); ``sync`` also fsyncs them."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write("\n" * self._torn + "".join(json.dumps(r) + "\n" for r in records))
            f.flush()
            if sync:
                os.fsync(f.fileno())
        self._torn = False
        for r in records:
            if r.get("scores") is not None:
                self.answers[(r["token"], r["prompt"], r["model"])] = r["scores"]

    def sync(self) -> None:
        if self.path.is_file():
            with open(self.path, "a", encoding="utf-8") as f:
                os.fsync(f.fileno())


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


def _answers(backend, schema: AttributeSchema, mode: str, messages, todo: list[str], retries: int):
    """``(token, (scores, error, raw))`` as answers arrive, in any order."""
    workers = getattr(backend, "concurrency", None)
    if not workers:  # a local model: one batch per call
        for begin in range(0, len(todo), backend.batch_size):
            tokens = todo[begin:begin + backend.batch_size]
            yield from zip(tokens, _answer(backend, schema, mode, [messages[t] for t in tokens], retries))
        return
    # a server: ``workers`` items in flight, a few more queued; no batch waits for its slowest item
    pool, pending, queue = ThreadPoolExecutor(max_workers=workers), {}, iter(todo)
    try:
        while True:
            while len(pending) < 2 * workers and (token := next(queue, None)) is not None:
                pending[pool.submit(_answer, backend, schema, mode, [messages[token]], retries)] = token
            if not pending:
                return
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield pending.pop(future), future.result()[0]
    finally:  # interrupted: drop what has not started; what is in flight is asked again next run
        pool.shutdown(wait=False, cancel_futures=True)


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
    synced = time.monotonic()
    try:
        with closing(_answers(backend, schema, mode, messages, todo, retries)) as answers:
            for token, (scores, error, raw) in answers:
                record = {"token": token, "prompt": hashes[token], "model": backend.model_id,
                          "mode": mode, "scores": scores, **({"error": error, "raw": raw} if error else {})}
                sync = time.monotonic() - synced >= SYNC_SECONDS
                cache.append([record], sync=sync)
                synced = time.monotonic() if sync else synced
                if error:
                    report.failures[token] = error
                else:
                    report.scored += 1
                    report.failures.pop(token, None)
                bar.update(1)
    finally:
        cache.sync()
        bar.close()
        report.seconds = time.perf_counter() - start
    done = [t for t in messages if cache.get(t, hashes[t], backend.model_id) is not None]
    values = np.array([[cache.get(t, hashes[t], backend.model_id)[n] for n in schema.names] for t in done],
                      dtype=np.float64).reshape(len(done), len(schema.names))
    table = GuidedTable(key_field, done, schema.names, values)
    if output is not None:
        table.write(output)
    return table, report
