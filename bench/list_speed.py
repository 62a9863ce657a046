#!/usr/bin/env python3
"""`mlxk list --json` vs `hf cache ls --format json` on the same 200-model cache.

mlxk does more per model (integrity checks, framework and runtime gate) than the hf
CLI (a scan); the ratio says what that costs. Run: .venv/bin/python bench/list_speed.py
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.cachebuilder import CacheBuilder, gguf_bytes, mlx_base_files, mlx_chat_files  # noqa: E402

N_MODELS = int(os.environ.get("N_MODELS", "200"))
RUNS = int(os.environ.get("RUNS", "5"))


def build(cache_dir: Path) -> None:
    builder = CacheBuilder(cache_dir)
    for i in range(N_MODELS):
        kind = i % 4
        files = mlx_chat_files(hidden_size=64 + i) if kind < 2 else mlx_base_files() if kind == 2 else {"m.gguf": gguf_bytes()}
        builder.add(f"bench-org/model-{i:03d}", files)


def timed(cmd: list[str], env: dict) -> tuple[float, str]:
    best = []
    out = ""
    for _ in range(RUNS):
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
        best.append(time.perf_counter() - start)
        out = proc.stdout
    return statistics.median(best), out


def main() -> None:
    bindir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "HF_HOME": tmp, "HF_HUB_OFFLINE": "1", "NO_COLOR": "1"}
        env.pop("HF_HUB_CACHE", None)
        build(Path(tmp) / "hub")
        ours, out = timed([str(bindir / "mlxk"), "list", "--json"], env)
        assert json.loads(out)["data"]["count"] == N_MODELS
        theirs, out = timed([str(bindir / "hf"), "cache", "ls", "--format", "json"], env)
        print(f"models in cache:             {N_MODELS}")
        print(f"mlxk list --json             {ours * 1000:8.1f} ms (median of {RUNS})")
        print(f"hf cache ls --format json    {theirs * 1000:8.1f} ms (median of {RUNS})")
        print(f"ratio mlxk/hf:               {ours / theirs:8.2f}x")


if __name__ == "__main__":
    main()
