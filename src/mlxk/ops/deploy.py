"""``mlxk deploy`` operations: each returns an Envelope (command ``deploy``) or raises MlxkError.

The CLI only parses and renders. Every check runs before anything is installed or
started; each command touches the named deployment's folder (and its backend's service
file) only. JSON answers hold no absolute paths: folders are named relative to the root.
"""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

from mlxk.contract import Envelope, MlxkError
from mlxk.deploy import backends, config, launch, store
from mlxk.deploy.store import Deployment

COMMAND = "deploy"
LOG_TAIL = 10


def _ok(action: str, **data: Any) -> Envelope:
    return Envelope.success(COMMAND, {"action": action, **data})


def _model_label(spec: Any) -> Any:
    """A model for JSON answers: a folder by its name (no absolute paths), anything else as written."""
    from mlxk.store.names import is_path_spec

    return Path(spec).name if isinstance(spec, str) and is_path_spec(spec) else spec


# --- create ------------------------------------------------------------------

def _free_deploy_port(root: Path, start: int = 8000) -> int:
    used = set()
    for dep in store.all_deployments(root):
        raw = store.read_json(dep.config_path) or {}
        server = raw.get("server") if isinstance(raw.get("server"), dict) else {}
        used.add(server.get("port", 8000))
    port = start
    while port in used:
        port += 1
    return port


def create(root: Path, name: str, model: str, *, port: int | None = None, host: str | None = None,
           display_name: str | None = None, parameters: dict | None = None, kv_cache: dict | None = None,
           server: dict | None = None, force: bool = False) -> Envelope:
    """Write ``<root>/<name>/config.json`` after the same checks ``install`` makes."""
    from mlxk.store.names import is_path_spec

    dep = Deployment(root, store.check_name(name))
    if dep.exists() and not force:
        raise MlxkError("ValidationError", f"The deployment '{name}' exists already (--force replaces its config)",
                        field="name")
    if dep.install_record() and force:
        raise MlxkError("ValidationError", f"The deployment '{name}' is installed: uninstall it before replacing "
                        "its config", field="name")
    if is_path_spec(model):  # typed on this command line: relative to here, not to the project folder
        model = str(Path(model).expanduser().resolve())
    raw: dict[str, Any] = {"name": name, "model_path": model}
    if display_name:
        raw["display_name"] = display_name
    raw["parameters"] = {k: v for k, v in (parameters or {}).items() if v is not None}
    if kv_cache and kv_cache.get("bits") is not None:
        raw["kv_cache"] = {k: v for k, v in kv_cache.items() if v is not None}
    srv = {k: v for k, v in (server or {}).items() if v not in (None, [], False)}
    srv["host"] = host or "127.0.0.1"
    srv["port"] = port if port is not None else _free_deploy_port(root)
    raw["server"] = srv
    cfg = config.parse(raw, f"{name}/config.json")
    kind = config.check(cfg, dep, allow_remote_code=True)
    dep.logs.mkdir(parents=True, exist_ok=True)
    store.write_json(dep.config_path, config.to_json(cfg))
    return _ok("create", name=name, folder=name, model=_model_label(cfg.model_path), model_source=kind,
               host=cfg.server.host, port=cfg.server.port,
               message=f"Created deployment '{name}' ({name}/config.json)")


# --- list / show ---------------------------------------------------------------

def _summary(dep: Deployment) -> dict[str, Any]:
    raw = store.read_json(dep.config_path) or {}
    server = raw.get("server") if isinstance(raw.get("server"), dict) else {}
    record = dep.install_record()
    entry = {"name": dep.name, "display_name": raw.get("display_name"), "model": _model_label(raw.get("model_path")),
             "host": server.get("host", "127.0.0.1"), "port": server.get("port", 8000),
             "backend": record.get("backend") if record else None, "state": "not_installed", "config_error": None}
    try:
        config.parse(raw, f"{dep.name}/config.json")
    except MlxkError as err:
        entry["config_error"] = err.message
    if record:
        entry["state"] = _run_state(dep, record).state
    return entry


def list_(root: Path) -> Envelope:
    deps = [_summary(d) for d in store.all_deployments(root)]
    return _ok("list", deployments=deps, count=len(deps))


def show(root: Path, name: str) -> Envelope:
    dep = store.get(root, name)
    raw = dep.raw_config()
    record = dep.install_record() or {}
    problem = None
    try:
        config.load(dep, allow_remote_code=bool(record.get("trust_remote_code")))
    except MlxkError as err:
        problem = err.message
    return _ok("show", name=name, config=raw, valid=problem is None, config_error=problem,
               backend=record.get("backend"), service_files=[Path(f).name for f in record.get("service_files", [])],
               installed_at=record.get("installed_at"), log=f"{name}/logs/{store.LOG_NAME}")


# --- install / uninstall ---------------------------------------------------------

def _spec(dep: Deployment, record: dict, cfg: config.DeploymentConfig) -> backends.LaunchSpec:
    return backends.LaunchSpec(launch.runner_argv(dep), dict(record.get("env") or {}),
                               cfg.display_name or "")


def install(root: Path, name: str, *, backend: str | None = None, start_now: bool = False,
            trust_remote_code: bool = False) -> Envelope:
    dep = store.get(root, name)
    cfg, kind = config.load(dep, allow_remote_code=trust_remote_code)
    record = dep.install_record()
    chosen = backends.choose(backend or (record or {}).get("backend"))
    if record and record.get("backend") != chosen:
        raise MlxkError("ValidationError", f"'{name}' is installed with the {record.get('backend')} backend: "
                        "uninstall it first to change backends", field="backend")
    env = {k: os.environ[k] for k in (*store.CAPTURED_ENV, "PATH") if os.environ.get(k)}
    env["MLXK_DEPLOY_DIR"] = str(root)
    record = {"backend": chosen, "installed_at": time.time(), "env": env,
              "trust_remote_code": bool(trust_remote_code and cfg.server.trust_remote_code)}
    files = backends.module(chosen).install(dep, _spec(dep, record, cfg))
    store.write_json(dep.install_path, {**record, "service_files": files})
    data = {"name": name, "backend": chosen, "service_files": [Path(f).name for f in files], "model_source": kind,
            "message": f"Installed '{name}' ({chosen} backend)"}
    if start_now:
        started = start(root, name)
        data["state"] = started.data["state"]
        data["message"] += "; started"
    return _ok("install", **data)


def uninstall(root: Path, name: str) -> Envelope:
    dep = store.get(root, name)
    record = dep.install_record()
    if not record:
        return _ok("uninstall", name=name, message=f"'{name}' is not installed")
    backends.module(record["backend"]).uninstall(dep)
    for path in (*(Path(f) for f in record.get("service_files", [])), dep.run_path, dep.pid_path, dep.install_path):
        path.unlink(missing_ok=True)
    return _ok("uninstall", name=name, backend=record["backend"], message=f"Uninstalled '{name}'")


# --- start / stop / restart --------------------------------------------------------

def _installed(root: Path, name: str) -> tuple[Deployment, dict]:
    dep = store.get(root, name)
    record = dep.install_record()
    if not record:
        raise MlxkError("ValidationError", f"'{name}' is not installed: run 'mlxk deploy install {name}' first",
                        field="name")
    return dep, record


def _port_taken(host: str, port: int) -> bool:
    bind = "0.0.0.0" if host in ("0.0.0.0", "localhost") else host.strip("[]")
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((bind, port))
        except OSError:
            return True
    return False


def _preflight(dep: Deployment, record: dict) -> config.DeploymentConfig:
    cfg, _ = config.load(dep, allow_remote_code=bool(record.get("trust_remote_code")))
    if record["backend"] == "process" and cfg.server.api_key_env and not os.environ.get(cfg.server.api_key_env):
        raise MlxkError("ValidationError", f"{dep.name}/config.json: server.api_key_env: the variable "
                        f"{cfg.server.api_key_env} is not set", field="server.api_key_env")
    if _port_taken(cfg.server.host, cfg.server.port):
        raise MlxkError("ValidationError", f"{dep.name}/config.json: server.port: port {cfg.server.port} is in "
                        "use by another program", field="server.port")
    return cfg


def _mark(dep: Deployment, record: dict, desired: str) -> None:
    if record["backend"] != "process":  # the process backend keeps its own run.json
        store.write_json(dep.run_path, {"desired": desired, f"{'started' if desired == 'running' else 'stopped'}_at":
                                        time.time()})


def start(root: Path, name: str) -> Envelope:
    dep, record = _installed(root, name)
    before = _run_state(dep, record)
    if before.state == "running":
        return _ok("start", name=name, state="running", pid=before.pid, message=f"'{name}' is already running")
    cfg = _preflight(dep, record)
    backends.module(record["backend"]).start(dep, _spec(dep, record, cfg))
    _mark(dep, record, "running")
    now = _run_state(dep, record)
    return _ok("start", name=name, state=now.state, pid=now.pid, port=cfg.server.port,
               message=f"Started '{name}' on port {cfg.server.port} (mlxk deploy watch {name} follows the loading)")


def stop(root: Path, name: str) -> Envelope:
    dep, record = _installed(root, name)
    backends.module(record["backend"]).stop(dep)
    _mark(dep, record, "stopped")
    return _ok("stop", name=name, state=_run_state(dep, record).state, message=f"Stopped '{name}'")


def restart(root: Path, name: str) -> Envelope:
    dep, record = _installed(root, name)
    mod = backends.module(record["backend"])
    mod.stop(dep)
    cfg = _preflight(dep, record)
    mod.start(dep, _spec(dep, record, cfg))
    _mark(dep, record, "running")
    now = _run_state(dep, record)
    return _ok("restart", name=name, state=now.state, pid=now.pid, message=f"Restarted '{name}'")


# --- status / logs / watch -----------------------------------------------------------

def _run_state(dep: Deployment, record: dict) -> backends.RunState:
    return backends.module(record["backend"]).state(dep)


def probe_health(url: str, timeout: float = 2.0) -> dict | None:
    """The server's own /health body (200 or 503), or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            body = resp.read()
    except urllib.error.HTTPError as exc:
        body = exc.read()
    except (OSError, ValueError):
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _last_error(lines: list[str]) -> str | None:
    """The line of the log that says why it stopped: the runner's, the supervisor's or the server's error."""
    from mlxk.deploy.runner import ERROR_PREFIX

    for line in reversed(lines):
        if line.startswith(ERROR_PREFIX):
            return line[len(ERROR_PREFIX):]
    for line in reversed(lines):
        if " ERROR " in line or line.startswith(("Error", "mlxk serve:")) or "Error:" in line:
            return line.strip(" |")
    return None


def status(root: Path, name: str) -> Envelope:
    dep = store.get(root, name)
    return _ok("status", **_status(dep))


def _status(dep: Deployment) -> dict[str, Any]:
    raw = dep.raw_config()
    server = raw.get("server") if isinstance(raw.get("server"), dict) else {}
    record = dep.install_record()
    tail = dep.log_tail(LOG_TAIL)
    data: dict[str, Any] = {
        "name": dep.name, "state": "not_installed", "backend": record.get("backend") if record else None,
        "pid": None, "host": server.get("host", "127.0.0.1"), "port": server.get("port", 8000),
        "model": _model_label(raw.get("model_path")), "uptime": None, "health": None, "ready": False, "reason": None,
        "log": f"{dep.name}/logs/{store.LOG_NAME}", "log_tail": tail,
    }
    if not record:
        return data
    rs = _run_state(dep, record)
    data.update(state=rs.state, pid=rs.pid, uptime=round(rs.uptime, 1) if rs.uptime is not None else None)
    if rs.state == "running":
        try:
            cfg = config.parse(raw)
            data["health"] = probe_health(launch.health_url(cfg))
        except MlxkError:
            pass
        health = data["health"] or {}
        data["ready"] = health.get("status") == "ok"
        if health.get("status") == "failed":  # alive, but its model did not load
            data.update(state="failed", reason=health.get("error") or "the model failed to load")
        if data["uptime"] is None and isinstance(health.get("uptime"), (int, float)):
            data["uptime"] = health["uptime"]
    if data["state"] == "failed" and rs.state == "failed":
        why = _last_error(dep.log_tail(200))
        data["reason"] = f"{rs.reason}: {why}" if why else rs.reason
    return data


def logs(root: Path, name: str, lines: int = 50) -> Envelope:
    dep = store.get(root, name)
    if lines < 0:
        raise MlxkError("ValidationError", "--lines must be 0 or more", field="lines")
    return _ok("logs", name=name, log=f"{name}/logs/{store.LOG_NAME}", lines=dep.log_tail(lines))


def follow(root: Path, name: str, emit: Callable[[str], None], stop: Callable[[], bool] | None = None,
           backlog: int = 0) -> None:
    """Hand the last ``backlog`` lines, then each new log line, to ``emit`` until ``stop()`` is true
    (checked after each read; the CLI's ``--follow`` ends with Ctrl-C)."""
    dep = store.get(root, name)
    for line in dep.log_tail(backlog):
        emit(line)
    pos = dep.log_path.stat().st_size if dep.log_path.exists() else 0
    buf = b""
    while True:
        try:
            with open(dep.log_path, "rb") as fh:
                if fh.seek(0, os.SEEK_END) < pos:
                    pos = 0  # truncated
                fh.seek(pos)
                chunk = fh.read()
                pos = fh.tell()
        except OSError:
            chunk = b""
        buf += chunk
        *complete, buf = buf.split(b"\n")
        for raw in complete:
            text = raw.decode("utf-8", "replace").rsplit("\r", 1)[-1]
            if text.strip():
                emit(text)
        if stop is not None and stop():
            return
        if not chunk:
            time.sleep(0.25)


def watch(root: Path, name: str, emit: Callable[[str], None] | None = None, timeout: float = 1800) -> Envelope:
    """Follow the download and loading until the server is healthy (success) or failed (error)."""
    dep = store.get(root, name)
    if not dep.install_record():
        raise MlxkError("ValidationError", f"'{name}' is not installed", field="name")
    deadline = time.monotonic() + timeout
    outcome: dict[str, Any] = {}

    def done() -> bool:
        now = _status(dep)
        if now["state"] == "running" and now["ready"]:
            outcome["ok"] = now
        elif now["state"] in ("failed", "stopped", "installed"):
            outcome["bad"] = now
        elif time.monotonic() > deadline:
            outcome["timeout"] = now
        return bool(outcome)

    follow(root, name, emit or (lambda _line: None), done, backlog=LOG_TAIL)
    if "ok" in outcome:
        return _ok("watch", **outcome["ok"], message=f"'{name}' is running and healthy")
    now = outcome.get("bad") or outcome.get("timeout") or {}
    if "timeout" in outcome:
        raise MlxkError("OperationError", f"'{name}' is not healthy after {timeout:.0f}s", data=None)
    state = now.get("state")
    text = f"'{name}' failed: {now.get('reason')}" if state == "failed" else f"'{name}' is {state}, not running"
    raise MlxkError("deployment_failed", text, state=state)


# --- the *-all commands ---------------------------------------------------------------

def for_all(root: Path, action: str, op: Callable[[Path, str], Envelope], validate_first: bool = False,
            trust_remote_code: bool = False) -> Envelope:
    """One operation over every deployment; the others still run when one fails."""
    deps = store.all_deployments(root)
    if validate_first:  # install-all: every config is checked before anything is installed
        for dep in deps:
            config.load(dep, allow_remote_code=trust_remote_code)
    results = []
    for dep in deps:
        try:
            env = op(root, dep.name)
            results.append({"name": dep.name, "ok": True, "message": env.data.get("message"),
                            "state": env.data.get("state")})
        except MlxkError as err:
            results.append({"name": dep.name, "ok": False, "message": err.message, "state": None})
    failed = [r["name"] for r in results if not r["ok"]]
    if failed:
        raise MlxkError("OperationError", f"{action} failed for {', '.join(failed)}",
                        data={"action": action, "results": results})
    return _ok(action, results=results, count=len(results), message=f"{action}: {len(results)} deployment(s)")
