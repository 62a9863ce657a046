"""--temp/--top-k/--default-max-tokens: the server's values where a request sets none."""

from __future__ import annotations

import pytest

from tests.serve_fixture import ServerProc

openai = pytest.importorskip("openai")


def test_request_defaults_apply_only_where_the_request_is_silent(serve_model_dir, tmp_path):
    srv = ServerProc(serve_model_dir, tmp_path, "--temp", "0", "--default-max-tokens", "3", "--top-k", "5").wait_ready()
    try:
        client = openai.OpenAI(base_url=srv.base + "/v1", api_key="x", max_retries=0, timeout=120)
        model = client.models.list().data[0].id
        msgs = [{"role": "user", "content": "Tell me a long story about the sea."}]
        a = client.chat.completions.create(model=model, messages=msgs)
        b = client.chat.completions.create(model=model, messages=msgs)
        assert a.usage.completion_tokens == 3 and a.choices[0].finish_reason == "length"
        assert a.choices[0].message.content == b.choices[0].message.content  # --temp 0: greedy
        c = client.chat.completions.create(model=model, messages=msgs, max_tokens=6)
        assert c.usage.completion_tokens == 6  # the request's own value wins
        assert c.choices[0].message.content.startswith(a.choices[0].message.content)
        log = srv.log()
        assert "request model=" in log  # each request leaves a log line
    finally:
        srv.stop()


def test_invalid_request_defaults_stop_the_server_with_a_message(serve_model_dir, tmp_path):
    srv = ServerProc(serve_model_dir, tmp_path, "--temp", "9")
    rc = srv.proc.wait(120)
    log = srv.log()
    srv.stop()
    assert rc != 0 and "invalid request default temperature" in log, log
