"""OpenAI Responses wire format: ``POST /v1/responses`` (what Codex speaks).

This module only translates: the request (models below: ``instructions``, ``input`` as a
string or items with messages, ``function_call`` and ``function_call_output``, function
tools and Codex's ``namespace`` groups, flattened) -> GenerationRequest; the engine's events
-> a Response object, or the streamed events (response.created, response.in_progress,
output_item.added/done, content_part.added/done, output_text.delta/done, reasoning_text,
function_call_arguments.delta/done, then response.completed / response.incomplete, or
response.failed), each with its ``sequence_number``.

Nothing is stored: ``previous_response_id`` is refused with 400 (send the whole input), and
``store`` is accepted but never honoured. Tools other than functions (Codex's freeform
``custom`` tools, web search, ...) are left out of what the model is offered (and logged).
Other fields this server does not honour are logged or refused (request_fields.py).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Annotated, Any, AsyncIterator, Literal

from pydantic import ConfigDict, Field, ValidationError, field_validator
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from mlxk.engine.requests import (MAX_STOPS, EngineError, GenerationRequest, MaxTokens, OutputFormat, Probability,
                                  SamplingParams, Temperature, TopK, Usage)
from mlxk.server import handlers
from mlxk.server.openai_api import error_body, invalid
from mlxk.server.request_fields import Ignored, Refused, Reviewed, given, review, truthy

log = logging.getLogger("mlxk.server")


class _Model(Reviewed):
    model_config = ConfigDict(extra="ignore")


HINT = Ignored()  # read, not honoured, harmless: logged
STATELESS = "this server stores no responses or conversations; send the whole conversation in 'input'"


class ContentPart(_Model):
    type: str = "input_text"
    text: str | None = None


class InputItem(_Model):
    """A message (``role`` and ``content``), a ``function_call`` or a ``function_call_output``."""

    model_config = ConfigDict(extra="allow")
    type: str | None = None
    role: Literal["user", "assistant", "system", "developer"] | None = None
    content: str | list[ContentPart] | None = None
    id: str | None = None  # an item's own id and status (echoed back output) say nothing to the model
    status: str | None = None
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    output: str | list[ContentPart] | None = None


class ToolDef(_Model):
    model_config = ConfigDict(extra="allow")
    type: str
    name: str | None = None
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None  # a call's arguments always match its parameters here
    tools: list["ToolDef"] | None = None  # a namespace group's members


class NamedChoice(_Model):
    type: Literal["function"]
    name: str


class TextFormat(_Model):
    type: Literal["text", "json_object", "json_schema"] = "text"
    name: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class TextConfig(_Model):
    format: TextFormat | None = None
    verbosity: Annotated[Any, HINT] = None


class ResponsesRequest(_Model):
    """The body of POST /v1/responses (fields this server does not use are ignored)."""

    model: str | None = None
    input: str | list[InputItem]
    instructions: str | None = None
    tools: list[ToolDef] | None = None
    tool_choice: Literal["auto", "none", "required"] | NamedChoice | None = None
    max_output_tokens: MaxTokens | None = None
    temperature: Temperature | None = None
    top_p: Probability | None = None
    top_k: TopK | None = None
    stream: bool | None = None
    previous_response_id: Annotated[str | None, Refused(STATELESS, truthy)] = None
    conversation: Annotated[Any, Refused(STATELESS, truthy)] = None
    prompt: Annotated[Any, Refused("stored prompt templates are not kept here: send 'instructions' and 'input'",
                                   given)] = None
    background: Annotated[Any, Refused("background responses are not kept here: stream instead", truthy)] = None
    top_logprobs: Annotated[Any, Refused("log probabilities are not returned by this endpoint here (chat "
                                         "completions returns them)", truthy)] = None
    store: Annotated[bool | None, HINT] = None
    text: TextConfig | None = None
    reasoning: Annotated[dict[str, Any] | None, HINT] = None
    parallel_tool_calls: Annotated[bool | None, HINT] = None
    include: Annotated[Any, HINT] = None
    metadata: Annotated[Any, HINT] = None
    max_tool_calls: Annotated[Any, HINT] = None
    prompt_cache_key: Annotated[Any, HINT] = None
    prompt_cache_retention: Annotated[Any, HINT] = None
    safety_identifier: Annotated[Any, HINT] = None
    service_tier: Annotated[Any, HINT] = None
    stream_options: Annotated[Any, HINT] = None
    truncation: Annotated[Any, HINT] = None
    context_management: Annotated[Any, HINT] = None
    user: Annotated[Any, HINT] = None
    stop: list[str] | None = Field(None, max_length=MAX_STOPS)  # an extension (chat's stop); not OpenAI's

    @field_validator("stop", mode="before")
    @classmethod
    def _one_stop(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v


# --- request -> GenerationRequest ----------------------------------------------------------

def _text_of(parts: str | list[ContentPart] | None, where: str) -> str:
    if parts is None or isinstance(parts, str):
        return parts or ""
    for j, p in enumerate(parts):
        if p.type in ("input_image", "input_file", "image", "file"):
            raise EngineError(400, f"{where}[{j}]: images and files are not supported: this server's models read "
                                   "text only", param=f"{where}[{j}]")
    return "".join(p.text or "" for p in parts)


def _messages(req: ResponsesRequest) -> list[dict]:
    out: list[dict] = []
    if req.instructions:
        out.append({"role": "system", "content": req.instructions})
    if isinstance(req.input, str):
        return out + [{"role": "user", "content": req.input}]
    for i, item in enumerate(req.input):
        kind = item.type or "message"
        if kind == "message":
            if item.role is None:
                raise EngineError(400, f"input[{i}].role: required for a message", param=f"input[{i}].role")
            role = "system" if item.role == "developer" else item.role
            out.append({"role": role, "content": _text_of(item.content, f"input[{i}].content")})
        elif kind == "function_call":
            call = {"id": item.call_id or "", "type": "function",
                    "function": {"name": item.name or "", "arguments": item.arguments or "{}"}}
            if out and out[-1]["role"] == "assistant" and "tool_calls" in out[-1]:
                out[-1]["tool_calls"].append(call)  # parallel calls: one assistant turn
            else:
                out.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif kind == "function_call_output":
            out.append({"role": "tool", "tool_call_id": item.call_id or "",
                        "content": _text_of(item.output, f"input[{i}].output")})
        elif kind == "reasoning":
            continue  # past reasoning is not sent back to the model
        else:
            raise EngineError(400, f"input[{i}].type: '{kind}' is not supported here", param=f"input[{i}].type")
    return out


def _functions(tools: list[ToolDef] | None) -> list[dict]:
    out: list[dict] = []
    for t in tools or []:
        if t.type == "function" and t.name:
            out.append({"type": "function", "function": {"name": t.name, "description": t.description or "",
                                                         "parameters": t.parameters or {"type": "object"}}})
        elif t.type == "namespace":
            out += _functions(t.tools)
        else:
            log.info("tool of type %s (%s) is not offered to the model", t.type, t.name or "")
    return out


def parse(body: Any, max_tokens_cap: int) -> tuple[GenerationRequest, ResponsesRequest]:
    try:
        req = ResponsesRequest.model_validate(body)
    except ValidationError as exc:
        raise invalid(exc) from None
    review(req, "responses")
    if req.max_output_tokens and req.max_output_tokens > max_tokens_cap:
        raise EngineError(400, f"Invalid value for 'max_output_tokens': must be at most {max_tokens_cap} on this "
                               "server", param="max_output_tokens")
    given = {k: getattr(req, k) for k in ("temperature", "top_p", "top_k") if getattr(req, k) is not None}
    try:
        params = SamplingParams(max_tokens=req.max_output_tokens, stop=list(req.stop or []), **given)
    except ValidationError as exc:
        raise invalid(exc) from None
    choice = req.tool_choice.name if isinstance(req.tool_choice, NamedChoice) else req.tool_choice
    fmt = req.text.format if req.text else None
    output_format = None
    if fmt is not None and fmt.type != "text":
        output_format = OutputFormat(fmt.type, fmt.schema_, fmt.name, bool(fmt.strict))
    gen = GenerationRequest(None, params, messages=_messages(req), tools=_functions(req.tools) or None,
                            tool_choice=choice, output_format=output_format)
    return gen, req


# --- events -> Response -----------------------------------------------------------------------

def _id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


def usage_of(u: Usage) -> dict[str, Any]:
    return {"input_tokens": u.prompt_tokens, "input_tokens_details": {"cached_tokens": u.cached_tokens},
            "output_tokens": u.completion_tokens, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": u.total_tokens}


class Shell:
    """The Response object's fields that do not depend on the answer."""

    def __init__(self, req: ResponsesRequest, model: str):
        self.id, self.created = _id("resp_"), int(time.time())
        self.req, self.model = req, model

    def response(self, status: str, output: list[dict], usage: Usage | None = None,
                 incomplete: str | None = None, error: dict | None = None) -> dict[str, Any]:
        req = self.req
        choice = req.tool_choice.model_dump() if isinstance(req.tool_choice, NamedChoice) else req.tool_choice or "auto"
        return {"id": self.id, "object": "response", "created_at": self.created, "status": status,
                "model": self.model, "output": output, "instructions": req.instructions,
                "incomplete_details": {"reason": incomplete} if incomplete else None, "error": error,
                "usage": usage_of(usage) if usage else None, "tool_choice": choice,
                "tools": [t.model_dump(exclude_none=True) for t in req.tools or []],
                "parallel_tool_calls": req.parallel_tool_calls is not False, "store": False,
                "temperature": req.temperature, "top_p": req.top_p, "max_output_tokens": req.max_output_tokens,
                "previous_response_id": None, "text": {"format": {"type": "text"}}, "metadata": {}}


def _message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    return {"type": "message", "id": item_id, "status": status, "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}] if status == "completed" else []}


def _reasoning_item(item_id: str, text: str) -> dict[str, Any]:
    return {"type": "reasoning", "id": item_id, "summary": [],
            "content": [{"type": "reasoning_text", "text": text}] if text else []}


def _call_item(call, status: str = "completed") -> dict[str, Any]:
    return {"type": "function_call", "id": "fc_" + call.id.removeprefix("call_"), "call_id": call.id,
            "name": call.name, "arguments": call.arguments if status == "completed" else "", "status": status}


def full(shell: Shell, result: handlers.Result) -> dict[str, Any]:
    output: list[dict] = []
    if result.reasoning:
        output.append(_reasoning_item(_id("rs_"), result.reasoning))
    if result.text or not result.tool_calls:
        output.append(_message_item(_id("msg_"), result.text))
    output += [_call_item(c) for c in result.tool_calls]
    incomplete = "max_output_tokens" if result.finish_reason == "length" else None
    return shell.response("incomplete" if incomplete else "completed", output, result.usage, incomplete)


class _Events:
    """SSE events with their running ``sequence_number``."""

    def __init__(self):
        self.n = 0

    def __call__(self, kind: str, **data: Any) -> bytes:
        body = {"type": kind, "sequence_number": self.n, **data}
        self.n += 1
        return f"event: {kind}\ndata: {json.dumps(body, ensure_ascii=False)}\n\n".encode()


async def stream(handle, first, shell: Shell) -> AsyncIterator[bytes]:
    ev_ = _Events()
    output: list[dict] = []
    open_item: dict | None = None  # the message or reasoning item being written
    buf = ""
    yield ev_("response.created", response=shell.response("in_progress", []))
    yield ev_("response.in_progress", response=shell.response("in_progress", []))

    def close() -> list[bytes]:
        nonlocal open_item, buf
        if open_item is None:
            return []
        idx, item, text = len(output), open_item, buf
        open_item, buf = None, ""
        if item["type"] == "message":
            done = _message_item(item["id"], text)
            part = done["content"][0]
            out = [ev_("response.output_text.done", item_id=item["id"], output_index=idx, content_index=0, text=text,
                       logprobs=[]),
                   ev_("response.content_part.done", item_id=item["id"], output_index=idx, content_index=0, part=part)]
        else:
            done = _reasoning_item(item["id"], text)
            out = [ev_("response.reasoning_text.done", item_id=item["id"], output_index=idx, content_index=0, text=text)]
        output.append(done)
        return out + [ev_("response.output_item.done", output_index=idx, item=done)]

    def open_(kind: str) -> list[bytes]:
        nonlocal open_item
        out = close()
        idx = len(output)
        if kind == "message":
            open_item = _message_item(_id("msg_"), "", "in_progress")
            return out + [ev_("response.output_item.added", output_index=idx, item=open_item),
                          ev_("response.content_part.added", item_id=open_item["id"], output_index=idx,
                              content_index=0, part={"type": "output_text", "text": "", "annotations": []})]
        open_item = _reasoning_item(_id("rs_"), "")
        return out + [ev_("response.output_item.added", output_index=idx, item=open_item)]

    async for ev in handlers.events(handle):
        if ev is None:
            yield b": keep-alive\n\n"
            continue
        if ev.kind == "delta":
            for kind, piece in (("reasoning", ev.reasoning), ("message", ev.text)):
                if not piece:
                    continue
                if open_item is None or open_item["type"] != kind:
                    for b in open_(kind):
                        yield b
                buf += piece
                idx = len(output)
                name = "response.output_text.delta" if kind == "message" else "response.reasoning_text.delta"
                extra = {"logprobs": []} if kind == "message" else {}
                yield ev_(name, item_id=open_item["id"], output_index=idx, content_index=0, delta=piece, **extra)
        elif ev.kind == "tool_call" and ev.tool_call is not None:
            for b in close():
                yield b
            idx, item = len(output), _call_item(ev.tool_call, "in_progress")
            yield ev_("response.output_item.added", output_index=idx, item=item)
            yield ev_("response.function_call_arguments.delta", item_id=item["id"], output_index=idx,
                      delta=ev.tool_call.arguments)
            yield ev_("response.function_call_arguments.done", item_id=item["id"], output_index=idx,
                      name=ev.tool_call.name, arguments=ev.tool_call.arguments)
            done = _call_item(ev.tool_call)
            output.append(done)
            yield ev_("response.output_item.done", output_index=idx, item=done)
        elif ev.kind == "finish":
            if open_item is None and not output:
                for b in open_("message"):
                    yield b
            for b in close():
                yield b
            incomplete = "max_output_tokens" if ev.finish_reason == "length" else None
            status = "incomplete" if incomplete else "completed"
            yield ev_(f"response.{status}", response=shell.response(status, output, ev.usage, incomplete))
        else:
            err = handlers.stream_error(ev)
            detail = {"code": err.code or err.type, "message": err.message}
            yield ev_("response.failed", response=shell.response("failed", output, error=detail))


async def responses(state, request: Request) -> Response:
    try:
        handle, first, req = await handlers.begin(state, request, parse)
    except EngineError as err:
        return JSONResponse(error_body(err), status_code=err.status,
                            headers={"Retry-After": "2"} if err.status == 503 else None)
    shell = Shell(req, first.model or "")
    if req.stream:
        return StreamingResponse(stream(handle, first, shell), media_type="text/event-stream",
                                 headers=handlers.SSE_HEADERS)
    try:
        result = await handlers.collect(request, handle, first)
    except EngineError as err:
        return JSONResponse(error_body(err), status_code=err.status)
    return JSONResponse(full(shell, result))
