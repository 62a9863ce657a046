"""The three ways a deployment runs, and the automatic choice among them.

Each backend module offers the same functions: ``available()``, ``install(dep, spec)``
(returns the service files it wrote), ``uninstall(dep)``, ``start``, ``stop``
and ``state(dep) -> RunState`` (a restart is stop, the start checks, start). ``install.json`` remembers which backend
installed a deployment, so a later command uses that one whatever the automatic choice.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from types import ModuleType

from mlxk.contract import MlxkError

NAMES = ("launchd", "systemd", "process")


@dataclass
class LaunchSpec:
    """What the service runs: argv, the environment captured at install, the log file."""

    argv: list[str]
    env: dict[str, str]
    description: str = ""


@dataclass
class RunState:
    """``installed`` (never started), ``running``, ``stopped`` or ``failed`` (with a reason)."""

    state: str
    pid: int | None = None
    uptime: float | None = None
    reason: str | None = None
    extra: dict = field(default_factory=dict)


def module(name: str) -> ModuleType:
    from importlib import import_module

    if name not in NAMES:
        raise MlxkError("ValidationError", f"Unknown backend '{name}': use one of {', '.join(NAMES)}", field="backend")
    return import_module(f"mlxk.deploy.backend_{name}")


def choose(requested: str | None = None) -> str:
    """``--backend`` when given (and usable here); else launchd on macOS, systemd where a user
    manager answers, the plain process anywhere else."""
    if requested:
        mod = module(requested)
        if not mod.available():
            raise MlxkError("ValidationError", f"The {requested} backend is not available on this machine: "
                            f"{mod.unavailable_reason()}", field="backend")
        return requested
    if sys.platform == "darwin":
        return "launchd"
    if module("systemd").available():
        return "systemd"
    return "process"


def call(argv: list[str], check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run a service manager's command; a failure names the command and its message."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MlxkError("OperationError", f"'{' '.join(argv)}' failed: {exc}") from None
    if check and proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip() or f"exit code {proc.returncode}"
        raise MlxkError("OperationError", f"'{' '.join(argv)}' failed: {msg}")
    return proc
