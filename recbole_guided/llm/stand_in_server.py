"""A stand-in for an OpenAI-compatible LLM server, for tests and throughput benchmarks.

It speaks the two routes the HTTP backend uses, ``/v1/completions`` (``logprob`` mode: top
logprobs over the digits) and ``/v1/chat/completions`` (``generate`` mode: a JSON object with the
attributes the prompt lists), and waits ``latency`` seconds per request (threads, so requests
overlap as on a real server). Answers depend only on the prompt, so a rerun gets the same scores.
It counts what it was asked, per route and per subject (the text after the prompt's
``SUBJECT_SEPARATOR``), so a test can check that a resumed run asks nothing twice.

    python -m recbole_guided.llm.stand_in_server --port=8000 --latency=0.02
    python run_recbole_guided.py score ... --llm=http://127.0.0.1:8000/v1 --concurrency=16
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from recbole_guided.llm.prompts import SUBJECT_SEPARATOR

# generate-mode prompts list the answer's keys as "name": <lo-hi> (prompts.answer_instructions)
ANSWER_KEY = re.compile(r'"([a-z][a-z0-9_]*)": <(\d+)-(\d+)>')


def _seed(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def subject(prompt: str) -> str:
    """The item (or user) part of a prompt: what a resumed run must not ask again. In a
    completions prompt it is followed by the attribute asked (``"\\n\\n<attribute>: "``)."""
    cut = prompt.rfind(SUBJECT_SEPARATOR)
    return prompt[cut + len(SUBJECT_SEPARATOR):] if cut >= 0 else prompt


def completion(prompt: str) -> dict:
    """Top logprobs over the digits 0-9 (plus a word), peaked at a digit fixed by the prompt."""
    peak = _seed(prompt) % 10
    top = {str(d): -0.2 - abs(d - peak) for d in range(10)}
    top[" the"] = -4.0  # not a score: the backend must skip it
    return {"object": "text_completion", "choices": [{"index": 0, "text": str(peak), "finish_reason": "length",
                                                      "logprobs": {"tokens": [str(peak)], "top_logprobs": [top]}}]}


def chat(messages: list[dict]) -> dict:
    """A JSON answer with every key the prompt asks for, each a whole number on its scale."""
    text = "\n".join(m.get("content", "") for m in messages)
    rng = random.Random(_seed(text))
    answer = {name: rng.randint(int(lo), int(hi)) for name, lo, hi in ANSWER_KEY.findall(text)}
    return {"object": "chat.completion", "choices": [{"index": 0, "finish_reason": "stop",
                                                      "message": {"role": "assistant", "content": json.dumps(answer)}}]}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # the default listen backlog (5) resets connections past ~16 at once


class StandInServer:
    """Serve on ``127.0.0.1:port`` (0 = any free port) in a background thread; ``url`` ends in ``/v1``."""

    def __init__(self, port: int = 0, latency: float = 0.02, jitter: float = 0.0):
        self.latency, self.jitter = latency, jitter
        self.routes: Counter = Counter()     # route -> requests
        self.subjects: Counter = Counter()   # subject (with the attribute, in logprob mode) -> requests
        self.in_flight = self.max_in_flight = 0  # requests being answered now, and the most at once
        self._lock = threading.Lock()
        self.server = _Server(("127.0.0.1", port), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> "StandInServer":
        self._thread.start()
        return self

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    @property
    def requests(self) -> int:
        return sum(self.routes.values())

    def stats(self) -> dict:
        with self._lock:
            return {"requests": self.requests, "routes": dict(self.routes), "subjects": len(self.subjects),
                    "asked_twice": self.asked_twice(), "max_in_flight": self.max_in_flight}

    def asked_twice(self) -> int:
        """Questions (an item, and in logprob mode an attribute of it) asked more than once."""
        return sum(1 for n in self.subjects.values() if n > 1)

    def _record(self, route: str, prompt: str) -> None:
        with self._lock:
            self.routes[route] += 1
            self.subjects[subject(prompt)] += 1

    def _delay(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.latency > 0:
                time.sleep(max(0.0, self.latency * (1 + self.jitter * random.uniform(-1, 1))))
        finally:
            with self._lock:
                self.in_flight -= 1

    def _handler(self):
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive for clients that reuse connections

            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path.rstrip("/").endswith("/stats"):
                    self._send(200, outer.stats())
                elif self.path.rstrip("/").endswith("/models"):
                    self._send(200, {"object": "list", "data": [{"id": "stand-in", "object": "model"}]})
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self):
                try:
                    payload = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                except (ValueError, json.JSONDecodeError):
                    return self._send(400, {"error": {"message": "body is not JSON"}})
                route = self.path.rstrip("/").rsplit("/v1/", 1)[-1]
                if route == "completions" and isinstance(payload.get("prompt"), str):
                    outer._record(route, payload["prompt"])
                    body = completion(payload["prompt"])
                elif route == "chat/completions" and isinstance(payload.get("messages"), list):
                    outer._record(route, payload["messages"][-1].get("content", ""))
                    body = chat(payload["messages"])
                else:
                    return self._send(400, {"error": {"message": f"unsupported request to {self.path}"}})
                outer._delay()
                self._send(200, body)

            def _send(self, status: int, body: dict):
                data = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout, a killed run): nothing to answer

        return Handler


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m recbole_guided.llm.stand_in_server", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=8000, help="0: any free port (printed)")
    p.add_argument("--latency", type=float, default=0.02, help="seconds per request")
    p.add_argument("--jitter", type=float, default=0.0, help="latency varies by +- this fraction")
    args = p.parse_args(argv)
    server = StandInServer(args.port, args.latency, args.jitter)
    print(server.url, flush=True)  # a parent process reads the URL from the first line
    try:
        server.server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server.server_close()


if __name__ == "__main__":
    main(sys.argv[1:])
