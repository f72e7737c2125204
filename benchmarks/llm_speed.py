"""Where the time of LLM scoring goes on this CPU, per dtype, and how far it is from the floor.

For each dtype the model is loaded in a fresh subprocess (so its peak RAM is its own), then the
first ``--items`` ml-100k items are scored in ``logprob`` mode one by one (the first item, which
also computes the shared prefix, is left out of the steady time), with the time of the item pass
(the item's own tokens after the shared prefix) and of the attribute pass (all attributes'
``"<attribute>: "`` continuations in one batch) measured apart. ``generate`` mode is timed on a
few items (in the runs named by ``--generate_in``). The floor is 2 x parameters x tokens actually
computed per item, at the matmul speed measured here at the model's own shapes and thread count.

    python benchmarks/llm_speed.py [--llm=qwen2.5-1.5b] [--items=20]
        [--runs=float32:1,bfloat16:1,bfloat16:2] [--generate_items=5] [--generate_in=bfloat16:1]
        [--output=benchmarks/results/llm_speed.json]

A run is ``dtype:threads`` (torch threads). On a machine other jobs share, fewer threads than
cores can be much faster: a parallel region waits for its slowest thread, and a thread that has
lost its core stalls every layer.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).absolute().parents[1]  # not resolve(): a copy run elsewhere reads its own tree
sys.path.insert(0, str(ROOT))


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    import torch

    return (f"{os.cpu_count()} CPU cores ({cpu_name()}), torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), Python {platform.python_version()}")


def matmul_gflops(dtype_name: str, m: int, k: int = 1536, n: int = 8960, seconds: float = 3.0) -> float:
    """Best-of GFLOP/s of [m, k] @ [k, n] (the MLP's shape for an m-token pass of a 1536-wide model)."""
    import torch

    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    with torch.inference_mode():
        for _ in range(3):
            a @ b
        best, end = float("inf"), time.perf_counter() + seconds
        while time.perf_counter() < end:
            start = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - start)
    return 2 * m * k * n / best / 1e9


def one_dtype(args) -> dict:
    """Runs in its own process: load, score, time; prints one JSON object."""
    import numpy as np
    import torch

    dtype, threads = args.one.split(":")
    torch.set_num_threads(int(threads))
    from recbole_guided.llm.backends import HFBackend, locate_short_name
    from recbole_guided.llm.prompts import item_messages, read_item_texts, shared_prefix
    from recbole_guided.llm.schema import AttributeSchema

    schema = AttributeSchema.load(args.attributes)
    texts = list(read_item_texts(ROOT / "dataset/ml-100k/ml-100k.item", schema).items())
    start = time.perf_counter()
    backend = HFBackend(locate_short_name(args.llm) if not Path(args.llm).exists() else Path(args.llm),
                        device_map="cpu", dtype=dtype, max_new_tokens=args.max_new_tokens)
    load_seconds = time.perf_counter() - start
    params = sum(p.numel() for p in backend.model.parameters())
    embed = backend.model.get_input_embeddings().weight.numel()
    head = backend.model.get_output_embeddings().weight.numel()
    tied = backend.model.get_output_embeddings().weight is backend.model.get_input_embeddings().weight

    phases: list[float] = []
    forward = backend._forward

    def timed(*a, **k):
        t = time.perf_counter()
        out = forward(*a, **k)
        phases.append(time.perf_counter() - t)
        return out
    backend._forward = timed

    rows, scores = [], []
    for token, text in texts[:args.items]:
        messages = item_messages(schema, text, "logprob")
        rendered = backend.render(messages)
        item_tokens = backend.encode(rendered[len(shared_prefix(rendered)):]).shape[1]
        phases.clear()
        t = time.perf_counter()
        [answer] = backend.expected_scores([messages], schema)
        total = time.perf_counter() - t
        # a first item also computes the shared prefix: three forwards instead of two
        rows.append({"token": token, "seconds": total, "item_tokens": item_tokens,
                     "item_pass": phases[-2], "attribute_pass": phases[-1], "first": len(phases) == 3})
        scores.append([answer[n] for n in schema.names])
    suffix = backend.tokenizer([f"{n}: " for n in schema.names], padding=True, add_special_tokens=False)
    attribute_tokens = [sum(m) for m in suffix["attention_mask"]]
    prefix_tokens = backend.encode(shared_prefix(backend.render(item_messages(schema, texts[0][1], "logprob")))).shape[1]
    steady = [r for r in rows if not r["first"]]
    result = {
        "dtype": dtype, "threads": int(threads), "model_id": backend.model_id, "load_seconds": round(load_seconds, 1),
        "parameters": params, "embedding_parameters": embed, "lm_head_parameters": head, "tied_lm_head": tied,
        "prefix_tokens": prefix_tokens,
        "mean_item_tokens": float(np.mean([r["item_tokens"] for r in steady])),
        "attributes": len(schema.names), "attribute_tokens_padded": len(suffix["input_ids"][0]),
        "attribute_tokens_unpadded": attribute_tokens,
        "items_timed": len(steady),
        "seconds_per_item": float(np.mean([r["seconds"] for r in steady])),
        "item_pass_seconds": float(np.mean([r["item_pass"] for r in steady])),
        "attribute_pass_seconds": float(np.mean([r["attribute_pass"] for r in steady])),
        "scores": scores, "tokens": [r["token"] for r in rows],
    }
    if args.generate_items and args.one in args.generate_in.split(","):
        from recbole_guided.llm.prompts import AnswerError, parse_json_answer

        backend._forward = forward
        prompts = [item_messages(schema, text, "generate") for _, text in texts[:args.generate_items]]
        t = time.perf_counter()
        answers = [backend.generate([p])[0] for p in prompts]  # one at a time, as the scorer's batches of 1 would
        seconds = time.perf_counter() - t
        ok = 0
        for a in answers:
            try:
                parse_json_answer(a, schema)
                ok += 1
            except AnswerError:
                pass
        result["generate"] = {"items": len(prompts), "seconds": round(seconds, 1),
                              "seconds_per_item": seconds / len(prompts), "valid_json_first_try": ok,
                              "mean_new_tokens": float(np.mean([len(backend.tokenizer.encode(a)) for a in answers])),
                              "example": answers[0][:300]}
    result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    return result


def floor(run: dict, gflops: float) -> dict:
    """2 x parameters x tokens per item: the blocks over every computed token, the vocabulary
    projection only where logits are kept (one per attribute, one for the item pass)."""
    blocks = run["parameters"] - run["embedding_parameters"] - (0 if run["tied_lm_head"] else run["lm_head_parameters"])
    tokens_padded = run["mean_item_tokens"] + run["attributes"] * run["attribute_tokens_padded"]
    tokens_unpadded = run["mean_item_tokens"] + sum(run["attribute_tokens_unpadded"])
    head = 2 * run["lm_head_parameters"] * (1 + run["attributes"])
    flops = 2 * blocks * tokens_padded + head
    return {"block_parameters": blocks, "tokens_computed_per_item": tokens_padded,
            "tokens_without_padding": tokens_unpadded, "gflop_per_item": flops / 1e9,
            "matmul_gflops": gflops, "floor_seconds_per_item": flops / 1e9 / gflops,
            "floor_seconds_without_padding": (2 * blocks * tokens_unpadded + head) / 1e9 / gflops}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llm", default="qwen2.5-1.5b")
    parser.add_argument("--attributes", default="movies")
    parser.add_argument("--items", type=int, default=20)
    parser.add_argument("--runs", default="float32:1,bfloat16:1,bfloat16:2")
    parser.add_argument("--generate_items", type=int, default=5)
    parser.add_argument("--generate_in", default="bfloat16:1")
    parser.add_argument("--max_new_tokens", type=int, default=160)
    parser.add_argument("--output", default=str(ROOT / "benchmarks/results/llm_speed.json"))
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: the subprocess for one run
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(one_dtype(args)))
        return 0
    argv = argv if argv is not None else sys.argv[1:]
    result = {"command": "python benchmarks/llm_speed.py " + " ".join(argv), "machine": machine(),
              "load_average_1min_before": round(os.getloadavg()[0], 2), "runs": []}
    import torch

    for run_name in args.runs.split(","):
        dtype, threads = run_name.split(":")
        torch.set_num_threads(int(threads))  # the matmul speed at the run's own thread count
        gflops = {m: round(matmul_gflops(dtype, m), 1) for m in (32, 64, 128)}
        out = subprocess.run([sys.executable, __file__, *argv, f"--one={run_name}"], capture_output=True, text=True)
        if out.returncode:
            print(out.stderr[-3000:], file=sys.stderr)
            return out.returncode
        run = json.loads(out.stdout.strip().splitlines()[-1])
        run["matmul_gflops_by_rows"] = gflops
        run["floor"] = floor(run, gflops[64])
        run["load_average_1min_after"] = round(os.getloadavg()[0], 2)  # other jobs sharing the CPU
        result["runs"].append(run)
        print(f"{run_name}: {run['seconds_per_item']:.2f} s/item (item pass {run['item_pass_seconds']:.2f}, "
              f"attribute pass {run['attribute_pass_seconds']:.2f}), floor {run['floor']['floor_seconds_per_item']:.2f} "
              f"at {gflops[64]} GFLOP/s, peak RSS {run['peak_rss_gb']:.1f} GB, load {run['load_average_1min_after']}",
              flush=True)
    import numpy as np

    base = [r for r in result["runs"] if r["dtype"] == "float32"]
    for run in result["runs"]:
        if base and run is not base[0]:  # how far another dtype or thread count moves the scores
            diff = np.abs(np.array(run["scores"]) - np.array(base[0]["scores"]))
            run["max_abs_score_difference_to_float32"] = float(diff.max())
            run["mean_abs_score_difference_to_float32"] = float(diff.mean())
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
