"""Structured output and forced tool calls through ``mlxk serve``: the official openai client,
real HTTP on 127.0.0.1, the demo model (engine/constraints.py, llguidance)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

openai = pytest.importorskip("openai")
jsonschema = pytest.importorskip("jsonschema")

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "color": {"enum": ["red", "green", "blue"]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "minItems": 1, "maxItems": 3},
        "address": {"type": "object",
                    "properties": {"city": {"type": "string", "maxLength": 24},
                                   "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
                    "required": ["city", "zip"], "additionalProperties": False},
    },
    "required": ["name", "age", "color", "tags", "address"],
    "additionalProperties": False,
}
ASK = [{"role": "user", "content": "Describe a person as JSON: name, age, favourite color, tags and address."}]
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30},
                                                    "unit": {"enum": ["celsius", "fahrenheit"]}},
                   "required": ["city", "unit"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "Current time in a time zone",
    "parameters": {"type": "object", "properties": {"zone": {"type": "string", "maxLength": 30}},
                   "required": ["zone"]}}}
QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=served.base + "/v1", api_key="sk-test", max_retries=0, timeout=300)


@pytest.fixture(scope="module")
def model_id(client):
    return client.models.list().data[0].id


def person_format(name: str = "person") -> dict:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": PERSON, "strict": True}}


def conforms(text: str | None, schema: dict) -> bool:
    try:
        jsonschema.validate(json.loads(text or ""), schema)
    except (ValueError, jsonschema.ValidationError):
        return False
    return True


def test_schema_answers_validate_and_free_answers_mostly_do_not(client, model_id):
    """20 answers at temperature 1.0 with the schema all validate; the same 20 without it mostly do not."""
    def ask(constrained: bool):
        extra = {"response_format": person_format()} if constrained else {}
        r = client.chat.completions.create(model=model_id, messages=ASK, temperature=1.0, max_tokens=160, **extra)
        return r.choices[0]

    with ThreadPoolExecutor(40) as pool:  # one batch: constrained and free rows decode side by side
        answers = list(pool.map(ask, [True] * 20 + [False] * 20))
    constrained, free = answers[:20], answers[20:]
    bad = [c.message.content for c in constrained if not conforms(c.message.content, PERSON)]
    assert not bad, bad
    assert all(c.finish_reason == "stop" for c in constrained)
    assert sum(conforms(c.message.content, PERSON) for c in free) <= 5


def test_json_object_is_an_object(client, model_id):
    # seeded: unseeded sampling at 1.0 sometimes writes an object longer than max_tokens
    r = client.chat.completions.create(model=model_id, messages=ASK, temperature=1.0, max_tokens=120, seed=3,
                                       response_format={"type": "json_object"})
    assert r.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(r.choices[0].message.content), dict)


def test_named_tool_call_then_the_result_gets_a_text_answer(client, model_id):
    r = client.chat.completions.create(model=model_id, messages=QUESTION, tools=[TIME, WEATHER], temperature=1.0,
                                       max_tokens=80, tool_choice={"type": "function", "function": {"name": "get_weather"}})
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.id.startswith("call_") and call.type == "function" and call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])
    follow = QUESTION + [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump(exclude_none=True)]},
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 21, "sky": "clear"})},
    ]
    r2 = client.chat.completions.create(model=model_id, messages=follow, tools=[TIME, WEATHER], tool_choice="none",
                                        temperature=0, max_tokens=40)
    assert r2.choices[0].finish_reason in ("stop", "length")
    assert not r2.choices[0].message.tool_calls
    assert r2.choices[0].message.content.strip()


def test_named_tool_call_streams_as_tool_call_chunks(client, model_id):
    stream = client.chat.completions.create(model=model_id, messages=QUESTION, tools=[TIME, WEATHER], temperature=1.0,
                                            max_tokens=80, stream=True,
                                            tool_choice={"type": "function", "function": {"name": "get_weather"}})
    calls, text, finish = [], "", None
    for chunk in stream:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        text += delta.content or ""
        calls += delta.tool_calls or []
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls" and text == ""
    (call,) = calls
    assert call.index == 0 and call.id.startswith("call_") and call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])


def test_required_calls_one_of_the_tools(client, model_id):
    r = client.chat.completions.create(model=model_id, messages=QUESTION, tools=[TIME, WEATHER], temperature=1.0,
                                       max_tokens=80, tool_choice="required")
    assert r.choices[0].finish_reason == "tool_calls"
    (call,) = r.choices[0].message.tool_calls
    tool = {"get_weather": WEATHER, "get_time": TIME}[call.function.name]
    jsonschema.validate(json.loads(call.function.arguments), tool["function"]["parameters"])


def test_tool_choice_none_never_calls(client, model_id):
    r = client.chat.completions.create(model=model_id, messages=QUESTION, tools=[WEATHER], tool_choice="none",
                                       temperature=1.0, max_tokens=40)
    assert not r.choices[0].message.tool_calls and r.choices[0].finish_reason in ("stop", "length")


def test_mixed_batch_of_constrained_and_free_streams(client, model_id):
    """4 constrained and 4 free streams at once: every one finishes, the constrained ones valid."""
    def stream(i: int):
        extra = {"response_format": person_format()} if i % 2 == 0 else {}
        s = client.chat.completions.create(model=model_id, messages=ASK, temperature=1.0, max_tokens=160, stream=True,
                                           **extra)
        text, finish = "", None
        for chunk in s:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
                finish = chunk.choices[0].finish_reason or finish
        return i, text, finish

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(stream, range(8)))
    for i, text, finish in results:
        if i % 2 == 0:
            assert finish == "stop" and conforms(text, PERSON), text
        else:
            assert finish in ("stop", "length") and text


@pytest.mark.parametrize("extra,param", [
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "foo"}}}},
     "response_format.json_schema.schema"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"not": {"type": "string"}}}}},
     "response_format.json_schema.schema"),
    ({"response_format": {"type": "yaml"}}, "response_format.type"),
    ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "get_stock"}}}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
    ({"tools": [WEATHER, {"type": "function", "function": {"name": "bad", "parameters": {"type": "object",
                                                                                    "properties": 3}}}]},
     "tools[1].function.parameters"),
])
def test_bad_structured_input_is_a_400_naming_the_field(client, model_id, extra, param):
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model=model_id, messages=ASK, max_tokens=8, **extra)
    assert exc.value.status_code == 400
    assert exc.value.body["param"] == param, exc.value.body


def test_server_still_answers_after_bad_input(client, model_id):
    """Nothing hangs: a refused schema leaves the engine serving."""
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=model_id, messages=ASK, max_tokens=8, response_format={
            "type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "#/nowhere"}}})
    r = client.chat.completions.create(model=model_id, messages=ASK, temperature=0, max_tokens=8)
    assert r.choices[0].finish_reason in ("stop", "length")


def test_logprobs_of_a_constrained_answer_are_json_numbers(client, model_id):
    """Tokens the grammar rules out have logprob -inf; the answer says -9999.0 (OpenAI's), never fails."""
    r = client.chat.completions.create(model=model_id, messages=ASK, temperature=0, max_tokens=12, logprobs=True,
                                       top_logprobs=5, response_format=person_format())
    content = r.choices[0].logprobs.content
    assert content and all(-9999.0 <= alt.logprob <= 0 for lp in content for alt in lp.top_logprobs)
    assert any(alt.logprob == -9999.0 for lp in content for alt in lp.top_logprobs)  # a forced token's alternatives
