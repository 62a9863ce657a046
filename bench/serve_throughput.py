#!/usr/bin/env python
"""Throughput and prefix-cache TTFT: ``mlxk serve`` against ``python -m mlx_lm.server``.

    python bench/serve_throughput.py --model PATH_OR_NAME [--clients 1 4 8 16] [--tokens 128] [--rounds 3]

For each concurrency, N clients stream chat completions of ``--tokens`` tokens at once
(greedy, distinct prompts); aggregate tok/s = completion tokens / wall time. Both servers
stay up and take turns, ``--rounds`` times each, and the medians are compared. Then a
repeated-prefix TTFT test on ``mlxk serve``: a ~1.5k-token system prompt, cold, then a RAM
hit (another user question), then a disk hit after a restart.

Both servers run in this Python environment, so they use the same MLX and BLAS. The
mlx_lm server needs a model folder; names are resolved through the mlxk store first.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx2 as httpx

import serving  # bench/serving.py

TOPICS = ["the sea", "mountains", "a city at night", "bread", "trains", "a library", "rain", "music",
          "the moon", "gardens", "winter", "bridges", "coffee", "a river", "birds", "clocks"]


SERVER_ENV = dict(os.environ)  # both servers get the same environment
MLX_LM_ENV: dict[str, str] = {}  # and mlx_lm.server the BLAS that mlxk loads by itself


class Server(serving.Server):
    def __init__(self, kind: str, model: str, path: str, extra: list[str], log_dir: Path):
        self.kind = kind
        if kind == "mlxk":
            command = lambda port: [sys.executable, "-m", "mlxk", "serve", "--model", model,  # noqa: E731
                                    "--port", str(port), *extra]
        else:
            command = lambda port: [sys.executable, "-m", "mlx_lm.server", "--model", path,  # noqa: E731
                                    "--port", str(port), *extra]
        super().__init__(command, log_dir, name=kind, env={**SERVER_ENV, **(MLX_LM_ENV if kind == "mlx_lm" else {})})
        self.model_id = path if kind == "mlx_lm" else self.first_model_id()


def stream_chat(base: str, model: str, messages: list[dict], max_tokens: int) -> tuple[int, float, float]:
    """(completion tokens, ttft seconds, total seconds)."""
    body = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0.0, "stream": True,
            "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    ttft, chunks, usage = None, 0, None
    with httpx.Client(timeout=600) as c, c.stream("POST", base + "/v1/chat/completions", json=body) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            obj = json.loads(line[6:])
            if obj.get("usage"):
                usage = obj["usage"]
            for ch in obj.get("choices") or []:
                if (ch.get("delta") or {}).get("content"):
                    chunks += 1
                    if ttft is None:
                        ttft = time.perf_counter() - t0
    total = time.perf_counter() - t0
    tokens = usage["completion_tokens"] if usage else chunks
    return tokens, ttft if ttft is not None else total, total


def throughput(srv: Server, clients: int, tokens: int) -> float:
    results: list[tuple[int, float, float]] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        msgs = [{"role": "user", "content": f"Write a long, detailed story about {TOPICS[i % len(TOPICS)]} ({i})."}]
        r = stream_chat(srv.base, srv.model_id, msgs, tokens)
        with lock:
            results.append(r)

    stream_chat(srv.base, srv.model_id, [{"role": "user", "content": "warm up"}], 8)
    t0 = time.perf_counter()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return sum(r[0] for r in results) / wall


def ttft_test(model: str, path: str, log_dir: Path, target_tokens: int = 1500) -> dict[str, float]:
    base_sentence = "The assistant answers questions about local language models, caches, batching and MLX. "
    cache_dir = Path(tempfile.mkdtemp(prefix="mlxk-bench-pc-"))
    extra = ["--prefix-cache-dir", str(cache_dir)]
    out: dict[str, float] = {}
    system = ""

    def ask(srv: Server, q: str) -> float:
        return stream_chat(srv.base, srv.model_id, [{"role": "system", "content": system},
                                                     {"role": "user", "content": q}], 4)[1]

    srv = Server("mlxk", model, path, extra, log_dir)
    try:
        # size the system prompt with this model's tokenizer (a plain completion shares no chat prefix)
        probe = httpx.post(srv.base + "/v1/completions", timeout=120, json={
            "model": srv.model_id, "prompt": base_sentence * 10, "max_tokens": 1}).json()
        per = probe["usage"]["prompt_tokens"] / 10
        ctx = httpx.get(srv.base + "/v1/models").json()["data"][0].get("context_length") or 4096
        target = min(target_tokens, ctx - 128)
        system = base_sentence * max(1, int(target / per))
        out["prompt_tokens"] = float(int(per * int(target / per)))
        out["cold"] = ask(srv, "What is a KV cache?")
        out["ram_hit"] = statistics.median(ask(srv, f"Question number {i}?") for i in range(3))
        time.sleep(1.0)  # let the snapshot writes land
    finally:
        srv.stop()
    srv = Server("mlxk", model, path, extra, log_dir)
    try:
        out["disk_hit"] = ask(srv, "What is continuous batching?")
    finally:
        srv.stop()
    return out


def resolve_path(model: str) -> str:
    if os.path.isdir(os.path.expanduser(model)):
        return os.path.abspath(os.path.expanduser(model))
    from mlxk.store.names import resolve

    ref = resolve(model)
    if ref.path is None:
        raise SystemExit(f"{model}: no snapshot on disk")
    return str(ref.path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8, 16])
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3, help="runs per server and concurrency (median is reported)")
    ap.add_argument("--skip-mlx-lm", action="store_true")
    ap.add_argument("--skip-ttft", action="store_true")
    ap.add_argument("--json", action="store_true", help="print the results as JSON at the end")
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                    help="extra environment for both servers (e.g. a BLAS selection)")
    args = ap.parse_args()
    try:  # the BLAS mlxk serve loads: give mlx_lm.server the same one. Only to mlx_lm.server:
        # a preloaded BLAS would shadow mlxk's decode GEMM, which sits in front of OpenBLAS.
        from mlxk.accel import blas, report

        lib = blas.find()
        if lib and "LD_PRELOAD" not in SERVER_ENV:
            MLX_LM_ENV["LD_PRELOAD"] = lib
            print(f"both servers: BLAS {lib}; mlxk: {'; '.join(report.observe().lines()[:2])}")
    except ImportError:
        pass
    for kv in args.env:
        key, _, value = kv.partition("=")
        SERVER_ENV[key] = value
    path = resolve_path(args.model)
    log_dir = Path(tempfile.mkdtemp(prefix="mlxk-bench-logs-"))
    kinds = ["mlxk"] + ([] if args.skip_mlx_lm else ["mlx_lm"])
    # Both servers stay up (an idle one uses no CPU) and take turns, so that drift in the
    # machine's speed hits both alike; each figure is the median of --rounds runs.
    servers: dict[str, Server] = {}
    samples: dict[str, dict[int, list[float]]] = {k: {n: [] for n in args.clients} for k in kinds}
    try:
        for kind in kinds:
            servers[kind] = Server(kind, args.model, path, ["--no-prefix-cache"] if kind == "mlxk" else [], log_dir)
        for n in args.clients:
            for r in range(args.rounds):
                for kind in (kinds if r % 2 == 0 else kinds[::-1]):
                    tps = throughput(servers[kind], n, args.tokens)
                    samples[kind][n].append(tps)
                    print(f"{kind:7s} clients={n:3d} round {r + 1}  {tps:8.1f} tok/s", flush=True)
    finally:
        for srv in servers.values():
            srv.stop()
    results = {k: {n: statistics.median(v) for n, v in per.items()} for k, per in samples.items()}

    print(f"\nAggregate tok/s, {args.tokens} tokens per client, median of {args.rounds} round(s), model {Path(path).name}")
    print(f"{'clients':>8} {'mlxk':>10} {'mlx_lm':>10} {'ratio':>7}")
    for n in args.clients:
        a = results["mlxk"][n]
        b = results.get("mlx_lm", {}).get(n)
        ratio = f"{a / b:7.2f}" if b else "      -"
        print(f"{n:8d} {a:10.1f} {(b or 0):10.1f} {ratio}")
    ttft = None
    if not args.skip_ttft:
        ttft = ttft_test(args.model, path, log_dir)
        print(f"\nTTFT with a ~{int(ttft['prompt_tokens'])}-token system prompt (mlxk serve)")
        for k in ("cold", "ram_hit", "disk_hit"):
            speed = ttft["cold"] / ttft[k] if ttft[k] else float("inf")
            print(f"{k:9s} {ttft[k] * 1000:8.1f} ms   {speed:6.1f}x vs cold")
    if args.json:
        print(json.dumps({"throughput": results, "samples": samples, "ttft": ttft, "model": Path(path).name, "tokens": args.tokens}))
    print(f"\nserver logs: {log_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
