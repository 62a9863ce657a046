"""Anthropic Messages wire format: ``POST /v1/messages`` and ``/v1/messages/count_tokens``.

This module only translates: the request (pydantic models below) -> GenerationRequest, the
engine's events -> a Message object or the SSE event sequence (message_start,
content_block_start / _delta / _stop per block, message_delta with stop_reason and usage,
message_stop; ping during long prefills; ``event: error`` mid-stream). Errors have
Anthropic's shape ``{"type": "error", "error": {"type", "message"}}``.

``usage.input_tokens`` counts only the prompt tokens that were computed; the ones the prefix
cache supplied are ``cache_read_input_tokens`` (their sum is count_tokens' answer).

Claude Code starts its system prompt with a per-request ``x-anthropic-billing-header: ...``
line; it is dropped (it is metadata, not instructions) so the system prompt's tokens are the
same from one request to the next and the prefix cache holds.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Annotated, Any, AsyncIterator, ClassVar, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from mlxk.engine.requests import (MAX_STOPS, EngineError, GenerationRequest, MaxTokens, OutputFormat, Probability,
                                  SamplingParams, TopK, Usage)
from mlxk.server import handlers
from mlxk.server.openai_models import param_of
from mlxk.server.request_fields import Ignored, Refused, Reviewed, review, truthy

BILLING_LINE = re.compile(r"\A\s*x-anthropic-billing-header:[^\n]*(\n|\Z)")


class _Model(Reviewed):
    model_config = ConfigDict(extra="ignore")


HINT = Ignored()  # read, not honoured, harmless: logged


class TextBlock(_Model):
    type: Literal["text"]
    text: str
    cache_control: Annotated[Any, HINT] = None  # the prefix cache is automatic here
    citations: Annotated[Any, HINT] = None


class ImageBlock(_Model):
    kept_extras: ClassVar[bool] = True  # refused whole (text-only models): its fields need no log
    type: Literal["image", "document"]


class ToolUseBlock(_Model):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any] = Field(default_factory=dict)
    cache_control: Annotated[Any, HINT] = None


class ToolResultBlock(_Model):
    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[Union[TextBlock, ImageBlock]] | None = None
    is_error: bool | None = None
    cache_control: Annotated[Any, HINT] = None


class ThinkingBlock(_Model):
    type: Literal["thinking", "redacted_thinking"]
    thinking: str | None = None  # past thinking is not sent back to the model (see _messages)
    signature: str | None = None
    data: str | None = None


Block = Annotated[Union[TextBlock, ImageBlock, ToolUseBlock, ToolResultBlock, ThinkingBlock], Field(discriminator="type")]


class InputMessage(_Model):
    role: Literal["user", "assistant", "system"]  # "system": Claude Code's mid-conversation system beta
    content: str | list[Block]


class Tool(_Model):
    name: str
    description: str | None = None
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    type: str | None = None  # "custom" or absent; server tools (web search, ...) are not run here
    strict: bool | None = None  # a call's input always matches input_schema here
    cache_control: Annotated[Any, HINT] = None


class ToolChoice(_Model):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: Annotated[bool | None, HINT] = None


class JsonOutputFormat(_Model):
    """Structured output: the answer is JSON matching ``schema`` (engine/constraints.py)."""

    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfig(_Model):
    format: JsonOutputFormat | None = None
    effort: Annotated[Any, HINT] = None


class CountTokensRequest(_Model):
    """The body of POST /v1/messages/count_tokens; the prompt fields of a message request."""

    model: str
    messages: list[InputMessage] = Field(min_length=1)
    system: str | list[TextBlock] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    output_config: OutputConfig | None = None
    output_format: JsonOutputFormat | None = None  # the structured-outputs beta's name for output_config.format
    mcp_servers: Annotated[Any, Refused("MCP servers are not connected from here: declare their tools", truthy)] = None
    thinking: Annotated[dict[str, Any] | None, HINT] = None
    cache_control: Annotated[Any, HINT] = None
    context_management: Annotated[Any, HINT] = None
    speed: Annotated[Any, HINT] = None


class MessagesRequest(CountTokensRequest):
    """The body of POST /v1/messages (see request_fields for what is ignored or refused)."""

    max_tokens: MaxTokens
    stop_sequences: list[str] | None = Field(None, max_length=MAX_STOPS)
    stream: bool | None = None
    temperature: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] | None = None
    top_p: Probability | None = None
    top_k: TopK | None = None
    metadata: Annotated[dict[str, Any] | None, HINT] = None
    service_tier: Annotated[Any, HINT] = None
    container: Annotated[Any, HINT] = None
    inference_geo: Annotated[Any, HINT] = None
    diagnostics: Annotated[Any, HINT] = None


class Usage_(BaseModel):
    input_tokens: int
    output_tokens: int
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0


class MessageResponse(BaseModel):
    """The answer of POST /v1/messages (non-streaming)."""

    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    model: str
    content: list[dict[str, Any]]
    stop_reason: Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"] | None
    stop_sequence: str | None = None
    usage: Usage_


class ErrorDetail(BaseModel):
    type: str
    message: str


class ErrorResponse(BaseModel):
    type: Literal["error"] = "error"
    error: ErrorDetail


# --- errors ---------------------------------------------------------------------------

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 405: "invalid_request_error", 413: "request_too_large",
               415: "invalid_request_error", 429: "rate_limit_error", 503: "overloaded_error", 529: "overloaded_error"}


def error_body(err: EngineError) -> dict[str, Any]:
    kind = ERROR_TYPES.get(err.status, "api_error" if err.status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": err.message}}


def error_response(err: EngineError) -> JSONResponse:
    headers = {"Retry-After": "2"} if err.status == 503 else None
    return JSONResponse(error_body(err), status_code=err.status, headers=headers)


def _invalid(exc: ValidationError) -> EngineError:
    first = exc.errors(include_url=False, include_input=False)[0]
    param = param_of(first["loc"])
    if first["type"] == "missing":
        return EngineError(400, f"{param}: Field required", param=param)
    return EngineError(400, f"{param or 'body'}: {first['msg'].removeprefix('Value error, ')}", param=param)


def _validate(model: type[BaseModel], body: Any):
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise _invalid(exc) from None


# --- request -> GenerationRequest -------------------------------------------------------

def normalize_system(text: str) -> str:
    """Claude Code's per-request billing line out of the system prompt (see the module doc)."""
    return BILLING_LINE.sub("", text, count=1)


def _system_text(system: str | list[TextBlock] | None) -> str:
    if system is None:
        return ""
    text = system if isinstance(system, str) else "\n\n".join(b.text for b in system)
    return normalize_system(text)


def _no_images(where: str) -> EngineError:
    return EngineError(400, f"{where}: images and documents are not supported: this server's models read text only",
                       param=where)


def _messages(req: MessagesRequest | CountTokensRequest) -> list[dict]:
    out: list[dict] = []
    system = _system_text(req.system)
    if system:
        out.append({"role": "system", "content": system})
    for i, m in enumerate(req.messages):
        if isinstance(m.content, str):
            out.append({"role": m.role, "content": m.content})
            continue
        text: list[str] = []
        calls: list[dict] = []
        for j, b in enumerate(m.content):
            where = f"messages[{i}].content[{j}]"
            if m.role == "system" and not isinstance(b, TextBlock):
                raise EngineError(400, f"{where}: a system message holds text blocks only", param=where)
            if isinstance(b, ImageBlock):
                raise _no_images(where)
            if isinstance(b, TextBlock):
                text.append(b.text)
            elif isinstance(b, ToolUseBlock):
                calls.append({"id": b.id, "type": "function",
                              "function": {"name": b.name, "arguments": json.dumps(b.input, ensure_ascii=False)}})
            elif isinstance(b, ToolResultBlock):
                if text:  # text before a result stays before it
                    out.append({"role": m.role, "content": "".join(text)})
                    text = []
                content = b.content
                if isinstance(content, list):
                    if any(isinstance(p, ImageBlock) for p in content):
                        raise _no_images(where)
                    content = "".join(p.text for p in content)
                content = content or ""
                if b.is_error:
                    content = f"Error: {content}"
                out.append({"role": "tool", "tool_call_id": b.tool_use_id, "content": content})
            # thinking blocks of past turns are not sent back to the model
        if text or calls:
            msg: dict[str, Any] = {"role": m.role, "content": "".join(text)}
            if calls:
                msg["tool_calls"] = calls
            out.append(msg)
    return out


def _tools(req: MessagesRequest | CountTokensRequest) -> tuple[list[dict] | None, str | None]:
    for i, t in enumerate(req.tools or []):
        if t.type not in (None, "custom"):
            raise EngineError(400, f"tools[{i}]: server tool type '{t.type}' is not supported here", param=f"tools[{i}]")
    tools = [{"type": "function", "function": {"name": t.name, "description": t.description or "",
                                               "parameters": t.input_schema}} for t in req.tools or []] or None
    choice = req.tool_choice
    if choice is None:
        return tools, None
    if choice.type == "tool":
        if not choice.name:
            raise EngineError(400, "tool_choice.name: required when tool_choice.type is 'tool'", param="tool_choice.name")
        return tools, choice.name
    return tools, {"auto": "auto", "any": "required", "none": "none"}[choice.type]


def _output_format(req: CountTokensRequest) -> OutputFormat | None:
    fmt = req.output_config.format if req.output_config is not None else None
    if fmt is not None and req.output_format is not None:
        raise EngineError(400, "output_format: give output_config.format or output_format, not both",
                          param="output_format")
    fmt = fmt or req.output_format
    return OutputFormat("json_schema", fmt.schema_) if fmt is not None else None


def parse(body: Any, max_tokens_cap: int) -> tuple[GenerationRequest, MessagesRequest]:
    req: MessagesRequest = _validate(MessagesRequest, body)
    review(req, "anthropic")
    if req.max_tokens > max_tokens_cap:
        raise EngineError(400, f"max_tokens: must be at most {max_tokens_cap} on this server", param="max_tokens")
    given = {k: getattr(req, k) for k in ("temperature", "top_p", "top_k") if getattr(req, k) is not None}
    try:
        params = SamplingParams(max_tokens=req.max_tokens, stop=list(req.stop_sequences or []), **given)
    except ValidationError as exc:
        raise _invalid(exc) from None
    tools, choice = _tools(req)
    return GenerationRequest(None, params, messages=_messages(req), tools=tools, tool_choice=choice,
                             output_format=_output_format(req)), req


def parse_count(body: Any) -> tuple[GenerationRequest, CountTokensRequest]:
    req: CountTokensRequest = _validate(CountTokensRequest, body)
    review(req, "anthropic.count_tokens")
    tools, choice = _tools(req)
    return GenerationRequest(None, SamplingParams(), messages=_messages(req), tools=tools, tool_choice=choice,
                             output_format=_output_format(req)), req


# --- events -> answer --------------------------------------------------------------------

def stop_reason(finish: str | None, stop_sequence: str | None) -> str:
    if finish == "length":
        return "max_tokens"
    if finish == "tool_calls":
        return "tool_use"
    return "stop_sequence" if stop_sequence else "end_turn"


def usage_of(u: Usage) -> dict[str, int]:
    return {"input_tokens": u.prompt_tokens - u.cached_tokens, "output_tokens": u.completion_tokens,
            "cache_read_input_tokens": u.cached_tokens, "cache_creation_input_tokens": 0}


def _tool_block(call) -> dict[str, Any]:
    return {"type": "tool_use", "id": call.id, "name": call.name, "input": json.loads(call.arguments or "{}")}


def message(result: handlers.Result, msg_id: str) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if result.reasoning:
        content.append({"type": "thinking", "thinking": result.reasoning, "signature": ""})
    if result.text or not result.tool_calls:
        content.append({"type": "text", "text": result.text})
    content += [_tool_block(c) for c in result.tool_calls]
    return {"id": msg_id, "type": "message", "role": "assistant", "model": result.model, "content": content,
            "stop_reason": stop_reason(result.finish_reason, result.stop_sequence),
            "stop_sequence": result.stop_sequence, "usage": usage_of(result.usage)}


def sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps({'type': event, **data}, ensure_ascii=False)}\n\n".encode()


async def stream(handle, first, msg_id: str) -> AsyncIterator[bytes]:
    """The exact event sequence of a streamed message (see the module doc)."""
    u = first.usage or Usage()
    start = {"id": msg_id, "type": "message", "role": "assistant", "model": first.model or "", "content": [],
             "stop_reason": None, "stop_sequence": None, "usage": {**usage_of(u), "output_tokens": 0}}
    yield sse("message_start", {"message": start})
    index, open_kind = -1, None  # the content block being written: "text" or "thinking"

    def close():
        nonlocal open_kind
        if open_kind is None:
            return b""
        open_kind = None
        return sse("content_block_stop", {"index": index})

    def open_block(kind: str, block: dict) -> bytes:
        nonlocal index, open_kind
        out = close()
        index += 1
        open_kind = kind
        return out + sse("content_block_start", {"index": index, "content_block": block})

    async for ev in handlers.events(handle):
        if ev is None:
            yield sse("ping", {})
            continue
        if ev.kind == "delta":
            if ev.reasoning:
                if open_kind != "thinking":
                    yield open_block("thinking", {"type": "thinking", "thinking": "", "signature": ""})
                yield sse("content_block_delta", {"index": index, "delta": {"type": "thinking_delta",
                                                                            "thinking": ev.reasoning}})
            if ev.text:
                if open_kind != "text":
                    yield open_block("text", {"type": "text", "text": ""})
                yield sse("content_block_delta", {"index": index, "delta": {"type": "text_delta", "text": ev.text}})
        elif ev.kind == "tool_call" and ev.tool_call is not None:
            call = ev.tool_call
            yield open_block("tool_use", {"type": "tool_use", "id": call.id, "name": call.name, "input": {}})
            yield sse("content_block_delta", {"index": index, "delta": {"type": "input_json_delta",
                                                                        "partial_json": call.arguments}})
            yield close()
        elif ev.kind == "finish":
            if index < 0:  # an empty answer is still one (empty) text block
                yield open_block("text", {"type": "text", "text": ""})
            yield close()
            stop_seq = getattr(ev, "stop_sequence", None)
            usage = usage_of(ev.usage or u)
            yield sse("message_delta", {"delta": {"stop_reason": stop_reason(ev.finish_reason, stop_seq),
                                                  "stop_sequence": stop_seq}, "usage": usage})
            yield sse("message_stop", {})
        else:
            yield sse("error", {"error": error_body(handlers.stream_error(ev))["error"]})


# --- endpoints -------------------------------------------------------------------------

async def messages(state, request: Request) -> Response:
    try:
        handle, first, req = await handlers.begin(state, request, parse)
    except EngineError as err:
        return error_response(err)
    msg_id = "msg_" + uuid.uuid4().hex[:24]
    if req.stream:
        return StreamingResponse(stream(handle, first, msg_id), media_type="text/event-stream",
                                 headers=handlers.SSE_HEADERS)
    try:
        result = await handlers.collect(request, handle, first)
    except EngineError as err:
        return error_response(err)
    return JSONResponse(message(result, msg_id))


async def count_tokens(state, request: Request) -> Response:
    try:
        handlers.check_auth(state, request)
        body = await handlers.read_json(request)
        gen, req = parse_count(body)
        n = await handlers.count_tokens(state, gen, req.model)
    except EngineError as err:
        return error_response(err)
    return JSONResponse({"input_tokens": n})
