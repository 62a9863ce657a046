#!/usr/bin/env python
"""Structured output's cost: ``mlxk serve`` with and without a JSON schema, and grammar compile TTFT.

    python bench/structured.py --model PATH_OR_NAME [--clients 1 8] [--tokens 96] [--rounds 3]

Throughput: N clients stream chat completions at once (greedy, the same prompts in both
modes); aggregate tok/s = completion tokens / wall time. The schema asks for an array of
at least 50 objects (nested object, bounded integer, enum, bounded array, pattern), so a
constrained answer runs to ``--tokens`` as the free one does: same lengths, and a mask that
is JSON all the way. The token counts are printed so unequal lengths show.

Grammar TTFT: a response_format with a new tool-parameters schema each time (cold:
compiled on arrival) against the same schema again (cached), and the same prompt without
any constraint; streamed, one token's time to first token (the throughput warm-up has
already built llguidance's view of the tokenizer, once per model). With a model folder, the
check and compile times (and that tokenizer view) are also measured in this process, away
from the server's noise.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx2 as httpx

import serving  # bench/serving.py

TOPICS = ["sailors", "bakers", "train drivers", "librarians", "gardeners", "musicians", "astronomers", "clockmakers"]
PERSON = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 24}, "age": {"type": "integer", "minimum": 0, "maximum": 120},
    "color": {"enum": ["red", "green", "blue"]},
    "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "minItems": 1, "maxItems": 3},
    "address": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 24},
                                                 "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
                "required": ["city", "zip"], "additionalProperties": False}},
    "required": ["name", "age", "color", "tags", "address"], "additionalProperties": False}
MANY = {"type": "object", "properties": {"people": {"type": "array", "items": PERSON, "minItems": 50}},
        "required": ["people"], "additionalProperties": False}


class Server(serving.Server):
    def __init__(self, model: str, log_dir: Path):
        super().__init__(lambda port: [sys.executable, "-m", "mlxk", "serve", "--model", model, "--port", str(port),
                                       "--no-prefix-cache"], log_dir)
        self.model = self.first_model_id()


def stream(srv: Server, body: dict) -> tuple[int, float]:
    """(completion tokens, seconds to the first content or tool-call chunk)."""
    body = {"model": srv.model, "stream": True, "stream_options": {"include_usage": True}, **body}
    start, first, tokens = time.perf_counter(), None, 0
    with httpx.stream("POST", srv.base + "/v1/chat/completions", json=body, timeout=600) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            obj = json.loads(line[6:])
            if obj.get("usage"):
                tokens = obj["usage"]["completion_tokens"]
            for ch in obj.get("choices") or []:
                d = ch.get("delta") or {}
                if first is None and (d.get("content") or d.get("tool_calls") or ch.get("finish_reason")):
                    first = time.perf_counter() - start
    return tokens, first or 0.0


def throughput(srv: Server, clients: int, tokens: int, schema: bool) -> tuple[float, list[int]]:
    counts = [0] * clients

    def one(i: int) -> None:
        body = {"messages": [{"role": "user", "content": f"List fifty {TOPICS[i % len(TOPICS)]} as JSON: name, age, "
                                                         "favourite color, tags and address of each."}],
                "max_tokens": tokens, "temperature": 0}
        if schema:
            body["response_format"] = {"type": "json_schema", "json_schema": {"name": "people", "schema": MANY}}
        counts[i] = stream(srv, body)[0]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - start), counts


def tool_schema(name: str) -> dict:
    """A typical tool's parameters; ``name`` makes it a schema the server has not seen."""
    return {"type": "object", "description": name, "properties": {
        "city": {"type": "string", "maxLength": 40}, "unit": {"enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 14}, name: {"type": "boolean"}},
        "required": ["city", "unit"], "additionalProperties": False}


def schema_body(name: str | None) -> dict:
    body = {"messages": [{"role": "user", "content": "What is the weather in Paris? Answer as JSON."}],
            "max_tokens": 1, "temperature": 0}
    if name is not None:
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": "w", "schema": tool_schema(name)}}
    return body


def ttft(srv: Server, rounds: int) -> dict[str, float]:
    cold, cached, free = [], [], []
    for i in range(rounds * 3):  # the same prompt each time (no prefix cache: the same prefill)
        name = f"flag_{i}_{time.time_ns()}"
        cold.append(stream(srv, schema_body(name))[1])
        cached.append(stream(srv, schema_body(name))[1])
        free.append(stream(srv, schema_body(None))[1])
    return {"cold grammar": statistics.median(cold),
            "cached grammar": statistics.median(cached), "no constraint": statistics.median(free)}


def compile_times(model: str, rounds: int) -> tuple[float, float]:
    """In this process, without the server's noise: (check without a tokenizer, compile with it), ms."""
    from mlx_lm.tokenizer_utils import load as load_tokenizer

    from mlxk.engine.constraints import Constraints, plan
    from mlxk.engine.requests import GenerationRequest, OutputFormat, SamplingParams

    tokenizer = load_tokenizer(Path(model))
    t0 = time.perf_counter()
    group = Constraints(tokenizer, None)
    print(f"llguidance's view of the tokenizer (once per model): {(time.perf_counter() - t0) * 1000:.0f} ms")
    checks, compiles = [], []
    for i in range(rounds * 5):
        req = GenerationRequest(None, SamplingParams(), messages=[], output_format=OutputFormat(
            "json_schema", tool_schema(f"flag_{i}_{time.time_ns()}")))
        t0 = time.perf_counter()
        spec = plan(req)
        t1 = time.perf_counter()
        group.matcher(spec.grammar)
        checks.append(t1 - t0)
        compiles.append(time.perf_counter() - t1)
    return statistics.median(checks) * 1000, statistics.median(compiles) * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--model", required=True)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--tokens", type=int, default=96)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    log_dir = Path(tempfile.mkdtemp(prefix="mlxk-bench-structured-"))
    srv = Server(args.model, log_dir)
    try:
        throughput(srv, 2, 8, True)  # warm-up: weights, kernels, the tokenizer view
        for n in args.clients:
            free, constrained = [], []
            for _ in range(args.rounds):  # interleaved, so machine noise hits both alike
                tps, free_counts = throughput(srv, n, args.tokens, False)
                free.append(tps)
                tps, json_counts = throughput(srv, n, args.tokens, True)
                constrained.append(tps)
            f, c = statistics.median(free), statistics.median(constrained)
            print(f"{n} stream(s): free {f:.1f} tok/s, JSON schema {c:.1f} tok/s, ratio {c / f:.2f}  "
                  f"(tokens free {free_counts}, schema {json_counts})")
        t = ttft(srv, args.rounds)
        for k, v in t.items():
            print(f"TTFT {k}: {v * 1000:.1f} ms")
        print(f"grammar compile adds {(t['cold grammar'] - t['cached grammar']) * 1000:.1f} ms; "
              f"a cached grammar adds {(t['cached grammar'] - t['no constraint']) * 1000:.1f} ms over no constraint")
        if Path(args.model).is_dir():
            check_ms, compile_ms = compile_times(args.model, args.rounds)
            print(f"in process, a new typical tool schema: check {check_ms:.2f} ms (server side, no tokenizer) + "
                  f"compile {compile_ms:.2f} ms (engine, with the tokenizer)")
    finally:
        srv.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
