"""systemd user services (Linux with a user manager): one unit per deployment.

``mlxk-<name>.service`` in ``$XDG_CONFIG_HOME/systemd/user/``: ``Restart=on-failure``,
output appended to the deployment's ``logs/server.log``, ``KillMode=mixed`` (SIGTERM to
the serve supervisor only, which stops its server gracefully; SIGKILL to whatever is left
after the timeout). ``install`` writes and enables the unit (it starts with the user's
session); ``start`` and ``stop`` are ``systemctl --user`` calls.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from pathlib import Path

from mlxk.deploy.backends import LaunchSpec, RunState, call
from mlxk.deploy.store import Deployment, read_json


def unit_name(dep: Deployment) -> str:
    return f"mlxk-{dep.name}.service"


def unit_dir() -> Path:
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(config, "systemd", "user")


def unit_path(dep: Deployment) -> Path:
    return unit_dir() / unit_name(dep)


def unavailable_reason() -> str:
    if not sys.platform.startswith("linux"):
        return "systemd runs on Linux only"
    if not shutil.which("systemctl"):
        return "no systemctl on PATH"
    return "no systemd user manager answers 'systemctl --user' (e.g. a container, or no login session)"


def available() -> bool:
    if not sys.platform.startswith("linux") or not shutil.which("systemctl"):
        return False
    try:
        return call(["systemctl", "--user", "show-environment"], check=False, timeout=5).returncode == 0
    except Exception:
        return False


def _quote(word: str, dollars: bool = True) -> str:
    """One ExecStart word (``$`` doubled: ExecStart expands variables) or Environment assignment
    (``dollars=False``: Environment= does not): specifiers escaped, quoted when needed."""
    word = word.replace("%", "%%")
    if re.search(r"[\s\"'\\$;]", word) or not word:
        word = word.replace("\\", "\\\\").replace('"', '\\"')
        word = '"' + (word.replace("$", "$$") if dollars else word) + '"'
    return word


def _path(path: Path) -> str:
    """A path setting (WorkingDirectory=, append:) takes the rest of the line: specifiers escaped, no quotes."""
    return str(path).replace("%", "%%")


def render_unit(dep: Deployment, spec: LaunchSpec) -> str:
    log = _path(dep.log_path)
    about = " ".join(f"{dep.name} ({spec.description})".split()) if spec.description else dep.name
    lines = [
        "# Written by 'mlxk deploy install'; 'mlxk deploy uninstall' removes it.",
        "[Unit]",
        "Description=mlxk deployment " + about.replace("%", "%%"),
        "",
        "[Service]",
        "Type=simple",
        "ExecStart=" + " ".join(_quote(w) for w in spec.argv),
        "WorkingDirectory=" + _path(dep.folder),
    ]
    lines += ["Environment=" + _quote(f"{k}={v}", dollars=False) for k, v in sorted(spec.env.items())]
    lines += [
        f"StandardOutput=append:{log}",
        f"StandardError=append:{log}",
        "Restart=on-failure",
        "RestartSec=5",
        "KillMode=mixed",
        "TimeoutStopSec=20",
        "",
        "[Install]",
        "WantedBy=default.target",
        "",
    ]
    return "\n".join(lines)


def install(dep: Deployment, spec: LaunchSpec) -> list[str]:
    from mlxk.store.register import atomic_write

    path = unit_path(dep)
    path.parent.mkdir(parents=True, exist_ok=True)
    dep.logs.mkdir(parents=True, exist_ok=True)
    atomic_write(path, render_unit(dep, spec))
    call(["systemctl", "--user", "daemon-reload"])
    call(["systemctl", "--user", "enable", unit_name(dep)])
    return [str(path)]


def uninstall(dep: Deployment) -> None:
    call(["systemctl", "--user", "disable", "--now", unit_name(dep)], check=False)
    unit_path(dep).unlink(missing_ok=True)
    call(["systemctl", "--user", "daemon-reload"], check=False)
    call(["systemctl", "--user", "reset-failed", unit_name(dep)], check=False)


def start(dep: Deployment, spec: LaunchSpec) -> None:
    call(["systemctl", "--user", "start", unit_name(dep)])


def stop(dep: Deployment, spec: LaunchSpec | None = None) -> None:
    call(["systemctl", "--user", "stop", unit_name(dep)])


def parse_show(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def state(dep: Deployment) -> RunState:
    out = call(["systemctl", "--user", "show", unit_name(dep), "--property=ActiveState,SubState,MainPID,"
                "Result,ExecMainStatus,ExecMainStartTimestampMonotonic"], check=False).stdout
    return state_from_show(parse_show(out), dep)


def state_from_show(props: dict[str, str], dep: Deployment) -> RunState:
    """systemd's view → mlxk's four states (pure: tested on systemctl's own output format)."""
    active, sub = props.get("ActiveState", ""), props.get("SubState", "")
    pid = int(props.get("MainPID") or 0) or None
    started = int(props.get("ExecMainStartTimestampMonotonic") or 0)
    uptime = max(0.0, time.monotonic() - started / 1e6) if started else None
    if active in ("active", "reloading") or (active == "activating" and sub != "auto-restart"):
        return RunState("running", pid=pid, uptime=uptime)
    if active == "failed" or sub == "auto-restart":
        why = props.get("Result", "failed")
        code = props.get("ExecMainStatus")
        extra = " (restarting)" if sub == "auto-restart" else ""
        return RunState("failed", reason=f"systemd: {why}, exit status {code}{extra}")
    run = read_json(dep.run_path) or {}
    return RunState("stopped" if run.get("desired") else "installed")
