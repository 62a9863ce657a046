"""The OpenAI request bodies (chat/completions, completions) as pydantic models.

Validation happens here, before anything reaches the engine: types are strict (no "1" for 1,
no true for 1), numbers finite and in range (the ranges are the wire-neutral ones from
engine/requests.py). NaN/Infinity literals and lone surrogates never get this far: the JSON
parser refuses them (openai_api.load_json_object). :func:`param_of` names the offending
field the way OpenAI does (``messages[0].role``, ``tools[0]``) for the error's ``param``.

Unknown fields are ignored, as OpenAI-compatible servers do (clients send vendor extras),
and logged by name; fields OpenAI defines that would change the answer and are not supported
here (``n`` > 1, ``audio``, ``logit_bias``, penalties) are refused (server/request_fields.py).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import (AfterValidator, ConfigDict, Discriminator, Field, Tag, ValidationInfo,
                      field_validator, model_validator)

from mlxk.engine.requests import (MAX_STOPS, MaxTokens, Penalty, Probability, Seed, Temperature, TopK,
                                  TopLogprobs)
from mlxk.server.request_fields import Ignored, Refused, Reviewed, given, more_than_one, truthy

TAG = "~"  # union-member tags start with it; param_of leaves them out of the field path


def _one_of(items: Any, container: type, kind: str, what: str) -> Any:
    """``str | items`` where only the member matching the JSON type is validated (clean errors)."""
    def pick(value: Any) -> str | None:
        return TAG + "text" if isinstance(value, str) else TAG + kind if isinstance(value, container) else None

    return Annotated[Union[Annotated[str, Tag(TAG + "text")], Annotated[items, Tag(TAG + kind)]],
                     Discriminator(pick, custom_error_type="invalid_type", custom_error_message=what)]


class _Strict(Reviewed):
    model_config = ConfigDict(strict=True, extra="ignore")


def _penalty(value: Any) -> bool:
    return value is not None and value != 0


def _not_text(modalities: Any) -> bool:
    return any(m != "text" for m in modalities or [])


ONE_CHOICE = Refused("one choice per request is supported", more_than_one)
NO_PENALTY = Refused("not supported here (leave it 0; repetition_penalty is)", _penalty)
NO_BIAS = Refused("logit bias is not supported here", truthy)
HINT = Ignored()  # read, not honoured, harmless: logged


class ContentPart(_Strict):
    """A part of a message's content; only text parts reach the model (others are skipped)."""

    model_config = ConfigDict(strict=True, extra="allow")
    type: str = "text"
    text: str | None = None

    @model_validator(mode="after")
    def _text_required(self) -> "ContentPart":
        if self.type == "text" and self.text is None:
            raise ValueError("a text part needs 'text'")
        return self


Content = _one_of(list[ContentPart], list, "parts", "must be a string or a list of content parts")


Arguments = _one_of(dict[str, Any], dict, "object", "must be a JSON string or an object")


class FunctionCall(_Strict):
    name: str
    arguments: Arguments = ""


class ToolCall(_Strict):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Content | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    def for_template(self) -> dict[str, Any]:
        """The message as chat templates read it (``developer`` is OpenAI's new name for ``system``)."""
        content = self.content
        if isinstance(content, list):
            content = [p.model_dump(exclude_none=True) for p in content]
        out: dict[str, Any] = {"role": "system" if self.role == "developer" else self.role, "content": content or ""}
        for extra in ("name", "tool_call_id"):
            if getattr(self, extra) is not None:
                out[extra] = getattr(self, extra)
        if self.tool_calls is not None:
            out["tool_calls"] = [c.model_dump(exclude_none=True) for c in self.tool_calls]
        return out


class FunctionDef(_Strict):
    model_config = ConfigDict(strict=True, extra="allow")
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Strict):
    type: Literal["function"] = "function"
    function: FunctionDef


class JsonSchemaFormat(_Strict):
    """``response_format.json_schema`` (structured output: engine/constraints.py)."""

    model_config = ConfigDict(strict=True, extra="ignore", populate_by_name=True)
    name: str
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class ToolChoiceFunction(_Strict):
    name: str


class ToolChoiceObject(_Strict):
    type: Literal["function"]
    function: ToolChoiceFunction


ToolChoice = Annotated[
    Union[Annotated[Literal["none", "auto", "required"], Tag(TAG + "text")], Annotated[ToolChoiceObject, Tag(TAG + "object")]],
    Discriminator(lambda v: TAG + "text" if isinstance(v, str) else TAG + "object" if isinstance(v, dict) else None,
                  custom_error_type="invalid_type",
                  custom_error_message="must be 'none', 'auto', 'required' or {\"type\": \"function\", ...}")]


class StreamOptions(_Strict):
    include_usage: bool | None = None


def _capped(value: int, info: ValidationInfo) -> int:
    """The server's ``--max-tokens`` comes in the validation context."""
    cap = (info.context or {}).get("max_tokens_cap")
    if cap is not None and value > cap:
        raise ValueError(f"must be at most {cap} on this server")
    return value


CappedTokens = Annotated[MaxTokens, AfterValidator(_capped)]


class _Common(_Strict):
    """Fields chat and completions share; the sampling ones map onto SamplingParams."""

    model: str | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    max_tokens: CappedTokens | None = None
    temperature: Temperature | None = None
    top_p: Probability | None = None
    top_k: TopK | None = None
    min_p: Probability | None = None
    repetition_penalty: Penalty | None = None
    seed: Seed | None = None
    stop: list[str] | None = Field(None, max_length=MAX_STOPS)
    n: Annotated[int | None, Field(ge=1), ONE_CHOICE] = None
    frequency_penalty: Annotated[Any, NO_PENALTY] = None
    presence_penalty: Annotated[Any, NO_PENALTY] = None
    logit_bias: Annotated[Any, NO_BIAS] = None
    user: Annotated[Any, HINT] = None

    @field_validator("stop", mode="before")
    @classmethod
    def _one_stop(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    def sampling(self, max_tokens: int | None, logprobs: bool, top_logprobs: int) -> dict[str, Any]:
        """Keyword arguments for SamplingParams (defaults where the body gave nothing)."""
        given = {k: getattr(self, k) for k in ("temperature", "top_p", "top_k", "min_p", "repetition_penalty", "seed")
                 if getattr(self, k) is not None}
        return {**given, "max_tokens": max_tokens, "stop": list(self.stop or []), "logprobs": logprobs,
                "top_logprobs": top_logprobs}


class ChatRequest(_Common):
    messages: list[Message] = Field(min_length=1)
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None  # structured output (engine/constraints.py) from here
    response_format: ResponseFormat | None = None
    max_completion_tokens: CappedTokens | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[TopLogprobs, Field(le=20)] | None = None
    audio: Annotated[Any, Refused("answers here are text only", given)] = None
    modalities: Annotated[Any, Refused("answers here are text only", _not_text)] = None
    functions: Annotated[Any, Refused("deprecated: declare them in 'tools'", truthy)] = None
    function_call: Annotated[Any, Refused("deprecated: use 'tool_choice' with 'tools'", given)] = None
    web_search_options: Annotated[Any, Refused("web search is not run here", given)] = None
    parallel_tool_calls: Annotated[bool | None, HINT] = None
    metadata: Annotated[Any, HINT] = None
    store: Annotated[Any, HINT] = None
    service_tier: Annotated[Any, HINT] = None
    reasoning_effort: Annotated[Any, HINT] = None
    verbosity: Annotated[Any, HINT] = None
    prediction: Annotated[Any, HINT] = None
    prompt_cache_key: Annotated[Any, HINT] = None
    prompt_cache_retention: Annotated[Any, HINT] = None
    safety_identifier: Annotated[Any, HINT] = None


TokenIds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]
Prompt = _one_of(TokenIds, list, "ids", "must be a string or a list of token ids")


def _unbatch(v: Any) -> Any:
    """A batch of one prompt (``["text"]``, ``[[1, 2]]``) is that prompt; larger batches are refused."""
    if isinstance(v, list) and len(v) == 1 and isinstance(v[0], (str, list)):
        return v[0]
    if isinstance(v, list) and v and all(isinstance(x, (str, list)) for x in v):
        raise ValueError("only one prompt per request is supported")
    return v


class CompletionRequest(_Common):
    prompt: Prompt
    logprobs: Annotated[TopLogprobs, Field(le=5)] | None = None  # completions: how many alternatives
    best_of: Annotated[int | None, Field(ge=1), ONE_CHOICE] = None
    echo: Annotated[Any, Refused("the prompt is not echoed back here", truthy)] = None
    suffix: Annotated[Any, Refused("insertion (text after the completion) is not supported here", truthy)] = None

    @field_validator("prompt", mode="before")
    @classmethod
    def _one_prompt(cls, v: Any) -> Any:
        return _unbatch(v)


def param_of(loc: tuple) -> str | None:
    """``("messages", 0, "role")`` -> ``messages[0].role``; union-member tags are left out."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and not part.startswith(TAG):
            out += ("." if out else "") + part
    return out or None
