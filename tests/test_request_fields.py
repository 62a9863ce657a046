"""The request-field rule (server/request_fields.py) and the Gemini models' two spellings,
without a server: the adapters' parse functions are pure (JSON in, GenerationRequest out).
The real-server counterparts with the official SDKs are in test_serve_request_fields.py."""

from __future__ import annotations

import logging
import re
from typing import Annotated, Any

import pytest
from pydantic import ConfigDict

from mlxk.engine.requests import EngineError
from mlxk.server import anthropic_api, gemini_api, openai_api, responses_api
from mlxk.server.request_fields import Ignored, Refused, Reviewed, more_than_one, review

TRIP = {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city", "days"]}
FREE = {"args", "response", "parametersJsonSchema", "responseJsonSchema", "labels", "enum", "required",
        "default"}  # free-form JSON values: their keys are data, not field names


def snake(obj: Any, free: bool = False) -> Any:
    """A Gemini body with every field name in its proto (snake_case) spelling."""
    if isinstance(obj, list):
        return [snake(v, free) for v in obj]
    if not isinstance(obj, dict) or free:
        return obj
    out = {}
    for k, v in obj.items():
        name = re.sub(r"(?<!^)([A-Z])", lambda m: "_" + m.group(1).lower(), k)
        if k == "properties":
            out[name] = {p: snake(s) for p, s in v.items()}
        else:
            out[name] = snake(v, k in FREE)
    return out


CAMEL = {
    "contents": [{"role": "user", "parts": [{"text": "Plan it."}]},
                 {"role": "model", "parts": [{"functionCall": {"name": "plan", "args": {"someKey": 1}, "id": "c1"}}]},
                 {"role": "user", "parts": [{"functionResponse": {"name": "plan", "id": "c1",
                                                                  "response": {"resultValue": "ok"}}}]}],
    "systemInstruction": {"parts": [{"text": "Be brief."}]},
    "tools": [{"functionDeclarations": [
        {"name": "plan", "description": "Plan a trip", "parametersJsonSchema": TRIP},
        {"name": "book", "parameters": {"type": "OBJECT", "propertyOrdering": ["toCity", "fromCity"],
                                        "required": ["fromCity"],
                                        "properties": {"fromCity": {"type": "STRING", "maxLength": 9},
                                                       "toCity": {"type": "STRING", "nullable": True},
                                                       "legs": {"type": "ARRAY", "minItems": 1,
                                                                "items": {"type": "INTEGER", "format": "int32"}},
                                                       "mode": {"anyOf": [{"type": "STRING"}, {"type": "NUMBER"}]}}}},
    ]}],
    "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["plan", "book"]}},
    "generationConfig": {"temperature": 0.5, "topP": 0.9, "topK": 3.0, "maxOutputTokens": 20, "seed": 7,
                         "stopSequences": ["END"], "candidateCount": 1, "responseMimeType": "application/json",
                         "responseJsonSchema": TRIP},
}


def _same(a, b) -> None:
    assert a.tools == b.tools and a.tool_choice == b.tool_choice and a.messages == b.messages
    assert a.params == b.params and a.output_format == b.output_format


def test_gemini_every_field_in_both_spellings():
    camel = gemini_api.parse(CAMEL, 100)
    assert "parameters_json_schema" in str(snake(CAMEL))  # the helper really renamed
    _same(camel, gemini_api.parse(snake(CAMEL), 100))
    assert camel.tool_choice == "required" and camel.tools[0]["function"]["parameters"] == TRIP
    assert camel.params.seed == 7 and camel.params.top_k == 3 and camel.params.stop == ["END"]
    book = camel.tools[1]["function"]["parameters"]
    assert book == {"type": "object", "required": ["fromCity"], "additionalProperties": False, "properties": {
        "toCity": {"type": ["string", "null"]}, "fromCity": {"type": "string", "maxLength": 9},
        "legs": {"type": "array", "minItems": 1, "items": {"type": "integer"}},
        "mode": {"anyOf": [{"type": "string"}, {"type": "number"}]}}}
    assert list(book["properties"])[:2] == ["toCity", "fromCity"]  # propertyOrdering
    assert camel.messages[2]["tool_calls"][0]["function"]["arguments"] == '{"someKey": 1}'  # args stay as sent
    count = gemini_api.parse_count(snake({"generateContentRequest": CAMEL}))
    _same(camel, count)


def test_gemini_mode_any_is_always_a_call():
    body = {"contents": CAMEL["contents"][:1], "tools": CAMEL["tools"]}
    one = gemini_api.parse({**body, "tool_config": {"function_calling_config": {
        "mode": "ANY", "allowed_function_names": ["book"]}}}, 10)
    assert one.tool_choice == "book" and [t["function"]["name"] for t in one.tools] == ["book"]
    for bad, param in (({"tools": []}, "toolConfig.functionCallingConfig.mode"),
                       ({"toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["nope"]}}},
                        "toolConfig.functionCallingConfig.allowedFunctionNames")):
        with pytest.raises(EngineError) as e:
            gemini_api.parse({**body, "toolConfig": {"functionCallingConfig": {"mode": "ANY"}}, **bad}, 10)
        assert e.value.status == 400 and e.value.param == param


@pytest.mark.parametrize("config,field", [
    ({"candidate_count": 2}, "generationConfig.candidateCount"),
    ({"responseModalities": ["TEXT", "AUDIO"]}, "generationConfig.responseModalities"),
    ({"presence_penalty": 0.5}, "generationConfig.presencePenalty"),
    ({"responseLogprobs": True}, "generationConfig.responseLogprobs"),
    ({"response_mime_type": "text/x.enum"}, "generationConfig.responseMimeType"),
])
def test_gemini_refuses_answer_changing_fields(config, field):
    with pytest.raises(EngineError) as e:
        gemini_api.parse({"contents": CAMEL["contents"][:1], "generation_config": config}, 10)
    assert e.value.status == 400 and e.value.param == field and field in e.value.message
    assert gemini_api.error_body(e.value)["error"]["status"] == "INVALID_ARGUMENT"


def test_neutral_values_are_not_refused():
    gemini_api.parse({"contents": CAMEL["contents"][:1], "generationConfig": {
        "candidateCount": 1, "presencePenalty": 0, "responseModalities": ["TEXT"], "responseLogprobs": False}}, 10)
    openai_api.parse_chat({"messages": [{"role": "user", "content": "x"}], "n": 1, "frequency_penalty": 0,
                           "logit_bias": {}, "modalities": ["text"]}, 10)
    openai_api.parse_completion({"prompt": "x", "echo": False, "best_of": 1, "suffix": ""}, 10)


@pytest.mark.parametrize("parse,body,field", [
    (openai_api.parse_chat, {"messages": [{"role": "user", "content": "x"}], "n": 2}, "n"),
    (openai_api.parse_chat, {"messages": [{"role": "user", "content": "x"}], "audio": {"voice": "alloy"}}, "audio"),
    (openai_api.parse_completion, {"prompt": "x", "suffix": "tail"}, "suffix"),
    (responses_api.parse, {"input": "x", "conversation": "conv_1"}, "conversation"),
    (anthropic_api.parse, {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}],
                           "mcp_servers": [{"url": "http://x"}]}, "mcp_servers"),
])
def test_each_protocol_refuses_with_the_field_named(parse, body, field):
    with pytest.raises(EngineError) as e:
        parse(body, 10)
    assert e.value.status == 400 and e.value.param == field and f"'{field}'" in e.value.message


class _Inner(Reviewed):
    model_config = ConfigDict(extra="ignore")
    kept: int | None = None
    hint: Annotated[Any, Ignored()] = None


class _Outer(Reviewed):
    model_config = ConfigDict(extra="allow")
    items: list[_Inner] = []
    count: Annotated[int | None, Refused("one only", more_than_one)] = None


def test_review_logs_ignored_and_unknown_once(caplog):
    req = _Outer.model_validate({"items": [{"kept": 1, "hint": "a", "odd": 1}, {"hint": "b", "odd": 2}],
                                 "count": 1, "extra_top": True})
    with caplog.at_level(logging.INFO, logger="mlxk.server"):
        names = review(req, "test")
    assert names == ["items[].hint", "items[].odd", "extra_top"]
    lines = [r.getMessage() for r in caplog.records if "ignored fields" in r.getMessage()]
    assert lines == ["test request: ignored fields: items[].hint, items[].odd, extra_top"]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mlxk.server"):
        assert review(_Outer.model_validate({"items": [{"kept": 2}]}), "test") == []
    assert not caplog.records
    with pytest.raises(EngineError) as e:
        review(_Outer.model_validate({"count": 2}), "test")
    assert e.value.param == "count" and e.value.code == "unsupported_parameter"
