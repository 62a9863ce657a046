"""The real agents through ``mlxk launch`` on the demo model (not in CI: needs Node and npm).

Installs Claude Code, Codex and gemini-cli from npm into a temporary prefix (or uses the one
``--prefix`` names), runs each once non-interactively against the model (with a
--context-length override: the agents' system prompts exceed SmolLM2's 8k) and prints, per
agent: exit code, requests the server saw, seconds, and whether the agent printed the model's
answer (exit 0 and something on stdout). Usage:

    python bench/agents_e2e.py --model mlxk-demo/SmolLM2-135M-Instruct [--context-length 32768]

The bench starts one ``mlxk serve`` itself (launch reuses it, as it does any server already
serving the model on the port) so that it can give it ``--default-max-tokens``: Codex and
gemini-cli set no output budget, and a small model rambles up to the 4096-token cap at a few
tokens a second on a CPU; Claude Code gets the same budget in CLAUDE_CODE_MAX_OUTPUT_TOKENS.
Its log is kept next to the agents' output (paths printed); its disk prefix cache lives in
MLXK_CACHE_DIR, so a second run finds the agents' system prompts there.

Each agent runs in an empty temporary folder (its tools act there, never in this checkout),
in its own session: past ``--timeout`` (or the run's ``--total-timeout``) launch gets SIGTERM,
which it passes to the agent; anything left of that session is killed a minute later.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PACKAGES = {"claude": "@anthropic-ai/claude-code", "codex": "@openai/codex", "gemini": "@google/gemini-cli"}
PROMPT = "Reply with the single word: hello"
ARGS = {"claude": ["-p", PROMPT], "codex": ["exec", "--skip-git-repo-check", PROMPT], "gemini": ["-p", PROMPT]}


def requests_seen(port: int) -> int:
    """mlxk_requests_total of a running server (0 when none answers): generations the engine took."""
    import httpx2 as httpx

    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return 0
    return int(next((ln.split()[1] for ln in text.splitlines() if ln.startswith("mlxk_requests_total ")), "0"))


def install(prefix: Path) -> None:
    if all((prefix / "bin" / agent).exists() for agent in PACKAGES):
        return
    subprocess.run(["npm", "install", "-g", "--prefix", str(prefix), *PACKAGES.values()], check=True)


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to launch (it stops the agent, then its server), then SIGKILL to what is left of its session."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def start_server(a: argparse.Namespace, env: dict, log: Path) -> subprocess.Popen:
    import httpx2 as httpx

    cmd = [sys.executable, "-m", "mlxk", "serve", "--model", a.model, "--port", str(a.port), "--alias",
           f"*={a.model}", "--context-length", str(a.context_length), "--default-max-tokens", str(a.max_tokens)]
    with open(log, "ab") as f:
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)
    while proc.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{a.port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"mlxk serve exited {proc.returncode}: see {log}")


def run_agent(agent: str, a: argparse.Namespace, env: dict, out_dir: Path, budget: float) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix=f"{agent}-work-", dir=out_dir))
    out, err = (out_dir / f"{agent}.{name}" for name in ("stdout", "stderr"))
    cmd = [sys.executable, "-m", "mlxk", "launch", agent, "--model", a.model, "--port", str(a.port), "--",
           *ARGS[agent]]
    start, before = time.monotonic(), requests_seen(a.port)  # one server for all the agents
    with open(out, "w") as o, open(err, "w") as e:
        proc = subprocess.Popen(cmd, env=env, cwd=workdir, stdin=subprocess.DEVNULL, stdout=o, stderr=e,
                                start_new_session=True)
        timed_out = False
        try:
            while proc.poll() is None:
                if time.monotonic() - start > budget:
                    timed_out = True
                    break
                time.sleep(1)
        finally:
            stop(proc)
    seen = requests_seen(a.port) - before
    answer = out.read_text(errors="replace").strip()
    return {"exit": proc.returncode, "requests": seen, "seconds": time.monotonic() - start, "timed_out": timed_out,
            "answered": proc.returncode == 0 and bool(answer), "answer": answer,
            "stderr": err.read_text(errors="replace").strip(), "paths": (out, err)}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--context-length", type=int, default=32768)
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--max-tokens", type=int, default=48, help="the server's --default-max-tokens (see above)")
    p.add_argument("--timeout", type=float, default=900, help="seconds per agent")
    p.add_argument("--total-timeout", type=float, default=1500, help="seconds for the whole run")
    p.add_argument("--prefix", type=Path, help="npm prefix holding the CLIs (installed there when missing)")
    p.add_argument("--agents", default=",".join(PACKAGES), help="comma-separated subset of claude,codex,gemini")
    a = p.parse_args()
    begin = time.monotonic()
    prefix = a.prefix or Path(tempfile.mkdtemp(prefix="mlxk-agents-"))
    install(prefix)
    out_dir = Path(tempfile.mkdtemp(prefix="mlxk-agents-run-"))
    env = {**os.environ, "PATH": f"{prefix / 'bin'}{os.pathsep}{os.environ['PATH']}",
           "MLXK_API_KEY": "mlxk-" + secrets.token_hex(16), "CLAUDE_CODE_MAX_OUTPUT_TOKENS": str(a.max_tokens)}
    mlxk = subprocess.run([sys.executable, "-m", "mlxk", "--version"], capture_output=True, text=True).stdout
    mlxk = (mlxk.splitlines() or ["mlxk ?"])[0]
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    print(f"{mlxk}; node {node}; output in {out_dir}", flush=True)
    server = start_server(a, env, out_dir / "serve.log")
    try:
        run_all(a, env, out_dir, begin)
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    return 0


def run_all(a: argparse.Namespace, env: dict, out_dir: Path, begin: float) -> None:
    for agent in a.agents.split(","):
        version = subprocess.run([agent, "--version"], env=env, capture_output=True, text=True).stdout.strip()
        left = a.total_timeout - (time.monotonic() - begin)
        if left < 30:
            print(f"{agent} ({PACKAGES[agent]} {version}): not run, the run's time is spent")
            continue
        r = run_agent(agent, a, env, out_dir, min(a.timeout, left))
        print(f"{agent} ({PACKAGES[agent]} {version}): exit {r['exit']}{' (timed out)' if r['timed_out'] else ''}, "
              f"requests {r['requests']}, {r['seconds']:.0f}s, printed an answer: {r['answered']}", flush=True)
        last = (r["answer"] or r["stderr"] or "(none)").splitlines()[-1][:300]
        print(f"   {'answer' if r['answer'] else 'last output'}: {last}")
        print("   files:", *(str(x) for x in r["paths"]), flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
