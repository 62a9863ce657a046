"""The server process never outlives its supervisor: ``kill -9`` of ``mlxk serve`` frees the port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.serve_fixture import ServerProc, free_port

httpx = pytest.importorskip("httpx2")

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and process groups")


def _gone(pid: int) -> bool:
    """Exited (a zombie waiting for a reaper counts: it holds no socket any more)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    status = Path(f"/proc/{pid}/status")
    try:
        return "\nState:\tZ" in status.read_text()
    except OSError:
        return True


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _wait(predicate, limit: float = 30) -> bool:
    """Polls until ``predicate()``; the limit only bounds a failing test, it is not a speed target."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_kill_9_of_supervisor_ends_the_server(serve_model_dir, tmp_path):
    srv = ServerProc(serve_model_dir, tmp_path).wait_ready()
    worker = srv.worker_pid()
    try:
        os.kill(srv.proc.pid, signal.SIGKILL)
        srv.proc.wait(10)
        assert _wait(lambda: _gone(worker)), f"server process {worker} still running:\n{srv.log()}"
        assert _wait(lambda: _port_free(srv.port)), "port still served"
    finally:
        _kill(worker)
        srv.stop()


def _worker(model: Path, tmp: Path, port: int, supervisor_pid: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "MLXK_API_KEY"}
    env.update(HF_HOME=str(tmp / "hf_home"), HF_HUB_OFFLINE="1")
    return subprocess.Popen([sys.executable, "-m", "mlxk.server.worker", "--model", str(model), "--port", str(port),
                             "--no-prefix-cache", "--supervisor-pid", str(supervisor_pid)],
                            stdin=subprocess.PIPE, stdout=open(tmp / "worker.log", "wb"), stderr=subprocess.STDOUT,
                            env=env)


def test_closed_supervisor_pipe_ends_the_server(serve_model_dir, tmp_path):
    # the watch used where there is no parent-death signal: the parent (this test) stays alive
    port = free_port()
    proc = _worker(serve_model_dir, tmp_path, port, os.getpid())
    try:
        assert _wait(lambda: proc.poll() is not None or _healthy(port), limit=120), "server did not start"
        assert proc.poll() is None, (tmp_path / "worker.log").read_text()
        proc.stdin.close()
        rc = proc.wait(30)
        log = (tmp_path / "worker.log").read_text()
        assert rc == 0, log  # the graceful path: SIGTERM, streams interrupted, exit 0
        assert "stopped" in log, log
        assert _port_free(port)
    finally:
        proc.kill()
        proc.wait()


def test_server_whose_supervisor_already_died_does_not_start(serve_model_dir, tmp_path):
    # the race before the parent-death signal is armed: the parent is not the one named
    proc = _worker(serve_model_dir, tmp_path, free_port(), supervisor_pid=os.getpid() + 1_000_000)
    try:
        assert proc.wait(60) == 1
        assert "serving on" not in (tmp_path / "worker.log").read_text()
    finally:
        proc.kill()
        proc.wait()
