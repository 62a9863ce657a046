"""Prefix cache: RAM hit, disk hit after a restart, corrupted snapshots removed."""

from __future__ import annotations

import time

import pytest

from tests.serve_fixture import ServerProc

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx2")

SYSTEM = " ".join(["You are a helpful assistant for local language models running on MLX."] * 12)


def ask(srv: ServerProc, user: str, history: list[dict] | None = None):
    client = openai.OpenAI(base_url=srv.base + "/v1", api_key="x", max_retries=0, timeout=60)
    r = client.chat.completions.create(model=client.models.list().data[0].id, temperature=0, max_tokens=12,
                                       messages=[{"role": "system", "content": SYSTEM}, *(history or []),
                                                 {"role": "user", "content": user}])
    return r.choices[0].message.content, r.usage


EARLIER = [{"role": "user", "content": "Hello?"}, {"role": "assistant", "content": "Hello! How can I help?"}]


def wait_files(srv: ServerProc, n: int = 1, timeout: float = 10) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        h = httpx.get(srv.base + "/health").json()
        if h["prefix_cache_files"] >= n:
            return h
        time.sleep(0.1)
    raise AssertionError(f"no snapshot files: {h}\n{srv.log()}")


@pytest.fixture(scope="module")
def baseline(serve_model_dir, tmp_path_factory):
    """Answers from a server without a prefix cache: what every cached answer must equal."""
    srv = ServerProc(serve_model_dir, tmp_path_factory.mktemp("nocache"), "--no-prefix-cache").wait_ready()
    try:
        out = {u: ask(srv, u)[0] for u in ("First question?", "Second question?", "Third one?")}
        out["with-history"] = ask(srv, "First question?", EARLIER)[0]
    finally:
        srv.stop()
    return out


def test_ram_then_disk_then_corruption(serve_model_dir, tmp_path, baseline):
    cache_dir = tmp_path / "pc"
    srv = ServerProc(serve_model_dir, tmp_path, "--prefix-cache-dir", str(cache_dir)).wait_ready()
    try:
        text1, u1 = ask(srv, "First question?")
        assert u1.prompt_tokens_details.cached_tokens == 0
        assert text1 == baseline["First question?"]
        text2, u2 = ask(srv, "Second question?")
        assert u2.prompt_tokens_details.cached_tokens > 50  # the shared system prompt
        assert text2 == baseline["Second question?"]
        again, u3 = ask(srv, "First question?")
        assert again == text1 and u3.prompt_tokens_details.cached_tokens >= u2.prompt_tokens_details.cached_tokens
        h = wait_files(srv, 1)
        assert h["prefix_cache_bytes"] > 0 and h["prefix_cache_hits"] >= 2
    finally:
        assert srv.stop() == 0
    files = sorted(cache_dir.glob("*.safetensors"))
    assert files and not list(cache_dir.glob("tmp-*"))

    # mlx-lm's own loader reads our snapshots
    from mlx_lm.models.cache import load_prompt_cache

    cache, meta = load_prompt_cache(str(files[0]), return_metadata=True)
    assert cache and int(meta["mlxk_ntokens"]) > 0

    # after a restart the disk snapshot is used
    srv = ServerProc(serve_model_dir, tmp_path, "--prefix-cache-dir", str(cache_dir)).wait_ready()
    try:
        text3, u = ask(srv, "Third one?")
        assert u.prompt_tokens_details.cached_tokens > 50, srv.log()
        assert text3 == baseline["Third one?"]
    finally:
        assert srv.stop() == 0

    # corrupt every snapshot's data, and add a truncated file
    files = sorted(cache_dir.glob("*.safetensors"))
    for f in files:
        raw = bytearray(f.read_bytes())
        for j in range(len(raw) - 64, len(raw) - 32):
            raw[j] ^= 0xFF
        f.write_bytes(bytes(raw))
    junk = cache_dir / ("0" * 40 + ".safetensors")
    junk.write_bytes(files[0].read_bytes()[:100])
    srv = ServerProc(serve_model_dir, tmp_path, "--prefix-cache-dir", str(cache_dir)).wait_ready()
    try:
        text4, u = ask(srv, "Second question?")
        assert u.prompt_tokens_details.cached_tokens == 0
        assert text4 == baseline["Second question?"]
        wait_files(srv, 1)
        log = srv.log()
    finally:
        srv.stop()
    assert "unreadable" in log and not junk.exists()  # found by the startup scan
    assert "unusable" in log  # the flipped snapshot failed its checksum when used, and was removed


def test_bad_snapshot_falls_back_to_a_shorter_one(serve_model_dir, tmp_path, baseline):
    from mlx_lm.models.cache import load_prompt_cache

    cache_dir = tmp_path / "pc"
    srv = ServerProc(serve_model_dir, tmp_path, "--prefix-cache-dir", str(cache_dir)).wait_ready()
    try:
        ask(srv, "First question?", EARLIER)
        wait_files(srv, 2)  # end of the system prompt, end of the conversation (it has gone on)
    finally:
        assert srv.stop() == 0
    sizes = sorted((int(load_prompt_cache(str(f), return_metadata=True)[1]["mlxk_ntokens"]), f)
                   for f in cache_dir.glob("*.safetensors"))
    shortest = sizes[0][0]
    for _, f in sizes[1:]:  # every longer snapshot fails its checksum
        raw = bytearray(f.read_bytes())
        raw[-40] ^= 0xFF
        f.write_bytes(bytes(raw))
    srv = ServerProc(serve_model_dir, tmp_path, "--prefix-cache-dir", str(cache_dir)).wait_ready()
    try:
        text, u = ask(srv, "First question?", EARLIER)
        log = srv.log()
    finally:
        srv.stop()
    assert "unusable" in log
    assert u.prompt_tokens_details.cached_tokens == shortest > 50, log
    assert text == baseline["with-history"]


def _metric(srv: ServerProc, name: str) -> float:
    for line in httpx.get(srv.base + "/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def _chat(srv: ServerProc, messages: list[dict]):
    client = openai.OpenAI(base_url=srv.base + "/v1", api_key="x", max_retries=0, timeout=60)
    return client.chat.completions.create(model=client.models.list().data[0].id, temperature=0, max_tokens=6,
                                          messages=messages).usage


def test_disk_gets_only_reusable_snapshots_and_metrics_count_the_bytes(serve_model_dir, tmp_path):
    cache_dir = tmp_path / "pc"
    srv = ServerProc(serve_model_dir, tmp_path, "--prefix-cache-dir", str(cache_dir)).wait_ready()
    sys_msg = {"role": "system", "content": SYSTEM}
    turn2 = [sys_msg, {"role": "user", "content": "First question?"}, {"role": "assistant", "content": "An answer."},
             {"role": "user", "content": "And a follow-up?"}]
    try:
        _chat(srv, turn2)  # the system prompt's end and this conversation's end
        wait_files(srv, 2)
        srv_files = lambda: sorted(p.name for p in cache_dir.glob("*.safetensors"))  # noqa: E731
        time.sleep(0.5)
        first = srv_files()
        assert len(first) == 2, first  # the finished answer is not written to disk
        written = _metric(srv, "mlxk_prefix_cache_bytes_written_total")
        assert written == sum(p.stat().st_size for p in cache_dir.glob("*.safetensors"))
        assert _metric(srv, "mlxk_prefix_cache_bytes_written_per_request") == written
        # the same conversation again: everything is on disk already, nothing is written
        _chat(srv, turn2)
        # its first turn alone: that conversation's end begins the longer snapshot, so it is not written
        u = _chat(srv, turn2[:2])
        time.sleep(0.5)
        assert srv_files() == first
        assert _metric(srv, "mlxk_prefix_cache_bytes_written_total") == written
        assert _metric(srv, "mlxk_prefix_cache_files_written_total") == 2
        assert u.prompt_tokens_details.cached_tokens > 50
    finally:
        assert srv.stop() == 0
    # after a restart, the shorter conversation is served from the longer snapshot on disk (trimmed)
    srv = ServerProc(serve_model_dir, tmp_path, "--prefix-cache-dir", str(cache_dir)).wait_ready()
    try:
        u = _chat(srv, turn2[:2])
        assert u.prompt_tokens_details.cached_tokens >= u.prompt_tokens - 8, (u, srv.log())
    finally:
        srv.stop()


def test_a_prefill_the_client_gave_up_on_is_kept_for_its_retry(serve_model_dir, tmp_path):
    """An agent that times out and sends the same request again does not start from zero."""
    srv = ServerProc(serve_model_dir, tmp_path, "--prefix-cache-dir", str(tmp_path / "pc"),
                     env={"MLXK_SSE_KEEPALIVE_S": "0.2"}).wait_ready()
    body = {"messages": [{"role": "user", "content": "Summarize: " + "the river runs past the mill and on to the sea. " * 120}],
            "max_tokens": 8, "temperature": 0}
    try:
        with httpx.Client(timeout=120) as c:
            with c.stream("POST", srv.base + "/v1/chat/completions", json={**body, "stream": True}) as r:
                keepalives = 0
                for line in r.iter_lines():
                    keepalives += line == ": keep-alive"
                    assert '"finish_reason": "' not in line, "the prefill ended before the client gave up"
                    if keepalives == 8:  # well into the prefill: hang up
                        break
            deadline = time.time() + 30
            while c.get(srv.base + "/health").json()["active_sequences"] and time.time() < deadline:
                time.sleep(0.1)
            retry = c.post(srv.base + "/v1/chat/completions", json=body).json()
    finally:
        srv.stop()
    usage = retry["usage"]
    cached = usage["prompt_tokens_details"]["cached_tokens"]
    assert 16 <= cached < usage["prompt_tokens"], (usage, srv.log())
    (tmp_path / "plain").mkdir()
    plain = ServerProc(serve_model_dir, tmp_path / "plain", "--no-prefix-cache").wait_ready()
    try:  # going on from the partial prefill gives the same answer as a prefill from zero
        fresh = httpx.post(plain.base + "/v1/chat/completions", json=body, timeout=120).json()
    finally:
        plain.stop()
    assert retry["choices"][0]["message"]["content"] == fresh["choices"][0]["message"]["content"]
