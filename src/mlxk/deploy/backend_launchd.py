"""launchd user agents (macOS): one agent per deployment, label ``com.local.mlx-<name>``.

The plist lives in ``~/Library/LaunchAgents/``; it runs at login (``RunAtLoad``), is
restarted when it exits with an error (``KeepAlive`` / ``SuccessfulExit: false``) and
writes into the deployment's ``logs/server.log``. ``start`` loads it into the user's GUI
domain (``launchctl bootstrap``), ``stop`` unloads it (``bootout``, so KeepAlive does not
bring it back).
"""

from __future__ import annotations

import os
import plistlib
import re
import shutil
import sys
from pathlib import Path

from mlxk.deploy.backends import LaunchSpec, RunState, call
from mlxk.deploy.store import Deployment, read_json

LABEL_PREFIX = "com.local.mlx-"


def label(dep: Deployment) -> str:
    return LABEL_PREFIX + dep.name


def agents_dir() -> Path:
    return Path(os.path.expanduser("~"), "Library", "LaunchAgents")


def plist_path(dep: Deployment) -> Path:
    return agents_dir() / f"{label(dep)}.plist"


def _domain() -> str:
    return f"gui/{os.getuid()}"


def unavailable_reason() -> str:
    return "launchd runs on macOS only" if sys.platform != "darwin" else "no launchctl on PATH"


def available() -> bool:
    return sys.platform == "darwin" and shutil.which("launchctl") is not None


def render_plist(dep: Deployment, spec: LaunchSpec) -> bytes:
    log = str(dep.log_path)
    return plistlib.dumps({
        "Label": label(dep),
        "ProgramArguments": list(spec.argv),
        "EnvironmentVariables": dict(sorted(spec.env.items())),
        "WorkingDirectory": str(dep.folder),
        "StandardOutPath": log,
        "StandardErrorPath": log,
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "ThrottleInterval": 10,
        "ExitTimeOut": 20,
    })


def install(dep: Deployment, spec: LaunchSpec) -> list[str]:
    path = plist_path(dep)
    path.parent.mkdir(parents=True, exist_ok=True)
    dep.logs.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(render_plist(dep, spec))
    os.replace(tmp, path)
    return [str(path)]


def _loaded(dep: Deployment) -> str | None:
    proc = call(["launchctl", "print", f"{_domain()}/{label(dep)}"], check=False)
    return proc.stdout if proc.returncode == 0 else None


def uninstall(dep: Deployment) -> None:
    if _loaded(dep) is not None:
        call(["launchctl", "bootout", f"{_domain()}/{label(dep)}"], check=False)
    plist_path(dep).unlink(missing_ok=True)


def start(dep: Deployment, spec: LaunchSpec) -> None:
    if _loaded(dep) is None:
        call(["launchctl", "bootstrap", _domain(), str(plist_path(dep))])
    else:
        call(["launchctl", "kickstart", f"{_domain()}/{label(dep)}"])


def stop(dep: Deployment, spec: LaunchSpec | None = None) -> None:
    if _loaded(dep) is not None:
        call(["launchctl", "bootout", f"{_domain()}/{label(dep)}"])


def state(dep: Deployment) -> RunState:
    return state_from_print(_loaded(dep), dep)


def state_from_print(text: str | None, dep: Deployment) -> RunState:
    """``launchctl print``'s answer (None: not loaded) → mlxk's four states."""
    if text is None:
        run = read_json(dep.run_path) or {}
        return RunState("stopped" if run.get("desired") else "installed")
    pid = re.search(r"^\s*pid = (\d+)", text, re.M)
    if pid:
        return RunState("running", pid=int(pid.group(1)))
    code = re.search(r"^\s*last exit code = (.+)$", text, re.M)
    if code and code.group(1).strip() not in ("0", "(never exited)"):
        return RunState("failed", reason=f"launchd: last exit code {code.group(1).strip()}")
    return RunState("stopped")
