"""The supervisor: SIGINT during active streams, a second SIGINT, a server that dies."""

from __future__ import annotations

import signal
import sys
import threading
import time

import pytest

from tests.serve_fixture import ServerProc

httpx = pytest.importorskip("httpx2")


def _stream(base: str, out: dict, i: int, started: threading.Event) -> None:
    body = {"prompt": f"Hello world {i}", "max_tokens": 1500, "temperature": 0, "stream": True}
    lines = []
    try:
        with httpx.Client(timeout=30) as c, c.stream("POST", base + "/v1/completions", json=body) as r:
            for line in r.iter_lines():
                if line:
                    lines.append(line)
                    if len(lines) == 3:
                        started.set()
    except httpx.HTTPError as exc:
        lines.append(f"EXC {exc!r}")
    out[i] = lines


def test_sigint_interrupts_streams_and_exits_zero(serve_model_dir, tmp_path):
    srv = ServerProc(serve_model_dir, tmp_path).wait_ready()
    out: dict[int, list[str]] = {}
    events = [threading.Event() for _ in range(4)]
    threads = [threading.Thread(target=_stream, args=(srv.base, out, i, events[i])) for i in range(4)]
    for t in threads:
        t.start()
    for e in events:
        assert e.wait(30), srv.log()
    assert httpx.get(srv.base + "/health").json()["active_sequences"] >= 1
    t0 = time.monotonic()
    srv.proc.send_signal(signal.SIGINT)
    rc = srv.proc.wait(10)
    elapsed = time.monotonic() - t0
    for t in threads:
        t.join(10)
    log = srv.log()
    srv.stop()
    assert rc == 0, log
    assert elapsed < 5, elapsed
    assert "stopped" in log and "still busy" not in log, log
    for i in range(4):
        lines = out[i]
        assert lines[-1] == "data: [DONE]", (i, lines[-3:], log)
        assert '"code": "interrupted"' in lines[-2], (i, lines[-3:])


def test_second_sigint_kills(serve_model_dir, tmp_path):
    srv = ServerProc(serve_model_dir, tmp_path).wait_ready()
    srv.proc.send_signal(signal.SIGINT)
    time.sleep(0.05)  # two signals sent back to back may reach the handler as one
    srv.proc.send_signal(signal.SIGINT)
    rc = srv.proc.wait(5)
    log = srv.log()
    srv.stop()
    assert rc == 130, log  # killed at once, not the graceful exit (0)
    assert "mlxk serve: killed" in log


def test_dead_server_is_reported(tmp_path, serve_model_dir):
    # a model that cannot run: the server process exits at once and the supervisor says why
    bad = tmp_path / "not-a-model"
    bad.mkdir()
    (bad / "config.json").write_text("{}")
    srv = ServerProc(bad, tmp_path)
    rc = srv.proc.wait(60)
    log = srv.log()
    srv.stop()
    assert rc != 0
    assert "server process died (exit code 2)" in log
    assert "not runnable" in log


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_killed_child_is_reported(serve_model_dir, tmp_path):
    import os

    srv = ServerProc(serve_model_dir, tmp_path).wait_ready()
    import subprocess

    child = subprocess.run(["pgrep", "-P", str(srv.proc.pid)], capture_output=True, text=True).stdout.split()
    assert child, "no server child process"
    os.kill(int(child[0]), signal.SIGKILL)
    rc = srv.proc.wait(10)
    log = srv.log()
    srv.stop()
    assert rc != 0
    assert "killed by signal 9" in log and "Last log lines" in log
