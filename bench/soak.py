#!/usr/bin/env python
"""Soak test of ``mlxk serve``: many streaming clients, disconnects and hostile requests.

    python bench/soak.py --model NAME_OR_PATH [--clients 64] [--minutes 10] [--max-tokens 48]

N clients stream chat completions in a loop for T minutes; a third of them hang up
mid-stream. Beside them one client sends malformed bodies, oversized bodies and long
prompts. At the end it prints requests done / cancelled / errored, the 5xx count,
``active_sequences`` after the run (must be 0), the worst inter-token gap any stream saw,
the server's RSS after warm-up and at the end (both once it is idle again; a line every 30 s
shows RSS beside MLX's own memory under load), and what the prefix cache wrote.
Targets (issue 11): 0 5xx, 0 leaked sequences, RSS growth < 25 % after warm-up, both idle to
idle and under load (from the first minute of load to the end).
Every request goes to 127.0.0.1 only; loops are bounded by the deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx2 as httpx

import serving  # bench/serving.py

TOPICS = ["the sea", "mountains", "a city at night", "bread", "trains", "a library", "rain", "music"]
SYSTEM = "You are a concise assistant. " * 20


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


def memory_metrics(base: str) -> dict[str, float]:
    """The server's mlxk_memory_* gauges, in MB."""
    text = httpx.get(base + "/metrics", timeout=10).text
    return {line.split()[0].removeprefix("mlxk_memory_"): float(line.split()[1]) / 1e6
            for line in text.splitlines() if line.startswith("mlxk_memory_")}


def settle(base: str, limit: float = 60) -> None:
    """Wait until the server has no request left (the clients just hung up), then 2 s more:
    both RSS readings are taken in the same state, idle."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        health = httpx.get(base + "/health", timeout=10).json()
        if health["active_sequences"] == 0 and health["queued"] == 0:
            break
        time.sleep(0.2)
    time.sleep(2)


class Timeline(threading.Thread):
    """Every 30 s: the worker's RSS beside MLX's own memory, to tell what grows."""

    def __init__(self, base: str, supervisor_pid: int, t0: float):
        super().__init__(daemon=True)
        self.base, self.pid, self.t0 = base, supervisor_pid, t0
        self.done = threading.Event()
        self.peak = 0.0
        self.samples: list[float] = []  # RSS under load, every 30 s

    def run(self) -> None:
        while not self.done.wait(30):
            try:
                mem = memory_metrics(self.base)
            except httpx.HTTPError:
                continue
            rss = worker_rss_mb(self.pid)
            self.peak = max(self.peak, rss)
            self.samples.append(rss)
            print(f"  +{(time.monotonic() - self.t0) / 60:4.1f} min: RSS {rss:.0f} MB, "
                  + ", ".join(f"{k} {v:.0f}" for k, v in mem.items()), flush=True)

    def stop(self) -> None:
        self.done.set()
        self.join(5)


class Stats:
    def __init__(self):
        self.done = self.cancelled = self.errored = self.five_xx = self.four_xx = 0
        self.refused_unread = 0  # oversized bodies cut off by the server's 413 + close
        self.worst_gap = 0.0
        self.gaps: list[float] = []
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
                    n += 1
                    if '"content": "' in line and '"content": ""' not in line:  # a token's text, not the role chunk
                        now = time.monotonic()
                        if last is not None:  # between tokens: the wait for the first one is its TTFT
                            stats.worst_gap = max(stats.worst_gap, now - last)
                            stats.gaps.append(now - last)
                        last = now
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
    key = "sk-soak"
    tmp = Path(tempfile.mkdtemp(prefix="mlxk-soak-"))
    srv = serving.Server(lambda port: [sys.executable, "-m", "mlxk", "serve", "--model", args.model, "--port",
                                       str(port), "--prefix-cache-dir", str(tmp / "prefix-cache")],
                         tmp, env={**os.environ, "MLXK_API_KEY": key})
    base, proc = srv.base, srv.proc
    try:
        # warm-up: the same load for a tenth of the run (at least 30 s), then the RSS baseline:
        # the bounded caches (MLX's buffers, the RAM prefix cache) fill during it
        warm = max(0.5, args.minutes / 10)
        asyncio.run(run(base, args.clients, warm, args.max_tokens, key))
        settle(base)
        rss0 = worker_rss_mb(proc.pid)
        print(f"after warm-up: RSS {rss0:.0f} MB, "
              + ", ".join(f"{k} {v:.0f}" for k, v in memory_metrics(base).items()), flush=True)
        t0 = time.monotonic()
        timeline = Timeline(base, proc.pid, t0)
        timeline.start()
        stats = asyncio.run(run(base, args.clients, args.minutes, args.max_tokens, key))
        elapsed = time.monotonic() - t0
        timeline.stop()
        settle(base)
        health = httpx.get(base + "/health", timeout=10).json()
        metrics = httpx.get(base + "/metrics", timeout=10).text
        rss1 = worker_rss_mb(proc.pid)
    finally:
        srv.stop()
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
    gaps = sorted(stats.gaps) or [0.0]
    print(f"inter-token gaps: worst {stats.worst_gap:.2f} s, 99th percentile {gaps[int(0.99 * (len(gaps) - 1))]:.2f} s, "
          f"median {gaps[len(gaps) // 2]:.2f} s")
    print(f"server RSS, idle: {rss0:.0f} MB after warm-up -> {rss1:.0f} MB at the end ({growth:+.1f} %)")
    loaded = timeline.samples[1:]  # from the first minute of load on: live KV caches are in it by then
    if len(loaded) >= 2:
        print(f"server RSS under load: {loaded[0]:.0f} MB at 1 min -> {loaded[-1]:.0f} MB at the end "
              f"({(loaded[-1] - loaded[0]) / loaded[0] * 100:+.1f} %), highest {timeline.peak:.0f} MB")
    print(f"prefix cache: {int(float(written)) / 1e6:.1f} MB written, {float(per_req) / 1e3:.1f} kB per request, "
          f"{health.get('prefix_cache_files')} files")
    for line in metrics.splitlines():
        if line.startswith("mlxk_memory_"):
            name, value = line.split()
            print(f"  {name}: {float(value) / 1e6:.0f} MB")
    load_growth = (loaded[-1] - loaded[0]) / loaded[0] * 100 if len(loaded) >= 2 else 0.0
    ok = stats.five_xx == 0 and health["active_sequences"] == 0 and growth < 25 and load_growth < 25
    print("targets met" if ok else "TARGETS NOT MET")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
