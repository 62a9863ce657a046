"""Malformed and hostile requests get a 4xx in OpenAI's error shape, over real HTTP.

Every case here answered 500 (or froze, or read the whole body) before the request bodies
became pydantic models and the body reader stopped at the size limit.
"""

from __future__ import annotations

import json
import select
import socket

import httpx2 as httpx
import openai
import pytest

KEY = "sk-test"
HEADERS = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
USER = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=served.base + "/v1", api_key=KEY, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def model_info(client) -> tuple[str, int]:
    model = client.models.list().data[0]
    return model.id, model.context_length


@pytest.fixture(scope="module")
def vocab(serve_model_dir) -> int:
    return json.loads((serve_model_dir / "config.json").read_text())["vocab_size"]


def post_raw(served, raw: bytes, path: str = "/v1/chat/completions") -> httpx.Response:
    return httpx.post(served.base + path, content=raw, headers=HEADERS, timeout=60)


def error_of(r: httpx.Response) -> dict:
    assert r.status_code == 400, (r.status_code, r.text[:300])
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["message"]
    return err


# --- wrong types and ranges: param names the field ----------------------------------------

CHAT_CASES = [
    ({"messages": [{"role": {"name": "user"}, "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": ["user"], "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}, "messages[0].content[0].text"),
    ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages[0].content[0]"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"messages": [{"role": "assistant", "content": None, "tool_calls": [1]}]}, "messages[0].tool_calls[0]"),
    ({"messages": USER, "tools": [1]}, "tools[0]"),
    ({"messages": USER, "tools": [{"type": "function", "function": {"name": 7}}]}, "tools[0].function.name"),
    ({"messages": USER, "seed": -1}, "seed"),
    ({"messages": USER, "seed": 2**64}, "seed"),
    ({"messages": USER, "seed": 1.5}, "seed"),
    ({"messages": USER, "temperature": True}, "temperature"),
    ({"messages": USER, "top_k": -1}, "top_k"),
    ({"messages": USER, "repetition_penalty": 0}, "repetition_penalty"),
    ({"messages": USER, "logprobs": 3}, "logprobs"),
    ({"messages": USER, "logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ({"messages": USER, "max_completion_tokens": 0}, "max_completion_tokens"),
    ({"messages": USER, "stop": ["x"] * 17}, "stop"),
    ({"messages": USER, "stream": "yes"}, "stream"),
    ({"messages": USER, "stream_options": [1]}, "stream_options"),
    ({"messages": USER, "model": 5}, "model"),
    ({}, "messages"),
]


@pytest.mark.parametrize("body,param", CHAT_CASES, ids=[p for _, p in CHAT_CASES])
def test_chat_field_errors_name_the_field(served, body, param):
    err = error_of(post_raw(served, json.dumps(body).encode()))
    assert err["param"] == param, err


COMPLETION_CASES = [
    ({"prompt": 5}, "prompt"),
    ({"prompt": [1, -2]}, "prompt[1]"),
    ({"prompt": ["one", "two"]}, "prompt"),
    ({"prompt": "x", "logprobs": True}, "logprobs"),
    ({"prompt": "x", "logprobs": 6}, "logprobs"),
    ({"prompt": "x", "min_p": 2}, "min_p"),
]


@pytest.mark.parametrize("body,param", COMPLETION_CASES, ids=[p for _, p in COMPLETION_CASES])
def test_completion_field_errors_name_the_field(served, body, param):
    err = error_of(post_raw(served, json.dumps(body).encode(), "/v1/completions"))
    assert err["param"] == param, err


def test_the_openai_client_gets_the_field_back(client, model_info):
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model=model_info[0], messages=[{"role": {"x": 1}, "content": "hi"}])
    assert exc.value.status_code == 400 and exc.value.body["param"] == "messages[0].role"


# --- what json.loads lets through ------------------------------------------------------------

@pytest.mark.parametrize("raw,path,param", [
    (b'{"messages": [{"role": "user", "content": "hi"}], "min_p": NaN}', "/v1/chat/completions", "min_p"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "temperature": -Infinity}', "/v1/chat/completions",
     "temperature"),
    (b'{"prompt": "a\\ud800b"}', "/v1/completions", "prompt"),
    (b'{"prompt": "x", "model": "\\udc00"}', "/v1/completions", "model"),
    (b'{"messages": [{"role": "user", "content": "\\ud83d"}]}', "/v1/chat/completions", "messages[0].content"),
], ids=["nan", "infinity", "surrogate-prompt", "surrogate-model", "surrogate-content"])
def test_non_finite_numbers_and_lone_surrogates_are_refused(served, raw, path, param):
    err = error_of(post_raw(served, raw, path))
    assert err["code"] == "invalid_json" and err["param"] == param, err
    assert f"'{param}' holds NaN, Infinity or a lone surrogate" in err["message"], err


def test_overflowing_number_is_not_finite(served):
    raw = b'{"messages": [{"role": "user", "content": "hi"}], "min_p": 1e999}'
    assert error_of(post_raw(served, raw))["param"] == "min_p"


def test_deeply_nested_json_is_refused(served):
    raw = b'{"messages": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    assert error_of(post_raw(served, raw))["code"] == "invalid_json"


# --- bounds only the loaded model knows --------------------------------------------------------

def test_top_k_past_the_vocabulary(served, model_info, vocab):
    body = {"model": model_info[0], "messages": USER, "max_tokens": 1, "temperature": 1.0}
    err = error_of(post_raw(served, json.dumps({**body, "top_k": vocab + 1}).encode()))
    assert err["param"] == "top_k"
    ok = post_raw(served, json.dumps({**body, "top_k": vocab}).encode())  # every token: allowed
    assert ok.status_code == 200, ok.text
    again = post_raw(served, json.dumps({**body, "temperature": 0}).encode())  # the engine still serves
    assert again.status_code == 200 and again.json()["choices"][0]["finish_reason"] == "length"


def test_completion_logprobs_count(client, model_info):
    r = client.completions.create(model=model_info[0], prompt="Hello", max_tokens=2, temperature=0, logprobs=5)
    assert [len(t) for t in r.choices[0].logprobs.top_logprobs] == [5, 5]


def test_prompt_over_the_character_bound_is_refused_before_tokenizing(served, model_info):
    """Spaces pack ~60 to a token here: this prompt would fit the context, but is refused by
    its length in characters alone (context x 16) without being tokenized."""
    model, ctx = model_info
    for path, body in (("/v1/completions", {"prompt": " " * (ctx * 16 + 1)}),
                       ("/v1/chat/completions", {"messages": [{"role": "user", "content": " " * (ctx * 16 + 1)}]})):
        r = post_raw(served, json.dumps({"model": model, "max_tokens": 1, **body}).encode(), path)
        err = error_of(r)
        assert err["code"] == "context_length_exceeded" and "characters" in err["message"], err
        assert err["param"] == ("prompt" if "prompt" in body else "messages")


# --- body size -------------------------------------------------------------------------------

BIG = 200 * 1024 * 1024
HEAD = ("POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + KEY
        + "\r\nContent-Type: application/json\r\n")


def _read_response(sock: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ConnectionResetError, TimeoutError):  # the server closes with the body unread
        pass
    return data


def test_oversized_body_is_refused_while_still_being_sent(served):
    """A chunked 200 MiB body: the 413 arrives while the client is still sending."""
    port = int(served.base.rsplit(":", 1)[1])
    chunk = b"a" * 65536
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall((HEAD + "Transfer-Encoding: chunked\r\n\r\n").encode())
        sock.sendall(b'15\r\n{"messages": [{"ro":"\r\n')
        while sent < BIG and not select.select([sock], [], [], 0)[0]:
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except OSError:  # the server closed its side: its answer is waiting
                break
            sent += len(chunk)
        response = _read_response(sock)
    assert response.startswith(b"HTTP/1.1 413"), response[:200]
    assert b'"request_too_large"' in response
    assert sent < BIG // 10, sent
    assert httpx.get(served.base + "/health", timeout=10).status_code == 200


def test_announced_oversized_body_is_refused_unread(served):
    """Content-Length says 200 MiB and nothing follows: the answer does not wait for the body."""
    port = int(served.base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall((HEAD + f"Content-Length: {BIG}\r\n\r\n").encode())
        response = _read_response(sock)
    assert response.startswith(b"HTTP/1.1 413"), response[:200]
    assert b"connection: close" in response.lower()


# --- the engine's own bound, for callers other than the OpenAI adapter ---------------------------

ENGINE_SCRIPT = r"""
import asyncio, json, os, sys, time
from pathlib import Path
from mlxk.engine.batch import Engine
from mlxk.engine.bridge import RequestHandle
from mlxk.engine.requests import GenerationRequest, ModelTarget, SamplingParams

model_dir, vocab = Path(sys.argv[1]), int(sys.argv[2])
engine = Engine(ModelTarget(str(model_dir), model_dir, "demo"), max_tokens=4, prefix_cache=None)
engine.start()
while engine.state == "loading":
    time.sleep(0.05)

async def run(params):
    h = RequestHandle(asyncio.get_running_loop(), GenerationRequest(
        None, params, messages=[{"role": "user", "content": "Hi"}]))
    engine.submit(h)
    while True:
        ev = await asyncio.wait_for(h.next(), 120)
        if ev.kind == "error":
            return [ev.error.status, ev.error.param]
        if ev.kind == "finish":
            return ["finish", ev.finish_reason]

async def main():
    try:
        return [await run(SamplingParams(max_tokens=2, temperature=0.0, logprobs=True, top_logprobs=vocab + 1)),
                await run(SamplingParams(max_tokens=2, temperature=0.5, top_k=vocab + 1)),
                await run(SamplingParams(max_tokens=2, temperature=0.0, logprobs=True, top_logprobs=vocab))]
    finally:
        engine.stop()
        while engine.alive:  # an mlx thread still running at exit aborts the process
            time.sleep(0.05)

print(json.dumps(asyncio.run(main())), flush=True)
os._exit(0)  # skip interpreter teardown: native worker threads still joinable there abort the process
"""


def test_engine_refuses_counts_past_the_vocabulary(serve_model_dir, vocab):
    """The wire caps top_logprobs at 20; the engine bounds any caller by the loaded vocabulary."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", ENGINE_SCRIPT, str(serve_model_dir), str(vocab)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    first, second, third = json.loads(proc.stdout.strip().splitlines()[-1])
    assert first == [400, "top_logprobs"] and second == [400, "top_k"], (first, second)
    assert third == ["finish", "length"], third
