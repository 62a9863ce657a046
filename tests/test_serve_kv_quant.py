"""--kv-bits: quantized KV caches, one request at a time (mlx-lm's batch cache has no quantized form)."""

from __future__ import annotations

import threading

import pytest

from tests.serve_fixture import ServerProc

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx2")


def test_quantized_kv_serves_concurrent_requests_one_at_a_time(serve_model_dir, tmp_path):
    srv = ServerProc(serve_model_dir, tmp_path, "--kv-bits", "8", "--kv-quantized-start", "0").wait_ready()
    try:
        health = httpx.get(srv.base + "/health").json()
        assert health["kv_cache"]["bits"] == 8 and health["kv_cache"]["quantized_start"] == 0, health
        assert "one request at a time" in health["kv_cache"]["batching"]
        client = openai.OpenAI(base_url=srv.base + "/v1", api_key="x", max_retries=0, timeout=120)
        model = client.models.list().data[0].id
        results: dict[int, str] = {}

        def ask(i: int) -> None:
            r = client.chat.completions.create(model=model, temperature=0, max_tokens=12,
                                               messages=[{"role": "user", "content": f"Say a word about {i}."}])
            results[i] = r.choices[0].finish_reason + ":" + (r.choices[0].message.content or "")

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert sorted(results) == [0, 1, 2], (results, srv.log())
        assert all(v.split(":", 1)[1].strip() for v in results.values()), results
        # streaming, and a stream the client leaves early frees the server for the next one
        with client.chat.completions.create(model=model, temperature=0, max_tokens=200, stream=True,
                                            messages=[{"role": "user", "content": "Count to 100."}]) as s:
            for n, _ in enumerate(s):
                if n == 3:
                    break
        again = client.chat.completions.create(model=model, temperature=0, max_tokens=4,
                                               messages=[{"role": "user", "content": "Hi"}])
        assert again.choices[0].message.content
        assert "quantized to 8 bits" in srv.log()
        assert httpx.get(srv.base + "/health").json()["active_sequences"] == 0
    finally:
        assert srv.stop() == 0


def test_bad_kv_bits_is_refused(serve_model_dir, tmp_path):
    srv = ServerProc(serve_model_dir, tmp_path, "--kv-bits", "7")
    rc = srv.proc.wait(120)
    log = srv.log()
    srv.stop()
    assert rc != 0 and "--kv-bits must be one of" in log, log


def test_a_group_size_the_model_cannot_use_fails_the_load_with_the_reason(serve_model_dir, tmp_path):
    import json

    head = json.loads((serve_model_dir / "config.json").read_text())
    head_dim = head.get("head_dim") or head["hidden_size"] // head["num_attention_heads"]
    bad = next(g for g in (128, 64, 32) if head_dim % g)  # SmolLM2-135M: head size 64, so 128
    srv = ServerProc(serve_model_dir, tmp_path, "--kv-bits", "8", "--kv-group-size", str(bad))
    try:
        import time

        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                h = httpx.get(srv.base + "/health", timeout=2).json()
                if h["status"] == "failed":
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        assert h["status"] == "failed" and f"does not divide this model's attention head size ({head_dim})" in h["error"], h
    finally:
        srv.stop()
