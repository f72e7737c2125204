"""Scale: LLM scoring through a server (concurrency, exact resume) and the catalog-scale benchmark
at tiny sizes. The measured figures are in docs/scale.md."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from recbole_guided.data_files import GuidedTable
from recbole_guided.llm.backends import make_backend
from recbole_guided.llm.prompts import RenderedPrompts, item_messages
from recbole_guided.llm.schema import AttributeSchema
from recbole_guided.llm.scorer import AnswerCache, score_all
from recbole_guided.llm.stand_in_server import StandInServer, subject

ROOT = Path(__file__).resolve().parents[1]
MOVIES = AttributeSchema.load("movies")
M = len(MOVIES.names)


def film(i: int) -> str:
    return f"Film {i:04d} ({1950 + i % 70}), genres: Drama"


def prompts(n: int, mode: str = "logprob") -> RenderedPrompts:
    return RenderedPrompts({str(i): film(i) for i in range(n)}, lambda text: item_messages(MOVIES, text, mode))


@pytest.fixture
def server():
    with StandInServer(latency=0.01) as s:
        yield s


def backend(url: str, concurrency: int = 4):
    return make_backend(url, model="stand-in", concurrency=concurrency, timeout=10, retries=1, backoff=0.01)


def per_item(subjects: Counter) -> Counter:
    """Requests per item (a logprob question's subject ends with ``"\\n\\n<attribute>: "``)."""
    out = Counter()
    for s, n in subjects.items():
        out[s.rsplit("\n\n", 1)[0] if s.endswith(": ") else s] += n
    return out


def asked(token: str) -> str:
    return f"The movie: {film(int(token))}"


# --- the stand-in server and the HTTP backend ------------------------------------------------------

@pytest.mark.parametrize("mode", ["logprob", "generate"])
def test_stand_in_server_answers_the_schema_in_both_modes(server, tmp_path, mode):
    table, report = score_all(MOVIES, prompts(6, mode), backend(server.url), mode, tmp_path / "c.jsonl",
                              tmp_path / "out.guided", show_progress=False)
    assert table.tokens == [str(i) for i in range(6)] and not report.failures
    assert ((table.values >= 1) & (table.values <= 9)).all() and table.values.std() > 0
    assert server.requests == 6 * (M if mode == "logprob" else 1) and server.asked_twice() == 0
    assert GuidedTable.read(tmp_path / "out.guided").tokens == table.tokens


def test_concurrency_puts_that_many_requests_in_flight_and_no_more(tmp_path):
    with StandInServer(latency=0.05) as slow:
        score_all(MOVIES, prompts(24, "generate"), backend(slow.url, concurrency=6), "generate",
                  tmp_path / "c.jsonl", None, show_progress=False)
        assert 3 <= slow.max_in_flight <= 6
    with StandInServer(latency=0.02) as one:
        score_all(MOVIES, prompts(3), backend(one.url, concurrency=1), "logprob", tmp_path / "d.jsonl", None,
                  show_progress=False)
        assert one.max_in_flight == 1 and one.requests == 3 * M


def test_answers_do_not_depend_on_concurrency(server, tmp_path):
    one, _ = score_all(MOVIES, prompts(10), backend(server.url, 1), "logprob", tmp_path / "a.jsonl", None,
                       show_progress=False)
    many, _ = score_all(MOVIES, prompts(10), backend(server.url, 8), "logprob", tmp_path / "b.jsonl", None,
                        show_progress=False)
    assert one.tokens == many.tokens and np.array_equal(one.values, many.values)


class InterruptAfter:
    """The HTTP backend, with Ctrl-C arriving while the ``items``-th item is being asked."""

    def __init__(self, inner, items):
        self.inner, self.items, self.calls = inner, items, itertools.count(1)  # next() is atomic: threads call it
        self.model_id, self.batch_size, self.concurrency = inner.model_id, inner.batch_size, inner.concurrency

    def expected_scores(self, prompts_, schema):
        if next(self.calls) == self.items:
            raise KeyboardInterrupt  # raised in a worker thread, it reaches the scorer's own thread
        return self.inner.expected_scores(prompts_, schema)


def test_ctrl_c_keeps_every_answer_that_arrived_and_the_rerun_asks_only_the_rest(server, tmp_path):
    cache = tmp_path / "c.jsonl"
    with pytest.raises(KeyboardInterrupt):
        score_all(MOVIES, prompts(40), InterruptAfter(backend(server.url), 15), "logprob", cache,
                  tmp_path / "out.guided", show_progress=False)
    time.sleep(0.3)  # let the items that were in flight finish (their answers are dropped)
    kept = {token for token, _, _ in AnswerCache(cache).answers}
    assert 0 < len(kept) < 40 and not (tmp_path / "out.guided").exists()
    first = Counter(server.subjects)
    table, report = score_all(MOVIES, prompts(40), backend(server.url), "logprob", cache,
                              tmp_path / "out.guided", show_progress=False)
    rerun = per_item(Counter(server.subjects) - first)
    assert (report.cached, report.scored) == (len(kept), 40 - len(kept)) and len(table.tokens) == 40
    assert not {asked(t) for t in kept} & set(rerun)                 # nothing answered is asked again
    assert sum(rerun.values()) == M * (40 - len(kept))                # everything else exactly once


def test_killed_score_command_resumes_without_asking_an_answered_item_again(tmp_path):
    """SIGKILL (no cleanup at all) half-way through, then the same command to the end."""
    n = 80
    folder = tmp_path / "films"
    folder.mkdir()
    (folder / "films.item").write_text("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
                                       + "".join(f"{i}\tFilm {i:04d}\t{1950 + i % 70}\tDrama\n" for i in range(n)))
    cache, out = tmp_path / "cache.jsonl", tmp_path / "films.guided"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with StandInServer(latency=0.02) as srv:
        command = [sys.executable, str(ROOT / "run_recbole_guided.py"), "score", "--dataset=films",
                   "--attributes=movies", f"--data_path={tmp_path}", f"--llm={srv.url}", f"--cache={cache}",
                   f"--output={out}", "--concurrency=4", "--no_progress"]
        run = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while srv.requests < M * n // 2 and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        run.send_signal(signal.SIGKILL)
        run.wait()
        kept = {token for token, _, _ in AnswerCache(cache).answers}
        assert 0 < len(kept) < n and not out.exists()
        first = Counter(srv.subjects)
        done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        rerun = per_item(Counter(srv.subjects) - first)
        assert not {asked(t) for t in kept} & set(rerun)
        assert sum(rerun.values()) == M * (n - len(kept))
        in_flight_at_kill = srv.asked_twice()  # questions of items whose answer had not been written yet
        assert in_flight_at_kill <= 4 * M
    assert GuidedTable.read(out).tokens == [str(i) for i in range(n)]


# --- the answer cache ----------------------------------------------------------------------------

def test_a_record_appended_after_a_torn_line_is_kept(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"token": "1", "prompt": "p", "model": "m", "scores": {"a": 1.0}}) + "\n{\"tok")
    AnswerCache(path).append([{"token": "2", "prompt": "p", "model": "m", "scores": {"a": 2.0}}], sync=False)
    reread = AnswerCache(path)
    assert reread.get("1", "p", "m") == {"a": 1.0} and reread.get("2", "p", "m") == {"a": 2.0}


def test_rendered_prompts_render_on_demand():
    calls = []
    rendered = RenderedPrompts({"a": "x", "b": "y"}, lambda s: calls.append(s) or [{"role": "user", "content": s}])
    assert calls == [] and len(rendered) == 2 and list(rendered) == ["a", "b"]
    assert rendered["b"] == [{"role": "user", "content": "y"}] and calls == ["y"]
    assert subject(item_messages(MOVIES, "Film X", "logprob")[1]["content"]) == "The movie: Film X"


# --- catalog scale -----------------------------------------------------------------------------------

def _catalog_scale():
    import importlib.util

    spec = importlib.util.spec_from_file_location("catalog_scale", ROOT / "benchmarks" / "catalog_scale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_catalog_scale_benchmark_measures_every_stage_at_a_tiny_size(tmp_path):
    bench = _catalog_scale()
    bench.make_catalog(tmp_path / "synth", 300, users=30, per_user=8)
    results = bench.data_part(tmp_path, 300)
    bench.cache_stages(results, tmp_path, 300)
    for model in ("GuidedSASRec", "SASRec"):
        results.update(bench.model_part(tmp_path, 300, model, "CE"))
    results.update(bench.model_part(tmp_path, 300, "GuidedSASRec", "BPR"))
    for stage in ("read_guided", "read_base", "align_guided", "align_base", "pca", "build_refined", "cache_load",
                  "cache_lookup", "cache_resume", "model_init[GuidedSASRec]", "train_step_ce[GuidedSASRec]",
                  "train_step_bpr[GuidedSASRec]", "eval_switch[GuidedSASRec]", "eval_batch[GuidedSASRec]",
                  "eval_batch[SASRec]"):
        assert results[stage]["seconds"] > 0 and results[stage]["peak_mb"] >= 0, stage
    assert results["cache_resume"]["asked"] == 100 and results["cache_resume"]["rows"] == 300


def test_growth_exponents():
    bench = _catalog_scale()
    rows = [{"items": n, "s": {"seconds": n / 1000, "peak_mb": 10 * (n / 1000) ** 2}} for n in (1000, 10000)]
    assert bench.growth(rows)["s"] == {"seconds_exponent 1e3->1e4": 1.0, "peak_mb_exponent 1e3->1e4": 2.0}

