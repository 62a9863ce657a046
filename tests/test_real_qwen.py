"""The real Qwen2.5-Coder-0.5B (a K-quant GGUF imported by ``mlxk convert``) behind ``mlxk serve``.

Its tokenizer has ``<tool_call>`` as one added token (151657), the case that used to fail
every forced call with a 500. Forced calls go through all four protocols with their
official clients at temperature 1.0, ten each, sent at once (one continuous batch); every
answer must be a call whose arguments validate against the tool's schema.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import anthropic
import jsonschema
import openai
import pytest
from google import genai
from google.genai import types

from tests.serve_fixture import ServerProc

KEY = "sk-qwen"
ASK = "What is the weather like in Paris right now? Answer with the tool."
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"],
    "additionalProperties": False,
}
NAME, DESCRIPTION = "get_weather", "Current weather of a city"
RUNS = 10


@pytest.fixture(scope="module")
def server(qwen_model_dir, tmp_path_factory):
    srv = ServerProc(qwen_model_dir, tmp_path_factory.mktemp("qwen"), "--alias", f"*={qwen_model_dir}",
                     env={"MLXK_API_KEY": KEY}).wait_ready(timeout=300)
    yield srv
    srv.stop()


def _all_at_once(fn) -> list:
    with ThreadPoolExecutor(RUNS) as pool:
        return list(pool.map(lambda i: fn(i), range(RUNS)))


def _valid(args) -> dict:
    args = json.loads(args) if isinstance(args, str) else dict(args)
    jsonschema.validate(args, SCHEMA)
    return args


def test_forced_calls_openai_chat(server):
    client = openai.OpenAI(base_url=server.base + "/v1", api_key=KEY, timeout=600, max_retries=0)
    tool = {"type": "function", "function": {"name": NAME, "description": DESCRIPTION, "parameters": SCHEMA}}

    def one(i):
        return client.chat.completions.create(model="qwen", messages=[{"role": "user", "content": ASK}],
                                              tools=[tool], tool_choice="required", temperature=1.0,
                                              seed=i, max_tokens=60)

    for r in _all_at_once(one):
        calls = r.choices[0].message.tool_calls
        assert r.choices[0].finish_reason == "tool_calls" and calls, r
        assert calls[0].function.name == NAME
        _valid(calls[0].function.arguments)


def test_forced_calls_responses(server):
    client = openai.OpenAI(base_url=server.base + "/v1", api_key=KEY, timeout=600, max_retries=0)
    tool = {"type": "function", "name": NAME, "description": DESCRIPTION, "parameters": SCHEMA}

    def one(i):
        return client.responses.create(model="qwen", input=ASK, tools=[tool], tool_choice="required",
                                       temperature=1.0, max_output_tokens=60)

    for r in _all_at_once(one):
        calls = [o for o in r.output if o.type == "function_call"]
        assert calls, r
        assert calls[0].name == NAME
        _valid(calls[0].arguments)


def test_forced_calls_anthropic(server):
    client = anthropic.Anthropic(base_url=server.base, api_key=KEY, timeout=600, max_retries=0)
    tool = {"name": NAME, "description": DESCRIPTION, "input_schema": SCHEMA}

    def one(i):
        return client.messages.create(model="claude-sonnet-5-5", max_tokens=60, tools=[tool],
                                      tool_choice={"type": "any"}, messages=[{"role": "user", "content": ASK}],
                                      extra_body={"temperature": 1.0})  # this SDK no longer types it

    for r in _all_at_once(one):
        calls = [b for b in r.content if b.type == "tool_use"]
        assert r.stop_reason == "tool_use" and calls, r
        assert calls[0].name == NAME
        _valid(calls[0].input)


def test_forced_calls_gemini(server):
    client = genai.Client(api_key=KEY, http_options=types.HttpOptions(base_url=server.base, timeout=600_000))
    decl = types.FunctionDeclaration(name=NAME, description=DESCRIPTION, parameters_json_schema=SCHEMA)
    cfg = types.GenerateContentConfig(
        temperature=1.0, max_output_tokens=60, tools=[types.Tool(function_declarations=[decl])],
        tool_config=types.ToolConfig(function_calling_config=types.FunctionCallingConfig(mode="ANY")))

    def one(i):
        return client.models.generate_content(model="gemini-2.5-flash", contents=ASK, config=cfg)

    for r in _all_at_once(one):
        calls = r.function_calls
        assert calls, r
        assert calls[0].name == NAME
        _valid(calls[0].args)


def test_auto_mode_call_comes_back_as_a_call(server):
    """The model opens ``<tool_call>`` on its own (auto): the client gets a call, never the markup as text."""
    client = openai.OpenAI(base_url=server.base + "/v1", api_key=KEY, timeout=600, max_retries=0)
    tool = {"type": "function", "function": {"name": NAME, "description": DESCRIPTION, "parameters": SCHEMA}}
    r = client.chat.completions.create(model="qwen", messages=[{"role": "user", "content": ASK}], tools=[tool],
                                       tool_choice="auto", temperature=0, max_tokens=60)
    msg = r.choices[0].message
    assert "<tool_call>" not in (msg.content or "")
    assert msg.tool_calls, msg
    assert msg.tool_calls[0].function.name == NAME
    _valid(msg.tool_calls[0].function.arguments)
    assert r.choices[0].finish_reason == "tool_calls"
