"""A long prompt is prefilled in paced chunks: running streams keep going, keep-alives flow,
and a SIGINT in the middle of a prefill still ends every stream cleanly with exit code 0."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from tests.serve_fixture import ServerProc

httpx = pytest.importorskip("httpx2")

LONG = "The quick brown fox jumps over the lazy dog while the cat sleeps. " * 70  # ~1k tokens
FAST_KEEPALIVE = {"MLXK_SSE_KEEPALIVE_S": "0.2"}


def _stream(base: str, body: dict, out: list, first: threading.Event | None = None, n_first: int = 1):
    """Append (monotonic time, line) for every SSE line."""
    with httpx.Client(timeout=300) as c, c.stream("POST", base + "/v1/completions", json=body) as r:
        for line in r.iter_lines():
            if line:
                out.append((time.monotonic(), line))
                if first is not None and sum(1 for _, x in out if x.startswith("data: {")) >= n_first:
                    first.set()


def _tokens(lines):
    return [t for t, x in lines if x.startswith("data: {") and '"text": ""' not in x]


def test_running_streams_keep_their_pace_while_a_long_prompt_is_prefilled(serve_model_dir, tmp_path):
    srv = ServerProc(serve_model_dir, tmp_path, "--no-prefix-cache",
                     env={**FAST_KEEPALIVE, "MLXK_LOG_LEVEL": "debug"}).wait_ready()
    try:
        running, long = [], []
        started = threading.Event()
        a = threading.Thread(target=_stream, args=(srv.base, {"prompt": "Count: 1, 2, 3,", "max_tokens": 400,
                                                             "temperature": 0, "stream": True}, running, started, 4))
        a.start()
        assert started.wait(120), srv.log()
        t_submit = time.monotonic()
        _stream(srv.base, {"prompt": LONG, "max_tokens": 2, "temperature": 0, "stream": True}, long)
        a.join(300)
        deadline = time.monotonic() + 10  # the engine trims on its first idle tick after the last stream
        while "heap trimmed" not in srv.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        log = srv.log()
    finally:
        srv.stop()
    # the pacer alternates chunk and decode-only steps while the other stream decodes (engine/pacing.py)
    steps = [line.split("step: ", 1)[1] for line in log.splitlines() if "step: " in line]
    assert any(s.startswith("1 decoding, 0 prompt") for s in steps) and \
        any(s.startswith("1 decoding,") and not s.startswith("1 decoding, 0 prompt") for s in steps), steps[-20:]
    assert "heap trimmed" in log  # freed memory given back once the batch emptied (engine/heap.py)
    long_tokens = _tokens(long)
    assert long_tokens, long[-3:]
    window = [t for t in _tokens(running) if t_submit <= t <= long_tokens[0]]
    gaps = [b - a for a, b in zip(window, window[1:])]
    print(f"prefill window {long_tokens[0] - t_submit:.1f}s, running stream tokens in it: {len(window)}, "
          f"worst gap {max(gaps, default=0):.2f}s")
    assert len(window) >= 5, (len(window), long_tokens[0] - t_submit)  # decoding went on during the prefill
    assert any(x == ": keep-alive" for _, x in long), "no keep-alive comment during the prefill"


def test_sigint_during_a_long_prefill_interrupts_it_and_exits_zero(serve_model_dir, tmp_path):
    srv = ServerProc(serve_model_dir, tmp_path, "--no-prefix-cache", env=FAST_KEEPALIVE).wait_ready()
    lines: list = []
    t = threading.Thread(target=_stream, args=(srv.base, {"prompt": LONG * 2, "max_tokens": 4, "temperature": 0,
                                                          "stream": True}, lines))
    t.start()
    deadline = time.monotonic() + 60
    while not any(x == ": keep-alive" for _, x in lines) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert any(x == ": keep-alive" for _, x in lines), srv.log()  # the prefill is under way
    srv.proc.send_signal(signal.SIGINT)
    rc = srv.proc.wait(30)
    t.join(30)
    log = srv.log()
    srv.stop()
    assert rc == 0, log
    data = [x for _, x in lines if x.startswith("data:")]
    assert data[-1] == "data: [DONE]", data[-3:]
    assert '"code": "interrupted"' in data[-2], data[-3:]
