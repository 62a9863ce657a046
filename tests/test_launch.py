"""``mlxk launch``: stand-in agents on PATH record what they were given and call the real server
with the official SDK; launch's exit code is theirs and the server it started stops with them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.serve_fixture import free_port

httpx = pytest.importorskip("httpx2")

STAND_IN = r'''#!PYTHON
import json, os, sys
from pathlib import Path
agent = Path(sys.argv[0]).name
record = {"agent": agent, "args": sys.argv[1:], "env": {k: v for k, v in os.environ.items()
          if k.startswith(("ANTHROPIC_", "CLAUDE_", "GEMINI_", "GOOGLE_", "MLXK_", "CODEX_", "DISABLE_", "API_")) or k == "HOME"}}
if agent == "claude":
    import anthropic
    c = anthropic.Anthropic(base_url=os.environ["ANTHROPIC_BASE_URL"], auth_token=os.environ["ANTHROPIC_AUTH_TOKEN"],
                            api_key=None, max_retries=0)
    r = c.messages.create(model="claude-haiku-4-5", max_tokens=2, messages=[{"role": "user", "content": "hi"}])
    record["answer"] = r.content[0].text
elif agent == "codex":
    import openai, tomllib
    home = Path(os.environ["CODEX_HOME"])
    config = tomllib.loads((home / "config.toml").read_text())
    record["config"] = config
    provider = config["model_providers"]["mlxk"]
    c = openai.OpenAI(base_url=provider["base_url"], api_key=os.environ[provider["env_key"]], max_retries=0)
    record["answer"] = c.responses.create(model="gpt-5-codex", input="hi", max_output_tokens=2).output_text
else:
    from google import genai
    from google.genai import types
    record["settings"] = json.loads((Path(os.environ["HOME"]) / ".gemini" / "settings.json").read_text())
    c = genai.Client(api_key=os.environ["GEMINI_API_KEY"],
                     http_options=types.HttpOptions(base_url=os.environ["GOOGLE_GEMINI_BASE_URL"], api_version="v1beta"))
    r = c.models.generate_content(model="gemini-3.5-flash-lite", contents="hi",
                                  config=types.GenerateContentConfig(max_output_tokens=2))
    record["answer"] = r.text
Path(os.environ["STAND_IN_RECORD"]).write_text(json.dumps(record))
sys.exit(7)
'''


WAITING = r'''#!PYTHON
import os, signal, sys, time
from pathlib import Path
record = Path(os.environ["STAND_IN_RECORD"])
signal.signal(signal.SIGINT, lambda s, f: record.with_suffix(".sigint").write_text("1"))
signal.signal(signal.SIGTERM, signal.SIG_IGN if os.environ.get("IGNORE_TERM") else lambda s, f: sys.exit(3))
record.write_text(os.environ["ANTHROPIC_BASE_URL"])
while True:
    time.sleep(0.1)
'''


@pytest.fixture
def agents_bin(tmp_path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("claude", "codex", "gemini"):
        path = bin_dir / name
        path.write_text(STAND_IN.replace("PYTHON", sys.executable))
        path.chmod(0o755)
    return bin_dir


def launch(agent: str, model: Path, bin_dir: Path, tmp_path: Path, *extra: str, env: dict | None = None):
    port = free_port()
    record = tmp_path / f"{agent}.json"
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "STAND_IN_RECORD": str(record),
           "HOME": str(tmp_path / "user-home"), **(env or {})}
    (tmp_path / "user-home").mkdir(exist_ok=True)
    r = run_cli("launch", agent, "--model", str(model), "--port", str(port), *extra, env=env, timeout=300)
    with pytest.raises(httpx.HTTPError):  # the server launch started is gone
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
    return r, json.loads(record.read_text())


@pytest.mark.parametrize("agent", ["claude", "codex", "gemini"])
def test_launch_runs_the_agent_against_the_server(agent, serve_model_dir, agents_bin, tmp_path):
    r, rec = launch(agent, serve_model_dir, agents_bin, tmp_path, "--", "-p", "say hi")
    assert r.returncode == 7, r.stderr  # the agent's exit code
    assert rec["args"][-2:] == ["-p", "say hi"] and "answer" in rec
    env = rec["env"]
    if agent == "claude":
        assert env["ANTHROPIC_BASE_URL"].startswith("http://127.0.0.1:") and env["ANTHROPIC_AUTH_TOKEN"]
        model = env["ANTHROPIC_MODEL"]
        assert env["ANTHROPIC_DEFAULT_OPUS_MODEL"] == env["ANTHROPIC_DEFAULT_HAIKU_MODEL"] == model
        assert env["CLAUDE_CODE_SUBAGENT_MODEL"] == model and env["DISABLE_TELEMETRY"] == "1"
        assert env["CLAUDE_CODE_MAX_CONTEXT_TOKENS"] == "8192"  # the model's real window, not 1M
    elif agent == "codex":
        assert rec["args"][:1] == ["-c"] and "wire_api=\"responses\"" in rec["args"][1]
        assert "--profile" not in rec["args"]  # Codex 0.171 refuses a [profiles.*] table with --profile
        assert rec["config"]["model_provider"] == "mlxk" and "profiles" not in rec["config"]
        assert rec["config"]["model_providers"]["mlxk"]["stream_idle_timeout_ms"] >= 3_600_000  # slow prefills
        assert not Path(env["CODEX_HOME"]).exists()  # the temporary home is removed after
    else:
        assert rec["settings"]["security"]["auth"]["selectedType"] == "gemini-api-key"
        assert env["GEMINI_CLI_TRUST_WORKSPACE"] == "true" and env["GOOGLE_GEMINI_BASE_URL"]
        assert env["HOME"] != str(tmp_path / "user-home") and not Path(env["HOME"]).exists()
        assert not (tmp_path / "user-home" / ".gemini").exists()  # the user's own settings untouched


def test_context_length_override_reaches_the_agent(serve_model_dir, agents_bin, tmp_path):
    r, rec = launch("claude", serve_model_dir, agents_bin, tmp_path, "--context-length", "32768")
    assert r.returncode == 7, r.stderr
    assert rec["env"]["CLAUDE_CODE_MAX_CONTEXT_TOKENS"] == "32768"


def test_server_log_is_kept_and_claude_is_fitted_to_a_local_server(serve_model_dir, agents_bin, tmp_path):
    """The server's log goes to a file (a pipe nobody reads would block it mid-session); Claude Code's
    output budget is the server's cap (it asks for 32000 tokens otherwise, and gets a 400); its
    cloud-tuned waits are lengthened for slow local prefills, unless the user set their own."""
    log = tmp_path / "serve.log"
    r, rec = launch("claude", serve_model_dir, agents_bin, tmp_path, "--server-log", str(log),
                    env={"API_TIMEOUT_MS": "42"})
    assert r.returncode == 7, r.stderr
    assert "serving on http://127.0.0.1:" in log.read_text()
    env = rec["env"]
    assert env["CLAUDE_CODE_MAX_OUTPUT_TOKENS"] == "4096"
    assert env["CLAUDE_STREAM_IDLE_TIMEOUT_MS"] == "3600000" and env["API_TIMEOUT_MS"] == "42"


def wait_for(path: Path, proc: subprocess.Popen) -> None:
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)


@pytest.mark.parametrize("agent_ignores_term", [False, True])
def test_ctrl_c_is_the_agents_and_sigterm_stops_agent_then_server(agent_ignores_term, serve_model_dir, tmp_path):
    """Ctrl-C (SIGINT to the terminal's whole process group) cancels a turn in the agent; it must
    neither end launch nor the server. SIGTERM to launch reaches the agent (killed if it stays),
    then the server stops."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "claude").write_text(WAITING.replace("PYTHON", sys.executable))
    (bin_dir / "claude").chmod(0o755)
    record = tmp_path / "claude.txt"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "STAND_IN_RECORD": str(record),
           **({"IGNORE_TERM": "1"} if agent_ignores_term else {})}
    proc = subprocess.Popen([sys.executable, "-m", "mlxk", "launch", "claude", "--model", str(serve_model_dir),
                             "--port", str(free_port())], env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(record, proc)
        base = record.read_text()
        os.killpg(proc.pid, signal.SIGINT)
        wait_for(record.with_suffix(".sigint"), proc)
        for _ in range(10):  # the server ignores it: still healthy, not shutting down
            assert httpx.get(base + "/health", timeout=5).status_code == 200
            time.sleep(0.2)
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(120) == (128 + signal.SIGKILL if agent_ignores_term else 3)  # the agent's exit code
        with pytest.raises(httpx.HTTPError):
            httpx.get(base + "/health", timeout=2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_missing_cli_names_its_npm_package(tmp_path):
    r = run_cli("launch", "codex", "--model", "x", env={"PATH": str(tmp_path)})
    assert r.returncode == 2 and "npm install -g @openai/codex" in r.stderr + r.stdout


def test_print_env_starts_nothing(tmp_path):
    r = run_cli("launch", "claude", "--model", "some/model", "--print-env", "--", "-p", "hi")
    assert r.returncode == 0
    assert "export ANTHROPIC_BASE_URL=http://127.0.0.1:8000" in r.stdout
    assert r.stdout.strip().endswith("claude -p hi")
