"""The real agents through ``mlxk launch`` on the demo model (not in CI: needs Node and npm).

Installs Claude Code, Codex and gemini-cli from npm into a temporary prefix, runs each once
non-interactively against the model (with a --context-length override: the agents' system
prompts exceed SmolLM2's 8k) and prints, per agent: exit code, requests the server saw,
seconds, and whether the agent printed the model's answer. Usage:

    python bench/agents_e2e.py --model mlxk-demo/SmolLM2-135M-Instruct [--context-length 32768]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PACKAGES = {"claude": "@anthropic-ai/claude-code", "codex": "@openai/codex", "gemini": "@google/gemini-cli"}
PROMPT = "Reply with the single word: hello"
ARGS = {"claude": ["-p", PROMPT], "codex": ["exec", "--skip-git-repo-check", PROMPT], "gemini": ["-p", PROMPT]}


def requests_seen(port: int) -> int:
    """mlxk_requests_total of a running server (0 when none answers)."""
    import httpx2 as httpx

    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return 0
    return int(next((ln.split()[1] for ln in text.splitlines() if ln.startswith("mlxk_requests_total ")), "0"))


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--context-length", type=int, default=32768)
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--timeout", type=float, default=900)
    a = p.parse_args()
    prefix = Path(tempfile.mkdtemp(prefix="mlxk-agents-"))
    subprocess.run(["npm", "install", "-g", "--prefix", str(prefix), *PACKAGES.values()], check=True)
    env = {**os.environ, "PATH": f"{prefix / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    for agent, package in PACKAGES.items():
        version = subprocess.run([agent, "--version"], env=env, capture_output=True, text=True).stdout.strip()
        metrics_log = prefix / f"{agent}.out"
        start = time.monotonic()
        with open(metrics_log, "w") as out:
            proc = subprocess.Popen([sys.executable, "-m", "mlxk", "launch", agent, "--model", a.model, "--port",
                                     str(a.port), "--context-length", str(a.context_length), "--", *ARGS[agent]],
                                    env=env, stdout=out, stderr=subprocess.STDOUT)
            seen = 0
            while proc.poll() is None and time.monotonic() - start < a.timeout:
                seen = max(seen, requests_seen(a.port))
                time.sleep(1)
            if proc.poll() is None:
                proc.terminate()
                proc.wait(30)
        text = metrics_log.read_text(errors="replace")
        print(f"{agent} ({package} {version}): exit {proc.returncode}, requests {seen}, "
              f"{time.monotonic() - start:.0f}s, printed an answer: {bool(text.strip())}")
        print("   last output:", text.strip().splitlines()[-1][:200] if text.strip() else "(none)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
