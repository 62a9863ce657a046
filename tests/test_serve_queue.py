"""A full queue answers 503 with Retry-After, in OpenAI's error shape, and the server stays up."""

from __future__ import annotations

import concurrent.futures as cf

import pytest

from tests.serve_fixture import ServerProc

httpx = pytest.importorskip("httpx2")


def test_queue_full_is_503_with_retry_after(serve_model_dir, tmp_path):
    srv = ServerProc(serve_model_dir, tmp_path, "--max-concurrency", "1", "--max-queue", "1",
                     "--no-prefix-cache").wait_ready()
    try:
        body = {"model": "x", "messages": [{"role": "user", "content": "Count to one hundred."}],
                "max_tokens": 48, "temperature": 0}

        def post(_):
            return httpx.post(srv.base + "/v1/chat/completions", json={**body, "model": None}, timeout=300)

        with cf.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(post, range(8)))
        statuses = sorted(r.status_code for r in answers)
        assert 200 in statuses and 503 in statuses, statuses
        refused = next(r for r in answers if r.status_code == 503)
        assert refused.headers.get("Retry-After")
        err = refused.json()["error"]
        assert err["code"] == "queue_full" and err["message"]
        # the server keeps serving once the burst is over
        again = httpx.post(srv.base + "/v1/chat/completions", json={**body, "model": None, "max_tokens": 4}, timeout=120)
        assert again.status_code == 200
    finally:
        assert srv.stop() == 0
