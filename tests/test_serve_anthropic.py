"""Anthropic Messages on ``mlxk serve`` through the official ``anthropic`` client, real HTTP, demo model."""

from __future__ import annotations

import json

import pytest

anthropic = pytest.importorskip("anthropic")
httpx = pytest.importorskip("httpx2")

from tests.serve_fixture import ServerProc  # noqa: E402

KEY = "sk-ant-test"
ALIAS = "claude-sonnet-5-5"
ASK = [{"role": "user", "content": "Name three colors."}]
WEATHER = {"name": "get_weather", "description": "Current weather of a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


@pytest.fixture(scope="module")
def server(serve_model_dir, tmp_path_factory):
    srv = ServerProc(serve_model_dir, tmp_path_factory.mktemp("anthropic"), "--alias", f"{ALIAS}={serve_model_dir}",
                     env={"MLXK_API_KEY": KEY}).wait_ready()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server):
    return anthropic.Anthropic(base_url=server.base, api_key=KEY, max_retries=0, timeout=120)


def create(client, **kw):
    return client.messages.create(model=ALIAS, extra_body={"temperature": 0}, **{"max_tokens": 12, "messages": ASK, **kw})


def text_of(msg) -> str:
    return "".join(b.text for b in msg.content if b.type == "text")


def test_text_max_tokens_and_usage(client):
    r = create(client, max_tokens=6)
    assert r.type == "message" and r.role == "assistant" and r.id.startswith("msg_")
    assert r.content[0].type == "text" and r.content[0].text
    assert r.stop_reason == "max_tokens" and r.usage.output_tokens == 6
    assert r.model  # the served model's name (the alias resolved)


def test_stream_event_sequence_and_same_text(client):
    whole = create(client)
    full = text_of(whole)
    events = list(create(client, stream=True))  # the raw server-sent events, in order
    with client.messages.stream(model=ALIAS, max_tokens=12, messages=ASK, extra_body={"temperature": 0}) as s:
        final = s.get_final_message()
    kinds = [e.type for e in events]
    assert kinds[0] == "message_start" and kinds[1] == "content_block_start"
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(kinds[2:-3]) == {"content_block_delta"}
    streamed = "".join(e.delta.text for e in events if e.type == "content_block_delta")
    assert streamed == full == text_of(final)
    delta = next(e for e in events if e.type == "message_delta")
    assert delta.delta.stop_reason == whole.stop_reason and delta.usage.output_tokens == whole.usage.output_tokens


def test_stop_sequence(client):
    full = text_of(create(client, max_tokens=16))
    words = [w for w in full.split() if len(w) > 2]
    assert words, full
    stop = words[len(words) // 2]
    r = create(client, max_tokens=16, stop_sequences=[stop])
    assert r.stop_reason == "stop_sequence" and r.stop_sequence == stop
    assert text_of(r) == full[:full.index(stop)]


def test_usage_agrees_with_count_tokens(client):
    system = "You are brief."
    counted = client.messages.count_tokens(model=ALIAS, system=system, messages=ASK).input_tokens
    r = create(client, system=system, max_tokens=2)
    assert counted > 5
    assert r.usage.input_tokens + r.usage.cache_read_input_tokens == counted
    with_tools = client.messages.count_tokens(model=ALIAS, system=system, messages=ASK, tools=[WEATHER]).input_tokens
    assert with_tools > counted + 20  # the tool's description is in the prompt


def test_billing_header_does_not_defeat_the_prefix_cache(client):
    """Claude Code's per-request billing line changes every time; the second turn still hits."""
    rules = " ".join(f"Rule {i}: keep answers short and precise." for i in range(40))
    first = [{"role": "user", "content": "Say hi."}]
    r1 = create(client, system=f"x-anthropic-billing-header: cc_version=2.1; cch=1111;\n{rules}", messages=first,
                max_tokens=4)
    second = first + [{"role": "assistant", "content": text_of(r1)}, {"role": "user", "content": "Again."}]
    system2 = [{"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1; cch=2222;"},
               {"type": "text", "text": rules}]
    r2 = client.messages.create(model=ALIAS, extra_body={"temperature": 0}, max_tokens=4, messages=second,
                                system=[{"type": "text", "text": system2[0]["text"] + "\n" + rules}])
    counted = client.messages.count_tokens(model=ALIAS, system=rules, messages=second).input_tokens
    assert r2.usage.input_tokens + r2.usage.cache_read_input_tokens == counted  # the line is not in the prompt
    assert r2.usage.cache_read_input_tokens > r1.usage.input_tokens // 2


def test_tool_history_round_trips(client):
    """A tool_use and its tool_result reach the model (in the fallback format) and it answers in text."""
    history = ASK[:0] + [{"role": "user", "content": "Weather in Paris?"},
                         {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                                                            "input": {"city": "Paris"}}]},
                         {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                                       "content": "sunny, 21 C"}]}]
    without = client.messages.count_tokens(model=ALIAS, messages=history[:1], tools=[WEATHER]).input_tokens
    counted = client.messages.count_tokens(model=ALIAS, messages=history, tools=[WEATHER]).input_tokens
    assert counted > without + 10
    r = create(client, messages=history, tools=[WEATHER], max_tokens=8)
    assert r.stop_reason in ("max_tokens", "end_turn", "tool_use")
    assert r.usage.input_tokens + r.usage.cache_read_input_tokens == counted


def test_required_tool_round_trip(client):
    """tool_choice any: the fallback prompt demands a call (issue 13's grammar will also force it)."""
    r = create(client, tools=[WEATHER], tool_choice={"type": "any"}, max_tokens=40,
               messages=[{"role": "user", "content": "What is the weather in Paris?"}])
    assert r.stop_reason == "tool_use"
    call = next(b for b in r.content if b.type == "tool_use")
    assert call.name == "get_weather" and isinstance(call.input, dict)
    r2 = create(client, tools=[WEATHER], max_tokens=8, messages=[
        {"role": "user", "content": "What is the weather in Paris?"}, {"role": "assistant", "content": r.content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}]}])
    assert r2.content and r2.stop_reason in ("end_turn", "max_tokens")


def test_mid_conversation_system_message(server, client):
    """Claude Code (beta mid-conversation-system) sends {"role": "system"} inside messages: it reaches the prompt."""
    note = "Available agent types: general-purpose, Explore, Plan."
    history = [{"role": "user", "content": [{"type": "text", "text": "Say hi."}]}, {"role": "system", "content": note}]
    headers = {"Authorization": f"Bearer {KEY}", "anthropic-beta": "mid-conversation-system-2026-04-07"}
    plain = client.messages.count_tokens(model=ALIAS, messages=history[:1]).input_tokens
    r = httpx.post(server.base + "/v1/messages/count_tokens?beta=true", headers=headers, timeout=60,
                   json={"model": ALIAS, "messages": history})
    assert r.status_code == 200 and r.json()["input_tokens"] > plain + 8
    r = httpx.post(server.base + "/v1/messages?beta=true", headers=headers, timeout=60,
                   json={"model": ALIAS, "max_tokens": 2, "messages": history})
    assert r.status_code == 200 and r.json()["type"] == "message"
    bad = [*history[:1], {"role": "system", "content": [{"type": "tool_use", "id": "t", "name": "x", "input": {}}]}]
    r = httpx.post(server.base + "/v1/messages", headers=headers, timeout=60,
                   json={"model": ALIAS, "max_tokens": 2, "messages": bad})
    assert r.status_code == 400 and r.json()["error"]["message"].startswith("messages[1].content[0]: a system message")


def test_beta_query_bearer_auth_and_headers(server):
    r = httpx.post(server.base + "/v1/messages?beta=true", timeout=60,
                   headers={"Authorization": f"Bearer {KEY}", "anthropic-version": "2023-06-01",
                            "anthropic-beta": "interleaved-thinking-2025-05-14"},
                   json={"model": ALIAS, "max_tokens": 2, "messages": ASK})
    assert r.status_code == 200 and r.json()["type"] == "message"


def test_errors_in_anthropic_shape(server, client):
    bad_key = anthropic.Anthropic(base_url=server.base, api_key="wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as e:
        bad_key.messages.create(model=ALIAS, max_tokens=2, messages=ASK)
    assert e.value.body["type"] == "error" and e.value.body["error"]["type"] == "authentication_error"
    with pytest.raises(anthropic.BadRequestError) as e:
        client.messages.create(model=ALIAS, max_tokens=2, messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}]}])
    assert e.value.body["error"]["type"] == "invalid_request_error" and "images" in e.value.body["error"]["message"]
    with pytest.raises(anthropic.NotFoundError) as e:
        client.messages.create(model="claude-opus-unknown", max_tokens=2, messages=ASK)
    assert e.value.body["error"]["type"] == "not_found_error"
    r = httpx.post(server.base + "/v1/messages", headers={"x-api-key": KEY}, json={"model": ALIAS, "messages": ASK})
    assert r.status_code == 400 and r.json() == {"type": "error", "error": {
        "type": "invalid_request_error", "message": "max_tokens: Field required"}}


def test_models_list_the_alias(server):
    ids = [m["id"] for m in httpx.get(server.base + "/v1/models", headers={"x-api-key": KEY}).json()["data"]]
    assert ALIAS in ids
    spec = httpx.get(server.base + "/openapi.json").json()
    assert "/v1/messages" in spec["paths"] and "MessagesRequest" in spec["components"]["schemas"]
    assert json.dumps(spec).count("max_tokens") >= 2
