"""Model management: switching to another allowed model, --allow refusals, idle unload."""

from __future__ import annotations

import time

import pytest

from tests.serve_fixture import ServerProc, link_model

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx2")


def test_switch_allow_and_idle_unload(serve_model_dir, tmp_path):
    other = link_model(serve_model_dir, tmp_path / "second-model")
    blocked = link_model(serve_model_dir, tmp_path / "third-model")
    srv = ServerProc(serve_model_dir, tmp_path, "--allow", "second-model", "--idle-unload", "1.5",
                     "--model-dir", str(tmp_path)).wait_ready()
    try:
        client = openai.OpenAI(base_url=srv.base + "/v1", api_key="x", max_retries=0, timeout=60)
        first = client.models.list().data[0].id
        msgs = [{"role": "user", "content": "Hello there"}]
        a = client.chat.completions.create(model=first, messages=msgs, temperature=0, max_tokens=8)
        b = client.chat.completions.create(model=str(other), messages=msgs, temperature=0, max_tokens=8)
        assert b.model == "second-model"  # a folder name, never the absolute path
        assert b.choices[0].message.content == a.choices[0].message.content  # same weights
        assert httpx.get(srv.base + "/health").json()["model"] == "second-model"
        with pytest.raises(openai.NotFoundError) as exc:
            client.chat.completions.create(model=str(blocked), messages=msgs, max_tokens=4)
        assert exc.value.body["code"] == "model_not_allowed"
        # back to the preloaded model, then idle unload
        c = client.chat.completions.create(model=first, messages=msgs, temperature=0, max_tokens=8)
        assert c.choices[0].message.content == a.choices[0].message.content
        assert c.model == first and httpx.get(srv.base + "/health").json()["model"] == first
        deadline = time.time() + 10
        while time.time() < deadline and "unloading" not in srv.log():
            time.sleep(0.2)
        assert "unloading" in srv.log()
        d = client.chat.completions.create(model=first, messages=msgs, temperature=0, max_tokens=8)
        assert d.choices[0].message.content == a.choices[0].message.content
    finally:
        assert srv.stop() == 0
