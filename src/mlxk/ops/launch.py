"""``mlxk launch claude|codex|gemini``: a coding agent against a local ``mlxk serve``.

Starts ``mlxk serve`` for the model (or reuses one already serving it on the port), waits
until it is healthy, runs the agent's CLI with the environment that points it at the server,
and stops the server it started when the agent exits; the agent's exit code is launch's.
The user's own agent config is never touched: Codex gets a temporary ``CODEX_HOME`` with a
``config.toml``, gemini-cli a temporary ``HOME`` with its settings; both are removed after.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from mlxk.contract import MlxkError


@dataclass(frozen=True)
class Agent:
    command: str
    package: str  # npm
    title: str


AGENTS = {
    "claude": Agent("claude", "@anthropic-ai/claude-code", "Claude Code"),
    "codex": Agent("codex", "@openai/codex", "Codex"),
    "gemini": Agent("gemini", "@google/gemini-cli", "gemini-cli"),
}
PROVIDER_KEY_ENV = "MLXK_LAUNCH_KEY"  # Codex reads the key from the variable its provider names
MAX_OUTPUT_TOKENS = 4096  # serve's --max-tokens default: Claude Code otherwise asks for 32000 and gets a 400
# A local prefill of an agent's ~20k-token prompt can take minutes on a CPU: Claude Code's cloud-tuned
# waits (5 min without a streamed event, pings not counted; 10 min a request) would abort and retry it.
SLOW_PREFILL_MS = str(3_600_000)
AGENT_GRACE_S = 10.0  # after SIGTERM, before the agent is killed


@dataclass
class Plan:
    """What the agent is run with: environment additions, leading arguments, files to write."""

    env: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)  # path relative to the temporary home -> text
    defaults: dict[str, str] = field(default_factory=dict)  # environment the user's own values override
    home_var: str | None = None  # the variable pointing at the temporary home (CODEX_HOME, HOME)


def plan_for(agent: str, base: str, key: str, model: str, context: int | None) -> Plan:
    if agent == "claude":
        env = {"ANTHROPIC_BASE_URL": base, "ANTHROPIC_AUTH_TOKEN": key, "ANTHROPIC_MODEL": model,
               "ANTHROPIC_DEFAULT_OPUS_MODEL": model, "ANTHROPIC_DEFAULT_SONNET_MODEL": model,
               "ANTHROPIC_DEFAULT_HAIKU_MODEL": model, "CLAUDE_CODE_SUBAGENT_MODEL": model,
               "DISABLE_TELEMETRY": "1", "DISABLE_ERROR_REPORTING": "1",
               "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"}
        if context:  # an unknown model name is assumed to have a 1M window otherwise
            env.update({"CLAUDE_CODE_MAX_CONTEXT_TOKENS": str(context),
                        "CLAUDE_CODE_AUTO_COMPACT_WINDOW": str(context), "CLAUDE_CODE_DISABLE_1M_CONTEXT": "1"})
        fitted = {"CLAUDE_CODE_MAX_OUTPUT_TOKENS": str(MAX_OUTPUT_TOKENS),
                  "CLAUDE_STREAM_IDLE_TIMEOUT_MS": SLOW_PREFILL_MS, "API_TIMEOUT_MS": SLOW_PREFILL_MS}
        return Plan(env=env, defaults=fitted)
    if agent == "codex":
        # Top-level settings in the temporary CODEX_HOME, no profile: Codex 0.171 refuses
        # `--profile` with a [profiles.*] table in config.toml (it wants <name>.config.toml).
        # stream_idle_timeout_ms: Codex reconnects (5 times, each a new prefill) after 5 minutes without an event
        provider = (f'{{name="mlxk", base_url="{base}/v1", wire_api="responses", env_key="{PROVIDER_KEY_ENV}", '
                    f'stream_idle_timeout_ms={SLOW_PREFILL_MS}}}')
        window = f"model_context_window = {context}\n" if context else ""
        config = (f'model = {json.dumps(model)}\nmodel_provider = "mlxk"\n{window}\n[model_providers.mlxk]\n'
                  f'name = "mlxk"\nbase_url = "{base}/v1"\nwire_api = "responses"\nenv_key = "{PROVIDER_KEY_ENV}"\n'
                  f'stream_idle_timeout_ms = {SLOW_PREFILL_MS}\n')
        return Plan(env={PROVIDER_KEY_ENV: key}, args=["-c", f"model_providers.mlxk={provider}"],
                    files={"config.toml": config}, home_var="CODEX_HOME")
    if agent == "gemini":
        settings = {"security": {"auth": {"selectedType": "gemini-api-key"}}, "model": {"name": model},
                    "privacy": {"usageStatisticsEnabled": False}, "telemetry": {"enabled": False}}
        return Plan(env={"GOOGLE_GEMINI_BASE_URL": base, "GEMINI_API_KEY": key, "GEMINI_MODEL": model,
                         "GEMINI_CLI_TRUST_WORKSPACE": "true"},
                    files={".gemini/settings.json": json.dumps(settings, indent=2)}, home_var="HOME")
    raise MlxkError("ValidationError", f"Unknown agent '{agent}': one of {', '.join(AGENTS)}", exit_code=2)


def find_agent(agent: str) -> str:
    spec = AGENTS[agent]
    found = shutil.which(spec.command)
    if found is None:
        raise MlxkError("NotFound", f"{spec.title} ('{spec.command}') is not on PATH: install it with "
                                    f"'npm install -g {spec.package}'", exit_code=2)
    return found


def _health(base: str) -> dict | None:
    import httpx2 as httpx

    try:
        r = httpx.get(base + "/health", timeout=2)
    except httpx.HTTPError:
        return None
    try:
        return {"code": r.status_code, **r.json()}
    except ValueError:
        return {"code": r.status_code}


class Server:
    """The ``mlxk serve`` launch runs on: reused when the port already serves the model.

    Its log goes to a file (``log``, or a temporary one removed after): a pipe nobody reads
    while the agent runs would fill and block the server mid-session.
    """

    def __init__(self, model: str, port: int, context: int | None, key: str | None, log: str | None = None):
        self.model, self.port, self.context = model, port, context
        self.base = f"http://127.0.0.1:{port}"
        self.key = key
        self.proc: subprocess.Popen | None = None
        self.name = model
        self.log, self.keep_log = log, log is not None

    def start(self, timeout: float = 600) -> "Server":
        from mlxk.server.model_access import resolve_target

        from mlxk.engine.requests import EngineError

        try:
            self.name = resolve_target(self.model).name
        except EngineError as err:
            raise MlxkError("NotFound", err.message, exit_code=2) from None
        running = _health(self.base)
        if running is not None:
            if running.get("model") != self.name:
                raise MlxkError("ValidationError", f"Port {self.port} is in use by something that is not serving "
                                                   f"{self.name}: pick another with --port", exit_code=2)
            return self  # reused: its key (MLXK_API_KEY, if it has one) is the caller's to give
        self.key = self.key or "mlxk-" + secrets.token_hex(16)  # ours only: no other local process can use it
        cmd = [sys.executable, "-m", "mlxk", "serve", "--model", self.model, "--port", str(self.port),
               "--alias", f"*={self.model}"]
        if self.context:
            cmd += ["--context-length", str(self.context)]
        env = {**os.environ, "MLXK_API_KEY": self.key}
        if self.log is None:
            fd, self.log = tempfile.mkstemp(prefix="mlxk-launch-serve-", suffix=".log")
            os.close(fd)
        with open(self.log, "ab") as log:  # own session: the terminal's Ctrl-C is the agent's, not the server's
            self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = Path(self.log).read_bytes()[-2000:].decode(errors="replace")
                self._drop_log()
                raise MlxkError("ServerError", f"mlxk serve exited {self.proc.returncode}: {err.strip()}")
            state = _health(self.base)
            if state is not None and state.get("code") == 200:
                return self
            time.sleep(0.3)
        self.stop()
        raise MlxkError("ServerError", f"mlxk serve did not become healthy in {timeout:.0f}s")

    def context_length(self) -> int | None:
        """The served model's window, as /v1/models reports it (the --context-length override included)."""
        import httpx2 as httpx

        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        try:
            data = httpx.get(self.base + "/v1/models", headers=headers, timeout=30).json()["data"]
        except (httpx.HTTPError, ValueError, KeyError):
            return self.context
        return next((m.get("context_length") for m in data if m.get("id") == self.name), self.context)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(2)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._drop_log()

    def _drop_log(self) -> None:
        if self.log and not self.keep_log:
            Path(self.log).unlink(missing_ok=True)


def print_env(agent: str, model: str, port: int, context: int | None, extra: list[str]) -> str:
    """What launch would set, as shell lines (nothing is started)."""
    import shlex

    key = os.environ.get("MLXK_API_KEY") or "<a fresh key per launch>"
    plan = plan_for(agent, f"http://127.0.0.1:{port}", key, model, context)
    lines = [f"export {k}={shlex.quote(v)}" for k, v in plan.env.items()]
    lines += [f'export {k}="${{{k}:-{v}}}"' for k, v in plan.defaults.items()]
    if plan.home_var:
        lines.append(f"export {plan.home_var}=<a temporary folder, removed after>")
    for path, text in plan.files.items():
        lines.append(f"# {plan.home_var}/{path}:\n" + "\n".join("#   " + ln for ln in text.splitlines()))
    lines.append(shlex.join([AGENTS[agent].command, *plan.args, *extra]))
    return "\n".join(lines)


def run_agent(cmd: list[str], env: dict[str, str]) -> int:
    """The agent's exit code. Ctrl-C belongs to the agent (it cancels a turn in all three), so
    launch ignores SIGINT while the agent runs; SIGTERM is passed on to the agent, which is
    killed if it is still there AGENT_GRACE_S later (gemini-cli waits on its request), so that
    launch stops its server in time rather than being killed itself and leave it orphaned."""
    proc = subprocess.Popen(cmd, env=env)
    termed: list[float] = []

    def on_term(signum, frame):
        termed.append(time.monotonic())
        proc.send_signal(signal.SIGTERM)

    old = {signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
           signal.SIGTERM: signal.signal(signal.SIGTERM, on_term)}
    try:
        while proc.poll() is None:
            if termed and time.monotonic() - termed[0] > AGENT_GRACE_S:
                proc.kill()
            time.sleep(0.1)
        return proc.returncode if proc.returncode >= 0 else 128 - proc.returncode  # the shell's 128+N
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def launch(agent: str, model: str, port: int, context: int | None, extra: list[str],
           server_log: str | None = None) -> int:
    """Run the agent against the server; its exit code is returned. ``server_log``: where the
    log of a server launch starts is kept (appended to)."""
    exe = find_agent(agent)
    server = Server(model, port, context, os.environ.get("MLXK_API_KEY"), server_log)
    home = tempfile.mkdtemp(prefix=f"mlxk-launch-{agent}-")
    previous = signal.signal(signal.SIGTERM, _interrupted)  # while the server starts: it is stopped too
    try:
        server.start()
        window = server.context_length()
        plan = plan_for(agent, server.base, server.key or "mlxk", server.name, window)
        for rel, text in plan.files.items():
            path = Path(home) / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        env = {**plan.defaults, **os.environ, **plan.env}
        env.pop("MLXK_API_KEY", None) if server.proc is not None else None
        if plan.home_var:
            env[plan.home_var] = home
        return run_agent([exe, *plan.args, *extra], env)
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)
        signal.signal(signal.SIGTERM, previous)


def _interrupted(signum, frame):
    raise KeyboardInterrupt
