"""Runs the server process and stays in charge of it.

First SIGINT/SIGTERM: forwarded (the server interrupts its streams and exits), with a
hard kill after ``grace`` seconds. Second SIGINT: kill at once. If the server dies on
its own, report its exit code and last log lines instead of hanging.

The server never outlives the supervisor, even after a ``kill -9`` of it: it gets the
supervisor's pid (``--supervisor-pid``) and a stdin pipe that only the supervisor writes
to, and exits when either says the supervisor is gone (see ``worker.watch_supervisor``).
Secrets go in ``env``, never in ``cmd`` (argv is visible to every user in ``ps``).
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
import time


def supervise(cmd: list[str], grace: float = 4.5, env: dict | None = None) -> int:
    tail: collections.deque[str] = collections.deque(maxlen=20)
    # Call from a thread that lives as long as the server: Linux's parent-death signal
    # follows the thread that started the child, not the process.
    proc = subprocess.Popen([*cmd, "--supervisor-pid", str(os.getpid())], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def pump() -> None:
        assert proc.stdout is not None
        for raw in iter(proc.stdout.readline, b""):
            line = raw.decode("utf-8", "replace")
            tail.append(line.rstrip("\n"))
            try:
                sys.stderr.write(line)
                sys.stderr.flush()
            except (OSError, ValueError):
                pass

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    state = {"signals": 0, "deadline": None}

    def on_signal(signum, frame):
        state["signals"] += 1
        if state["signals"] == 1:
            state["deadline"] = time.monotonic() + grace
            try:
                proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        else:
            try:
                proc.kill()
            except ProcessLookupError:
                pass

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while True:
            try:
                rc = proc.wait(timeout=0.1)
                break
            except subprocess.TimeoutExpired:
                if state["deadline"] is not None and time.monotonic() > state["deadline"]:
                    proc.kill()
                    state["deadline"] = None
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        assert proc.stdin is not None
        proc.stdin.close()
    reader.join(timeout=1)
    if state["signals"]:
        if state["signals"] > 1:
            sys.stderr.write("mlxk serve: killed\n")
            return 130
        return 0 if rc == 0 else _report(rc, tail)
    return _report(rc, tail) if rc != 0 else 0


def _report(rc: int, tail) -> int:
    why = f"killed by signal {-rc}" if rc < 0 else f"exit code {rc}"
    sys.stderr.write(f"mlxk serve: the server process died ({why}). Last log lines:\n")
    for line in list(tail)[-10:]:
        sys.stderr.write(f"  | {line}\n")
    sys.stderr.flush()
    return rc if rc > 0 else 1
