"""OpenAI Responses (``POST /v1/responses``) through the official ``openai`` client, real HTTP, demo model."""

from __future__ import annotations

import json

import pytest

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx2")

KEY = "sk-test"  # the ``served`` fixture's key
ASK = "Name three colors."
WEATHER = {"type": "function", "name": "get_weather", "description": "Current weather of a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=served.base + "/v1", api_key=KEY, max_retries=0, timeout=120)


def create(client, **kw):
    return client.responses.create(**{"model": "", "temperature": 0, "input": ASK, "max_output_tokens": 12, **kw})


def test_text_usage_and_max_tokens(client):
    r = create(client, max_output_tokens=5, instructions="You are brief.")
    assert r.object == "response" and r.id.startswith("resp_")
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
    assert r.output_text and r.usage.output_tokens == 5 and r.usage.input_tokens > 5


def test_stream_events_in_order_and_same_text(client):
    whole = create(client)
    events = list(create(client, stream=True))
    kinds = [e.type for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          f"response.{whole.status}"]
    assert set(kinds[4:-4]) == {"response.output_text.delta"}
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e for e in events if e.type == "response.output_text.delta"]
    assert all(d.item_id == deltas[0].item_id and d.output_index == 0 and d.content_index == 0 for d in deltas)
    assert "".join(d.delta for d in deltas) == whole.output_text
    assert events[-1].response.output_text == whole.output_text
    assert events[-1].response.usage.output_tokens == whole.usage.output_tokens


def test_function_call_round_trip_with_required_tool(client):
    r = create(client, input="What is the weather in Paris?", tools=[WEATHER], tool_choice="required",
               max_output_tokens=40)
    calls = [o for o in r.output if o.type == "function_call"]
    assert calls and calls[0].name == "get_weather" and isinstance(json.loads(calls[0].arguments), dict)
    streamed = list(create(client, input="What is the weather in Paris?", tools=[WEATHER], tool_choice="required",
                           max_output_tokens=40, stream=True))
    kinds = [e.type for e in streamed]
    assert "response.function_call_arguments.delta" in kinds and "response.function_call_arguments.done" in kinds
    done = next(e for e in streamed if e.type == "response.function_call_arguments.done")
    assert done.arguments == calls[0].arguments
    history = [{"role": "user", "content": "What is the weather in Paris?"},
               {"type": "function_call", "call_id": calls[0].call_id, "name": "get_weather",
                "arguments": calls[0].arguments},
               {"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny, 21 C"}]
    answer = create(client, input=history, tools=[WEATHER], max_output_tokens=8)
    assert answer.output[0].type == "message" and answer.output_text


def test_codex_namespace_tools_are_flattened(client):
    group = {"type": "namespace", "name": "shell_tools", "tools": [WEATHER]}
    r = create(client, input="What is the weather in Paris?", tools=[group], tool_choice="required",
               max_output_tokens=40, extra_body={})
    assert any(o.type == "function_call" and o.name == "get_weather" for o in r.output)


def test_stop_extension(client):
    """The Responses API has no stop field; this server takes chat's ``stop`` as an extension."""
    full = create(client, max_output_tokens=16).output_text
    words = [w for w in full.split() if len(w) > 2]
    stop = words[len(words) // 2]
    assert create(client, max_output_tokens=16, extra_body={"stop": [stop]}).output_text == full[:full.index(stop)]


def test_prefix_cache_hits_on_the_second_turn(client):
    long_rules = " ".join(f"Rule {i}: answer in one short sentence." for i in range(30))
    create(client, instructions=long_rules, input="Hi.", max_output_tokens=3)
    again = create(client, instructions=long_rules,
                   input=[{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello."},
                          {"role": "user", "content": "Again."}], max_output_tokens=3)
    assert again.usage.input_tokens_details.cached_tokens > again.usage.input_tokens // 2


def test_errors(served, client):
    with pytest.raises(openai.BadRequestError) as e:
        create(client, previous_response_id="resp_123")
    assert e.value.body["param"] == "previous_response_id" and "stores no responses" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError) as e:
        create(client, input=[{"role": "user", "content": [{"type": "input_image", "image_url": "data:,"}]}])
    assert "images" in e.value.body["message"]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=served.base + "/v1", api_key="wrong", max_retries=0).responses.create(
            model="", input="hi")
    with pytest.raises(openai.NotFoundError):
        create(client, model="no-such-model")
    r = httpx.post(served.base + "/v1/responses", headers={"Authorization": f"Bearer {KEY}"}, json={"model": ""})
    assert r.status_code == 400 and r.json()["error"]["param"] == "input"


def test_chat_completions_tool_calls_stream_and_not(client):
    """chat/completions gets the same calls: ``tool_calls`` whole, and as streamed deltas."""
    tool = {"type": "function", "function": {k: v for k, v in WEATHER.items() if k != "type"}}
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    r = client.chat.completions.create(model="", messages=ask, tools=[tool], tool_choice="required", temperature=0,
                                       max_tokens=40)
    call = r.choices[0].message.tool_calls[0]
    assert r.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather"
    chunks = list(client.chat.completions.create(model="", messages=ask, tools=[tool], tool_choice="required",
                                                 temperature=0, max_tokens=40, stream=True))
    deltas = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert deltas[0].index == 0 and deltas[0].function.name == "get_weather"
    assert "".join(d.function.arguments or "" for d in deltas) == call.function.arguments
    assert not any(c.choices[0].delta.content for c in chunks if c.choices)  # no call markup as text
