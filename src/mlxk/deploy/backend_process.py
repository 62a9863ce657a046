"""The plain backend (containers, CI, anywhere without a service manager): a detached process.

``start`` runs the runner in a new session with its output appended to ``logs/server.log``
and records its pid in ``server.pid`` and, with the process's start time (so a recycled
pid is never taken for ours), in ``run.json``. ``state`` tells a live process from a dead
one; a dead process that was not stopped is ``failed``. Nothing restarts it: that is what
the service backends are for.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from mlxk.deploy.backends import LaunchSpec, RunState
from mlxk.deploy.store import Deployment, read_json, write_json

STOP_GRACE = 15.0


def available() -> bool:
    return True


def unavailable_reason() -> str:
    return ""


def _proc_stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()  # fields after "pid (comm) "


def start_token(pid: int) -> str | None:
    """The process's start time: the same pid with another token is another process."""
    if Path("/proc").is_dir():
        fields = _proc_stat(pid)
        return fields[19] if fields else None
    out = subprocess.run(["ps", "-o", "lstart=", "-p", str(pid)], capture_output=True, text=True).stdout.strip()
    return out or None


def _alive(pid: int, token: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # not ours: a recycled pid
    if Path("/proc").is_dir():
        fields = _proc_stat(pid)
        if not fields or fields[0] == "Z":
            return False
    return token is None or start_token(pid) == token


def descendants(pid: int) -> list[int]:
    """Children and their children (the serve supervisor's worker lives in its own session)."""
    pairs: list[tuple[int, int]] = []
    if Path("/proc").is_dir():
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                fields = _proc_stat(int(entry))
                if fields:
                    pairs.append((int(entry), int(fields[1])))
    else:
        out = subprocess.run(["ps", "-A", "-o", "pid=", "-o", "ppid="], capture_output=True, text=True).stdout
        pairs = [(int(a), int(b)) for a, b in (ln.split() for ln in out.splitlines() if ln.strip())]
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        kids = [p for p, pp in pairs if pp == parent]
        found.extend(kids)
        frontier.extend(kids)
    return found


def install(dep: Deployment, spec: LaunchSpec) -> list[str]:
    return []  # nothing outside the deployment's folder


def uninstall(dep: Deployment) -> None:
    stop(dep)
    dep.pid_path.unlink(missing_ok=True)


def live_pid(dep: Deployment) -> int | None:
    run = read_json(dep.run_path) or {}
    pid = run.get("pid")
    if isinstance(pid, int) and _alive(pid, run.get("pid_start")):
        return pid
    return None


def start(dep: Deployment, spec: LaunchSpec) -> None:
    if live_pid(dep) is not None:
        return
    dep.logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **spec.env}
    with open(dep.log_path, "ab") as log:
        log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} mlxk deploy: start (process backend)\n".encode())
        log.flush()
        proc = subprocess.Popen(spec.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                cwd=dep.folder, start_new_session=True, close_fds=True)
    token = start_token(proc.pid)
    write_json(dep.run_path, {"desired": "running", "pid": proc.pid, "pid_start": token, "started_at": time.time()})
    from mlxk.store.register import atomic_write

    atomic_write(dep.pid_path, f"{proc.pid}\n")


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    left = pids
    while left and time.monotonic() < deadline:
        _reap(left)
        left = [p for p in left if _alive(p, None)]
        if left:
            time.sleep(0.1)
    return left


def _reap(pids: list[int]) -> None:
    """A process started from this interpreter (tests, start-all then stop-all) is our child."""
    for p in pids:
        try:
            os.waitpid(p, os.WNOHANG)
        except ChildProcessError:
            pass


def stop(dep: Deployment, spec: LaunchSpec | None = None) -> None:
    """SIGTERM (the server's graceful shutdown), then SIGKILL after ``STOP_GRACE`` seconds."""
    pid = live_pid(dep)
    run = read_json(dep.run_path) or {}
    if pid is not None:
        family = [pid, *descendants(pid)]
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        for p in _wait_gone(family, STOP_GRACE):
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _wait_gone(family, 5.0)
    if run:
        write_json(dep.run_path, {**run, "desired": "stopped", "stopped_at": time.time()})
    dep.pid_path.unlink(missing_ok=True)


def state(dep: Deployment) -> RunState:
    run = read_json(dep.run_path)
    if not run:
        return RunState("installed")
    pid = live_pid(dep)
    if pid is not None:
        return RunState("running", pid=pid, uptime=time.time() - float(run.get("started_at") or time.time()))
    if run.get("desired") == "stopped":
        return RunState("stopped")
    return RunState("failed", reason=f"the server process (pid {run.get('pid')}) is not running")
