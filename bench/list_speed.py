#!/usr/bin/env python3
"""The read-only commands on a 200-model cache: mlxk vs `hf` and vs MLX-Knife 2.0.8.

Times `list --json`, `health --json` and `--version --json` of this checkout's mlxk,
of MLX-Knife 2.0.8 (PyPI `mlx-knife`, installed in its own venv: its console script is
also called `mlxk`, so it is called by absolute path) and the nearest `hf` command
(`hf cache ls --format json` for list and health, `hf version` for --version). Every
round runs each command once, in turn, so a busy machine slows all of them alike;
the medians and their ratios are printed.

    .venv/bin/python bench/list_speed.py            # N_MODELS=200 RUNS=7
    MLX_KNIFE_VENV=/path/to/venv python bench/list_speed.py

The MLX-Knife venv is made on first use under ~/.cache/mlxk-bench/ (one `pip install`).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.cachebuilder import CacheBuilder, gguf_bytes, mlx_base_files, mlx_chat_files  # noqa: E402

N_MODELS = int(os.environ.get("N_MODELS", "200"))
RUNS = int(os.environ.get("RUNS", "7"))
KNIFE_VERSION = "2.0.8"
KNIFE_VENV = Path(os.environ.get("MLX_KNIFE_VENV", Path.home() / ".cache" / "mlxk-bench" / f"mlx-knife-{KNIFE_VERSION}"))


def build(cache_dir: Path) -> None:
    builder = CacheBuilder(cache_dir)
    for i in range(N_MODELS):
        kind = i % 4
        files = mlx_chat_files(hidden_size=64 + i) if kind < 2 else mlx_base_files() if kind == 2 else {"m.gguf": gguf_bytes()}
        builder.add(f"bench-org/model-{i:03d}", files)


def knife_mlxk() -> Path:
    """MLX-Knife's `mlxk` script in its own venv, installed there if missing."""
    script = KNIFE_VENV / "bin" / "mlxk"
    if not script.exists():
        print(f"installing mlx-knife=={KNIFE_VERSION} into {KNIFE_VENV} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(KNIFE_VENV)], check=True)
        subprocess.run([str(KNIFE_VENV / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                        f"mlx-knife=={KNIFE_VERSION}"], check=True)
    return script


def run_once(cmd: list[str], env: dict) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return time.perf_counter() - start, proc.stdout


def main() -> None:
    bindir = Path(sys.executable).parent
    ours, knife, hf = str(bindir / "mlxk"), str(knife_mlxk()), str(bindir / "hf")
    rows = {
        "list --json": {"mlxk": [ours, "list", "--json"], "mlx-knife": [knife, "list", "--json"],
                        "hf": [hf, "cache", "ls", "--format", "json"]},
        "health --json": {"mlxk": [ours, "health", "--json"], "mlx-knife": [knife, "health", "--json"],
                          "hf": [hf, "cache", "ls", "--format", "json"]},
        "--version --json": {"mlxk": [ours, "--version", "--json"], "mlx-knife": [knife, "--version", "--json"],
                             "hf": [hf, "version"]},
    }
    times: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "HF_HOME": tmp, "HF_HUB_OFFLINE": "1", "NO_COLOR": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
        env.pop("HF_HUB_CACHE", None)
        build(Path(tmp) / "hub")
        for row, tools in rows.items():  # warm-up, and a check that every tool sees the whole cache
            for tool, cmd in tools.items():
                _, out = run_once(cmd, env)
                if tool != "hf" and row != "--version --json":
                    data = json.loads(out)["data"]
                    seen = data["count"] if "count" in data else data["summary"]["total"]
                    assert seen == N_MODELS, f"{tool} {row}: {seen} models of {N_MODELS}"
        for _ in range(RUNS):
            for row, tools in rows.items():
                for tool, cmd in tools.items():
                    times.setdefault((row, tool), []).append(run_once(cmd, env)[0])
    med = {key: statistics.median(v) * 1000 for key, v in times.items()}
    hf_version = subprocess.run([hf, "version"], capture_output=True, text=True).stdout.split("version:")[-1].strip()
    ours_version = subprocess.run([ours, "--version", "--json"], capture_output=True, text=True).stdout
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.system()}")
    print(f"mlxk {json.loads(ours_version)['data']['cli_version']}, MLX-Knife {KNIFE_VERSION}, hf {hf_version}; "
          f"{N_MODELS} models, median of {RUNS} runs (ms)")
    print(f"{'command':<18}{'mlxk':>9}{'MLX-Knife':>11}{'hf':>9}{'mlxk/Knife':>12}{'mlxk/hf':>9}")
    for row in rows:
        m, k, h = med[(row, "mlxk")], med[(row, "mlx-knife")], med[(row, "hf")]
        print(f"{row:<18}{m:>9.0f}{k:>11.0f}{h:>9.0f}{m / k:>11.2f}x{m / h:>8.2f}x")


if __name__ == "__main__":
    main()
