"""Generated request bodies against a real server: never a 5xx, never a hang, nothing leaked.

Hypothesis sends arbitrary JSON (and some non-JSON) plus single-field mutations of valid chat
and completion bodies: wrong types, huge numbers, NaN/Infinity, nested lists, lone surrogates.
Bodies that happen to be valid run the model for at most 4 tokens. The client's timeout is the
hang detector (no timed assertions); afterwards the server must answer a normal request and
``/health`` must show no sequence left behind.
"""

from __future__ import annotations

import json
import time

import httpx2 as httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

KEY = "sk-test"
HEADERS = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
CHAT = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        "max_tokens": 2, "temperature": 0}
COMPLETION = {"prompt": "Hello", "max_tokens": 2, "temperature": 0}
FIELDS = ["model", "messages", "prompt", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k",
          "min_p", "repetition_penalty", "seed", "stop", "n", "stream", "stream_options", "logprobs",
          "top_logprobs", "tools", "tool_choice", "user"]
MESSAGE_FIELDS = ["role", "content", "name", "tool_calls", "tool_call_id"]

surrogates = st.sampled_from(["\ud800", "a\udfffb", "\udc00\ud800"])
weird_numbers = st.sampled_from([float("nan"), float("inf"), float("-inf"), 10**30, -(10**30), 2**64, 2**63, -1,
                                 0, 1e308, -0.0, 1e-300])
scalars = (st.none() | st.booleans() | st.integers() | st.floats() | weird_numbers | st.text(max_size=20)
           | surrogates)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.sampled_from(FIELDS + MESSAGE_FIELDS) | st.text(max_size=6), inner,
                                             max_size=4),
                           max_leaves=16)
deep = st.integers(1, 400).map(lambda n: [[]] if n < 2 else json.loads("[" * n + "]" * n) if n < 150 else "deep:%d" % n)
valid_sampling = st.fixed_dictionaries({}, optional={
    "temperature": st.floats(0, 2), "top_p": st.floats(0, 1), "top_k": st.integers(0, 100_000),
    "min_p": st.floats(0, 1), "seed": st.integers(0, 2**64 - 1), "repetition_penalty": st.floats(0.5, 2),
    "stop": st.lists(st.text(min_size=1, max_size=4), max_size=3), "logprobs": st.booleans(),
    "top_logprobs": st.integers(0, 20), "stream": st.booleans(), "max_tokens": st.integers(1, 4)})


def _small_generation(body):
    """A body that may be valid must not ask for a long generation (2 CPU cores)."""
    if isinstance(body, dict):
        for key in ("max_tokens", "max_completion_tokens"):
            value = body.get(key)
            if key == "max_tokens" and key not in body or type(value) is int and 4 < value <= 4096:
                body[key] = 2
    return body


@st.composite
def mutated(draw):
    base = json.loads(json.dumps(draw(st.sampled_from([CHAT, COMPLETION]))))
    value = draw(json_values | deep)
    where = draw(st.sampled_from(["top", "message", "part", "tool"]))
    if where == "top":
        base[draw(st.sampled_from(FIELDS))] = value
    elif where == "message" and "messages" in base:
        base["messages"][-1][draw(st.sampled_from(MESSAGE_FIELDS))] = value
    elif where == "part" and "messages" in base:
        base["messages"][-1]["content"] = [{"type": "text", "text": "Hi"}, draw(st.sampled_from(
            [{"type": "text", "text": value}, {"type": value}, value]))]
    else:
        base["tools"] = [{"type": "function", "function": {"name": "f", "parameters": value}}, value]
    return base


def _raw(body) -> bytes:
    if isinstance(body, bytes):
        return body
    text = json.dumps(body)  # NaN/Infinity literals and \\udxxx escapes as a careless client writes them
    if "deep:" in text:  # past the parser's depth limit, spliced in as text
        for n in range(150, 401):
            text = text.replace(f'"deep:{n}"', "[" * n + "]" * n)
    return text.encode()


bodies = (st.builds(_small_generation, mutated())
          | st.builds(_small_generation, json_values)
          | st.builds(lambda b, s: {**b, **s}, st.sampled_from([CHAT, COMPLETION]), valid_sampling)
          | st.binary(max_size=64))


def _check(client: httpx.Client, path: str, body) -> None:
    raw = _raw(body)
    with client.stream("POST", path, content=raw, headers=HEADERS) as r:
        content = r.read()
    assert r.status_code < 500, (r.status_code, raw[:300], content[:300])
    if r.status_code >= 400:
        err = json.loads(content)["error"]
        assert err["message"] and err["type"], err
    elif r.headers["content-type"].startswith("text/event-stream"):
        assert content.rstrip().endswith(b"data: [DONE]"), content[-300:]
        assert b'"error"' not in content, content[-300:]


def _health(served) -> dict:
    return httpx.get(served.base + "/health", timeout=10).json()


def test_generated_bodies_never_break_the_server(served):
    with httpx.Client(base_url=served.base, timeout=60) as client:
        @settings(max_examples=150, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(body=bodies, path=st.sampled_from(["/v1/chat/completions", "/v1/completions"]))
        def property_(body, path):
            _check(client, path, body)

        property_()
        ok = client.post("/v1/chat/completions", json=CHAT, headers=HEADERS)
        assert ok.status_code == 200 and ok.json()["choices"][0]["finish_reason"] == "length", ok.text
    deadline = time.time() + 15
    while time.time() < deadline and _health(served)["active_sequences"]:
        time.sleep(0.1)
    health = _health(served)
    assert health["status"] == "ok" and health["active_sequences"] == 0, health


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_every_valid_seed_samples(served, path):
    """The whole range mx.random.key accepts; one past either end is a 400."""
    base = CHAT if "chat" in path else COMPLETION
    with httpx.Client(base_url=served.base, timeout=60) as client:
        for seed in (0, 2**32, 2**63, 2**64 - 1):
            r = client.post(path, json={**base, "temperature": 1.0, "seed": seed}, headers=HEADERS)
            assert r.status_code == 200, (seed, r.text)
        for seed in (-1, 2**64):
            r = client.post(path, json={**base, "temperature": 1.0, "seed": seed}, headers=HEADERS)
            assert r.status_code == 400 and r.json()["error"]["param"] == "seed", (seed, r.text)
