"""LLM scoring through the OpenAI-compatible backend: requests/s and items/s per concurrency, and
an interrupted million-item run that resumes without asking an answered item again.

The server is the stand-in (``recbole_guided.llm.stand_in_server``) in its own process, answering
each request after ``--latency`` seconds, so the figures are those of the client (backend, scorer,
cache) against a server whose own cost is a fixed wait; a real server adds its compute.

1. Throughput: for each mode and concurrency, ``--items_per_slot`` x concurrency synthetic items
   are scored through the real path (``score_all`` with the HTTP backend) into a fresh cache.
2. Resume (``--resume_items`` > 0): a ``.item`` file of that many items and an answer cache holding
   all but ``--resume_missing`` of them; ``run_recbole_guided.py score`` is started on it, killed
   (SIGKILL) half-way through the missing items, and run again. The second run must send exactly
   ``attributes x (items not in the cache after the kill)`` requests.

    OMP_NUM_THREADS=1 python benchmarks/scoring_throughput.py [--latency=0.02] [--concurrency=1,4,16,64]
        [--items_per_slot=40] [--modes=logprob,generate] [--resume_items=1000000] [--resume_missing=2000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).absolute().parents[1]
sys.path.insert(0, str(ROOT))

from recbole_guided.llm.backends import make_backend  # noqa: E402
from recbole_guided.llm.prompts import item_messages, prompt_hash  # noqa: E402
from recbole_guided.llm.schema import AttributeSchema  # noqa: E402
from recbole_guided.llm.scorer import AnswerCache, score_all  # noqa: E402
from recbole_guided.provenance import git_commit, machine  # noqa: E402

SCHEMA = AttributeSchema.load("movies")
LATENCY = [0.0]  # the server's, set by main
GENRES = ["Action", "Comedy", "Drama", "Horror", "Romance", "Thriller", "Animation", "Documentary"]


def item_row(i: int) -> tuple[str, str, str, str]:
    """A synthetic film: token, title, year, genres (text about as long as ml-100k's)."""
    return str(i), f"Synthetic Film {i:07d}", str(1950 + i % 70), f"{GENRES[i % 8]} {GENRES[(i // 8) % 8]}"


def item_text(i: int) -> str:
    _, title, year, genres = item_row(i)
    return SCHEMA.item_template.format(movie_title=title, release_year=year, **{"class": genres})


def start_server(latency: float, jitter: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "recbole_guided.llm.stand_in_server", "--port=0",
                             f"--latency={latency}", f"--jitter={jitter}"], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    return proc, proc.stdout.readline().strip()


def server_stats(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/stats", timeout=10) as response:
        return json.loads(response.read())


def cpu_seconds(pid: int | None = None) -> float:
    """CPU time (user + system) of this process, or of ``pid``: where the time of a run goes."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def throughput(url: str, server_pid: int, mode: str, concurrency: int, n_items: int) -> dict:
    messages = {str(i): item_messages(SCHEMA, item_text(i), mode) for i in range(n_items)}
    backend = make_backend(url, model="stand-in", concurrency=concurrency, timeout=60, retries=2)
    before = server_stats(url)["requests"]
    with tempfile.TemporaryDirectory() as tmp:
        cpu = cpu_seconds(), cpu_seconds(server_pid)
        start = time.perf_counter()
        table, report = score_all(SCHEMA, messages, backend, mode, Path(tmp) / "cache.jsonl", None,
                                  show_progress=False)
        seconds = time.perf_counter() - start
        cpu = cpu_seconds() - cpu[0], cpu_seconds(server_pid) - cpu[1]
    requests = server_stats(url)["requests"] - before
    assert len(table.tokens) == n_items and not report.failures, report.failures
    return {"mode": mode, "concurrency": concurrency, "items": n_items, "requests": requests,
            "seconds": round(seconds, 3), "requests_per_s": round(requests / seconds, 1),
            "items_per_s": round(n_items / seconds, 1),
            "ideal_requests_per_s": round(concurrency / LATENCY[0], 1) if LATENCY[0] else None,
            "client_cpu_ms_per_request": round(1000 * cpu[0] / requests, 2),
            "server_cpu_ms_per_request": round(1000 * cpu[1] / requests, 2)}


def write_item_file(folder: Path, n_items: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{folder.name}.item", "w", encoding="utf-8") as f:
        f.write("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n")
        for i in range(n_items):
            f.write("\t".join(item_row(i)) + "\n")


def write_cache(path: Path, url: str, n_items: int, missing: set[int]) -> None:
    """Answers for every item but ``missing``, keyed exactly as the score command keys them."""
    model_id = make_backend(url, model="default").model_id
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n_items):
            if i in missing:
                continue
            h = prompt_hash(item_messages(SCHEMA, item_text(i), "logprob"), "logprob")
            f.write(json.dumps({"token": str(i), "prompt": h, "model": model_id, "mode": "logprob",
                                "scores": {n: 5.0 for n in SCHEMA.names}}) + "\n")


def score_command(data: Path, url: str, cache: Path, concurrency: int) -> list[str]:
    return [sys.executable, str(ROOT / "run_recbole_guided.py"), "score", "--dataset=synth", "--attributes=movies",
            f"--data_path={data}", f"--llm={url}", f"--cache={cache}", f"--output={data / 'synth.guided'}",
            f"--concurrency={concurrency}", "--no_progress"]


def resume(url: str, n_items: int, n_missing: int, concurrency: int) -> dict:
    m = len(SCHEMA.names)
    missing = set(range(0, n_items, max(1, n_items // n_missing)))  # spread over the catalog
    with tempfile.TemporaryDirectory() as tmp:
        data, cache = Path(tmp), Path(tmp) / "cache.jsonl"
        start = time.perf_counter()
        write_item_file(data / "synth", n_items)
        write_cache(cache, url, n_items, missing)
        prepare_s = time.perf_counter() - start

        # run 1: killed once half of the missing items' requests have reached the server
        before = server_stats(url)["requests"]
        start = time.perf_counter()
        run = subprocess.Popen(score_command(data, url, cache, concurrency), cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        while server_stats(url)["requests"] - before < m * len(missing) // 2 and run.poll() is None:
            time.sleep(0.05)
        run.send_signal(signal.SIGKILL)
        run.wait()
        killed_after_s = time.perf_counter() - start
        asked_1 = server_stats(url)["requests"] - before
        cached_after_kill = len(AnswerCache(cache).answers)

        # run 2: the same command, to the end
        before = server_stats(url)["requests"]
        start = time.perf_counter()
        with open(data / "run2.log", "w+") as log:
            run = subprocess.Popen(score_command(data, url, cache, concurrency), cwd=ROOT,
                                   stdout=subprocess.DEVNULL, stderr=log)
            _, status, usage = os.wait4(run.pid, 0)  # this child's own peak RSS
            run.returncode = os.waitstatus_to_exitcode(status)
            log.seek(0)
            stderr = log.read()
        resume_s = time.perf_counter() - start
        asked_2 = server_stats(url)["requests"] - before
        if run.returncode != 0:
            raise RuntimeError(stderr[-2000:])
        rows = sum(1 for _ in open(data / "synth.guided")) - 1
        expected = m * (n_items - cached_after_kill)
        return {"items": n_items, "missing_at_start": len(missing), "concurrency": concurrency,
                "prepare_s": round(prepare_s, 1), "run1_killed_after_s": round(killed_after_s, 1),
                "run1_requests": asked_1, "cached_after_kill": cached_after_kill,
                "items_answered_by_run1": cached_after_kill - (n_items - len(missing)),
                "run2_s": round(resume_s, 1), "run2_requests": asked_2, "run2_expected_requests": expected,
                "run2_asked_nothing_answered": asked_2 == expected, "guided_rows": rows,
                "run2_peak_rss_mb": round(usage.ru_maxrss / 1024),  # Linux: kB
                "run2_log_tail": stderr.strip().splitlines()[-1:]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--jitter", type=float, default=0.0)
    parser.add_argument("--concurrency", default="1,4,16,64")
    parser.add_argument("--items_per_slot", type=int, default=40, help="items per run = this x concurrency")
    parser.add_argument("--modes", default="logprob,generate")
    parser.add_argument("--resume_items", type=int, default=1_000_000)
    parser.add_argument("--resume_missing", type=int, default=2000)
    parser.add_argument("--resume_concurrency", type=int, default=64)
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "scoring_throughput.json"))
    args = parser.parse_args()

    LATENCY[0] = args.latency
    server, url = start_server(args.latency, args.jitter)
    try:
        rows = []
        for mode in args.modes.split(","):
            for c in map(int, args.concurrency.split(",")):
                rows.append(throughput(url, server.pid, mode, c, args.items_per_slot * c))
                print(json.dumps(rows[-1]), flush=True)
        resumed = resume(url, args.resume_items, args.resume_missing, args.resume_concurrency) \
            if args.resume_items else None
        if resumed:
            print(json.dumps(resumed), flush=True)
    finally:
        server.terminate()
        server.wait()
    out = {"command": "OMP_NUM_THREADS=1 python benchmarks/scoring_throughput.py " + " ".join(sys.argv[1:]),
           "machine": machine(), "commit": git_commit(ROOT),
           "server": f"recbole_guided.llm.stand_in_server in its own process, latency {args.latency} s "
                     f"(+-{args.jitter:.0%}), one thread per connection",
           "attributes": len(SCHEMA.names), "throughput": rows, "resume": resumed}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(out, indent=2) + "\n")
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
