#!/usr/bin/env python
"""Soak test of ``mlxk serve``: many streaming clients, disconnects and hostile requests.

    python bench/soak.py --model NAME_OR_PATH [--clients 64] [--minutes 10] [--max-tokens 48]

N clients stream chat completions in a loop for T minutes; a third of them hang up
mid-stream. Beside them one client sends malformed bodies, oversized bodies and long
prompts. At the end it prints requests done / cancelled / errored, the 5xx count,
``active_sequences`` after the run (must be 0), the worst inter-token gap any stream saw,
the server's RSS at start and at the end (after warm-up), and what the prefix cache wrote.
Targets (issue 11): 0 5xx, 0 leaked sequences, RSS growth < 25 % after warm-up.
Every request goes to 127.0.0.1 only; loops are bounded by the deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2 as httpx

TOPICS = ["the sea", "mountains", "a city at night", "bread", "trains", "a library", "rain", "music"]
SYSTEM = "You are a concise assistant. " * 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_rss_mb(supervisor_pid: int) -> float:
    """RSS of the server process (the supervisor's child), from /proc."""
    total = 0
    try:
        children = subprocess.run(["pgrep", "-P", str(supervisor_pid)], capture_output=True, text=True).stdout.split()
        for pid in children:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    except OSError:
        pass
    return total / 1024


class Stats:
    def __init__(self):
        self.done = self.cancelled = self.errored = self.five_xx = self.four_xx = 0
        self.refused_unread = 0  # oversized bodies cut off by the server's 413 + close
        self.worst_gap = 0.0
        self.statuses: dict[int, int] = {}

    def status(self, code: int) -> None:
        self.statuses[code] = self.statuses.get(code, 0) + 1
        if code >= 500:
            self.five_xx += 1
        elif code >= 400:
            self.four_xx += 1


async def streamer(client: httpx.AsyncClient, base: str, idx: int, deadline: float, stats: Stats, max_tokens: int):
    rng = random.Random(idx)
    hang_up = idx % 3 == 0
    while time.monotonic() < deadline:
        body = {"messages": [{"role": "system", "content": SYSTEM},
                             {"role": "user", "content": f"Write about {rng.choice(TOPICS)} ({idx})."}],
                "max_tokens": max_tokens, "temperature": 0.7, "stream": True}
        cut = rng.randint(2, max(3, max_tokens // 2)) if hang_up else None
        last, n = None, 0
        try:
            async with client.stream("POST", base + "/v1/chat/completions", json=body) as r:
                stats.status(r.status_code)
                if r.status_code != 200:
                    stats.errored += 1
                    await r.aread()
                    continue
                async for line in r.aiter_lines():
                    if not line.startswith("data: {"):
                        continue
                    now = time.monotonic()
                    if last is not None:
                        stats.worst_gap = max(stats.worst_gap, now - last)
                    last, n = now, n + 1
                    if '"error"' in line:
                        stats.errored += 1
                        break
                    if cut is not None and n >= cut:
                        stats.cancelled += 1
                        break
                else:
                    stats.done += 1
        except httpx.HTTPError:
            stats.errored += 1


def hostile_bodies(context_chars: int) -> list[tuple[str, bytes, dict]]:
    ok = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    j = lambda o: json.dumps(o).encode()  # noqa: E731
    return [
        ("malformed", b'{"messages": [', {}),
        ("wrong-type", j({**ok, "messages": [{"role": {"x": 1}, "content": "hi"}]}), {}),
        ("nan", b'{"messages": [{"role": "user", "content": "hi"}], "min_p": NaN}', {}),
        ("deep", b"[" * 20000 + b"]" * 20000, {}),
        ("top_k", j({**ok, "top_k": 10**7}), {}),
        ("oversized", b'{"messages": [{"role": "user", "content": "' + b"a" * (20 << 20) + b'"}]}', {}),
        ("long-prompt", j({**ok, "messages": [{"role": "user", "content": "word " * (context_chars // 5)}]}), {}),
        ("text-plain", j(ok), {"content-type": "text/plain"}),
    ]


async def hostile(client: httpx.AsyncClient, base: str, deadline: float, stats: Stats, context_chars: int):
    bodies = hostile_bodies(context_chars)
    i = 0
    while time.monotonic() < deadline:
        name, raw, headers = bodies[i % len(bodies)]
        i += 1
        try:
            r = await client.post(base + "/v1/chat/completions", content=raw,
                                  headers={"content-type": "application/json", **headers}, timeout=120)
            stats.status(r.status_code)
            if r.status_code >= 500:
                print(f"  5xx from {name}: {r.status_code} {r.text[:200]}", flush=True)
        except httpx.HTTPError as exc:
            if name == "oversized":  # the server answers 413 and closes before the body is sent
                stats.refused_unread += 1
            else:
                stats.errored += 1
                print(f"  {name}: {type(exc).__name__}", flush=True)
        await asyncio.sleep(0.5)


async def run(base: str, clients: int, minutes: float, max_tokens: int, key: str) -> Stats:
    stats = Stats()
    deadline = time.monotonic() + minutes * 60
    limits = httpx.Limits(max_connections=clients + 8)
    async with httpx.AsyncClient(timeout=300, limits=limits, headers={"Authorization": f"Bearer {key}"}) as c:
        health = (await c.get(base + "/health")).json()
        ctx = 8192
        tasks = [streamer(c, base, i, deadline, stats, max_tokens) for i in range(clients)]
        tasks.append(hostile(c, base, deadline, stats, ctx * 6))
        await asyncio.gather(*tasks)
        del health
    return stats


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--max-tokens", type=int, default=48)
    args = ap.parse_args()
    port, key = free_port(), "sk-soak"
    base = f"http://127.0.0.1:{port}"
    tmp = Path(tempfile.mkdtemp(prefix="mlxk-soak-"))
    log = open(tmp / "serve.log", "wb")
    env = {**os.environ, "MLXK_API_KEY": key}
    proc = subprocess.Popen([sys.executable, "-m", "mlxk", "serve", "--model", args.model, "--port", str(port),
                             "--prefix-cache-dir", str(tmp / "prefix-cache")], stdout=log, stderr=subprocess.STDOUT,
                            env=env)
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            try:
                if httpx.get(base + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            print((tmp / "serve.log").read_text()[-3000:])
            return 1
        # warm-up: the same load for a tenth of the run (at least 30 s), then the RSS baseline:
        # the bounded caches (MLX's buffers, the RAM prefix cache) fill during it
        warm = max(0.5, args.minutes / 10)
        asyncio.run(run(base, args.clients, warm, args.max_tokens, key))
        rss0 = worker_rss_mb(proc.pid)
        t0 = time.monotonic()
        stats = asyncio.run(run(base, args.clients, args.minutes, args.max_tokens, key))
        elapsed = time.monotonic() - t0
        time.sleep(2)
        health = httpx.get(base + "/health", timeout=10).json()
        metrics = httpx.get(base + "/metrics", timeout=10).text
        rss1 = worker_rss_mb(proc.pid)
    finally:
        proc.send_signal(2)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    written = next((line.split()[1] for line in metrics.splitlines()
                    if line.startswith("mlxk_prefix_cache_bytes_written_total")), "0")
    per_req = next((line.split()[1] for line in metrics.splitlines()
                    if line.startswith("mlxk_prefix_cache_bytes_written_per_request")), "0")
    growth = (rss1 - rss0) / rss0 * 100 if rss0 else 0.0
    print(f"soak: {args.clients} clients, {elapsed / 60:.1f} min after {warm:.1f} min of warm-up, "
          f"max_tokens {args.max_tokens}")
    print(f"requests done {stats.done}, cancelled {stats.cancelled}, errored {stats.errored}, "
          f"oversized cut off by 413 {stats.refused_unread}")
    print(f"HTTP statuses {dict(sorted(stats.statuses.items()))}; 5xx: {stats.five_xx}")
    print(f"active_sequences after: {health['active_sequences']}, queued: {health['queued']}")
    print(f"worst inter-token gap: {stats.worst_gap:.2f} s")
    print(f"server RSS: {rss0:.0f} MB after warm-up -> {rss1:.0f} MB at the end ({growth:+.1f} %)")
    print(f"prefix cache: {int(float(written)) / 1e6:.1f} MB written, {float(per_req) / 1e3:.1f} kB per request, "
          f"{health.get('prefix_cache_files')} files")
    for line in metrics.splitlines():
        if line.startswith("mlxk_memory_"):
            name, value = line.split()
            print(f"  {name}: {float(value) / 1e6:.0f} MB")
    ok = stats.five_xx == 0 and health["active_sequences"] == 0 and growth < 25
    print("targets met" if ok else "TARGETS NOT MET")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
