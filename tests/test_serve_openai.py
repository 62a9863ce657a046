"""``mlxk serve`` through the official openai client, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time

import pytest

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx2")

KEY = "sk-test"
CHAT = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hello to the world."}]


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=served.base + "/v1", api_key=KEY, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def model_id(client):
    return client.models.list().data[0].id


def chat_text(client, model, messages=CHAT, **kw) -> str:
    r = client.chat.completions.create(model=model, messages=messages, temperature=0, **kw)
    return r.choices[0].message.content


def stream_text(client, model, messages=CHAT, **kw) -> tuple[str, list]:
    chunks = list(client.chat.completions.create(model=model, messages=messages, temperature=0, stream=True, **kw))
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices), chunks


def test_models_list(served, client):
    models = client.models.list().data
    assert models and all(m.context_length for m in models)
    raw = httpx.get(served.base + "/v1/models", headers={"Authorization": f"Bearer {KEY}"}).text
    assert '"/' not in raw  # never an absolute path


def test_chat_non_stream_usage_and_length(client, model_id):
    r = client.chat.completions.create(model=model_id, messages=CHAT, temperature=0, max_tokens=8)
    assert r.object == "chat.completion"
    assert r.choices[0].finish_reason == "length"
    assert r.choices[0].message.role == "assistant"
    assert isinstance(r.choices[0].message.content, str) and r.choices[0].message.content
    assert r.usage.completion_tokens == 8
    assert r.usage.prompt_tokens > 5
    assert r.usage.total_tokens == r.usage.prompt_tokens + 8
    assert r.usage.prompt_tokens_details.cached_tokens >= 0


def test_chat_stream_equals_non_stream(client, model_id):
    full = chat_text(client, model_id, max_tokens=24)
    text, chunks = stream_text(client, model_id, max_tokens=24, stream_options={"include_usage": True})
    assert text == full
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 24
    assert all(c.object == "chat.completion.chunk" for c in chunks)


def test_completions_stream_and_non_stream(client, model_id):
    r = client.completions.create(model=model_id, prompt="Hello world", max_tokens=12, temperature=0)
    assert r.object == "text_completion" and r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 12
    parts = list(client.completions.create(model=model_id, prompt="Hello world", max_tokens=12, temperature=0,
                                           stream=True))
    assert "".join(c.choices[0].text for c in parts if c.choices) == r.choices[0].text


def test_stop_string(client, model_id):
    full = chat_text(client, model_id, max_tokens=24)
    assert len(full) > 4
    stop = full[2:5]
    first = full.find(stop)
    r = client.chat.completions.create(model=model_id, messages=CHAT, temperature=0, max_tokens=24, stop=[stop])
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].message.content == full[:first]
    text, _ = stream_text(client, model_id, max_tokens=24, stop=stop)
    assert text == full[:first]


def test_seed_is_reproducible(client, model_id):
    kw = dict(model=model_id, messages=CHAT, temperature=1.0, top_p=0.95, max_tokens=16, seed=42)
    a = client.chat.completions.create(**kw).choices[0].message.content
    b = client.chat.completions.create(**kw).choices[0].message.content
    assert a == b


def test_logprobs(client, model_id):
    r = client.chat.completions.create(model=model_id, messages=CHAT, temperature=0, max_tokens=4,
                                       logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == 4
    assert all(len(c.top_logprobs) == 3 and c.logprob <= 0 for c in content)
    # greedy: the chosen token is the most likely one
    assert all(abs(c.logprob - c.top_logprobs[0].logprob) < 1e-4 for c in content)


# --- batching and disconnects ----------------------------------------------------------

PROMPTS = ["Hello world", "The quick brown fox", "To be or not", "All that glitters", "Local models run",
           "Caches, batches, tokens"]


def _health(served) -> dict:
    return httpx.get(served.base + "/health", timeout=5).json()


def test_batching_equals_solo(served, client, model_id, serve_is_demo):
    n_tok = 24 if serve_is_demo else 96
    solo = [client.completions.create(model=model_id, prompt=p, max_tokens=n_tok, temperature=0).choices[0].text
            for p in PROMPTS]
    results: dict[int, str] = {}
    seen: list[int] = []
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            seen.append(_health(served)["active_sequences"])

    def run(i):
        parts = client.completions.create(model=model_id, prompt=PROMPTS[i], max_tokens=n_tok, temperature=0,
                                          stream=True)
        results[i] = "".join(c.choices[0].text for c in parts if c.choices)

    poller = threading.Thread(target=poll)
    poller.start()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(PROMPTS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    stop.set()
    poller.join()
    assert [results.get(i) for i in range(len(PROMPTS))] == solo
    metrics = httpx.get(served.base + "/metrics").text
    avg = float(next(line.split()[1] for line in metrics.splitlines() if line.startswith("mlxk_batch_size_avg")))
    assert max(seen) > 1 or avg > 1.0, (seen, avg)
    assert max(seen) > 1, seen


def test_disconnect_frees_sequences(served, model_id, serve_is_demo):
    headers = {"Authorization": f"Bearer {KEY}"}
    done: dict[int, str] = {}

    def run(i):
        body = {"model": model_id, "prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": 24 if serve_is_demo else 400,
                "temperature": 0, "stream": True}
        with httpx.Client(timeout=60) as c, c.stream("POST", served.base + "/v1/completions", json=body,
                                                     headers=headers) as r:
            lines = r.iter_lines()
            if i % 2:
                for line in lines:
                    if line.startswith("data: {"):
                        break
                done[i] = "closed"
                return  # closes the connection mid-stream
            last = ""
            for line in lines:
                if line:
                    last = line
            done[i] = last

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert all(done[i] == "data: [DONE]" for i in range(0, 8, 2)), done
    deadline = time.time() + 15
    while time.time() < deadline and _health(served)["active_sequences"]:
        time.sleep(0.1)
    assert _health(served)["active_sequences"] == 0


def test_non_stream_disconnect_frees_sequence(served, model_id):
    body = {"model": model_id, "prompt": "Hello world", "max_tokens": 1900, "temperature": 0}
    with pytest.raises(httpx.TimeoutException):
        httpx.post(served.base + "/v1/completions", json=body, headers={"Authorization": f"Bearer {KEY}"},
                   timeout=0.4)
    deadline = time.time() + 5
    while time.time() < deadline and _health(served)["active_sequences"]:
        time.sleep(0.05)
    assert _health(served)["active_sequences"] == 0


# --- errors -------------------------------------------------------------------------------

def test_bad_api_key(served, model_id):
    bad = openai.OpenAI(base_url=served.base + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as exc:
        bad.chat.completions.create(model=model_id, messages=CHAT)
    assert exc.value.status_code == 401
    assert httpx.get(served.base + "/health").status_code == 200  # health needs no key


def test_unknown_model_404(client):
    with pytest.raises(openai.NotFoundError) as exc:
        client.chat.completions.create(model="no-such-org/no-such-model", messages=CHAT)
    assert exc.value.body["code"] == "model_not_found"
    assert exc.value.body["param"] == "model"


@pytest.mark.parametrize("field,value", [("temperature", 7), ("max_tokens", 0), ("max_tokens", 10**9),
                                         ("top_p", -1), ("messages", []), ("messages", "hi"), ("stop", 5),
                                         ("n", 3), ("top_logprobs", 50)])
def test_invalid_parameters_400(client, model_id, field, value):
    kw = {"model": model_id, "messages": CHAT, field: value}
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(**kw)
    assert exc.value.body["param"] == field


def test_bad_role_400(client, model_id):
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model=model_id, messages=[{"role": "wizard", "content": "x"}])
    assert "role" in exc.value.body["param"]


def test_prompt_longer_than_context(client, model_id):
    ctx = next(m.context_length for m in client.models.list().data if m.id == model_id)
    with pytest.raises(openai.BadRequestError) as exc:
        client.completions.create(model=model_id, prompt=[5] * (ctx + 10), max_tokens=4)
    assert exc.value.body["code"] == "context_length_exceeded"


@pytest.mark.parametrize("payload", [b"{not json", b"[1, 2]", b'{"messages": '])
def test_malformed_json_400(served, payload):
    r = httpx.post(served.base + "/v1/chat/completions", content=payload,
                   headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_json"


def test_unknown_path_404_openai_shape(served):
    r = httpx.get(served.base + "/v1/nothing")
    assert r.status_code == 404 and "error" in r.json()


def test_health_and_metrics(served):
    h = _health(served)
    assert h["status"] == "ok" and h["active_sequences"] == 0 and "uptime" in h and "queued" in h
    text = httpx.get(served.base + "/metrics").text
    assert "mlxk_requests_total" in text and 'mlxk_ttft_seconds_bucket{le="+Inf"}' in text
    assert json.dumps(h).find('"/') < 0
