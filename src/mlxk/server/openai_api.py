"""OpenAI wire format: chat/completions and completions over the engine's event stream.

This adapter only translates: request JSON -> GenerationRequest, Events -> OpenAI JSON /
SSE chunks. Another protocol (Anthropic Messages, Gemini) is another module like this one.
"""

from __future__ import annotations

import json
import os
import math
import time
import uuid
from typing import Any, AsyncIterator

import pydantic_core
from pydantic import BaseModel, ValidationError

from mlxk.engine.requests import EngineError, Event, GenerationRequest, SamplingParams, TokenLogprob, Usage
from mlxk.server.openai_models import ChatRequest, CompletionRequest, param_of
from mlxk.server.request_fields import review

INTERRUPT_MESSAGE = "Stream interrupted: the server is shutting down"
# Text averages about 4 characters a token; only runs such as long whitespace pack more. A prompt
# with more characters than context * CHARS_PER_TOKEN is refused before the tokenizer sees it.
CHARS_PER_TOKEN = 16


def error_body(err: EngineError) -> dict[str, Any]:
    return {"error": {"message": err.message, "type": err.type, "param": err.param, "code": err.code}}


def load_json_object(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object, parsed by pydantic-core, which refuses what json.loads lets
    through: NaN/Infinity, lone surrogates (no tokenizer takes them), invalid UTF-8, and nesting
    deeper than 200 (json.loads raises RecursionError)."""
    try:
        body = pydantic_core.from_json(raw, allow_inf_nan=False)
    except ValueError as exc:
        param = _culprit(raw)
        why = f" ('{param}' holds NaN, Infinity or a lone surrogate: not allowed)" if param else ""
        raise EngineError(400, f"Malformed JSON body: {exc}{why}", param=param, code="invalid_json") from None
    if not isinstance(body, dict):
        raise EngineError(400, "The JSON body must be an object", code="invalid_json")
    return body


def _culprit(raw: bytes) -> str | None:
    """The field holding a NaN/Infinity or a lone surrogate (json.loads reads those), for ``param``."""
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    todo: list[tuple[tuple, Any]] = [((), doc)]
    while todo:  # a loop, not recursion: the document may be deep
        path, value = todo.pop()
        if isinstance(value, float) and not math.isfinite(value):
            return param_of(path)
        if isinstance(value, str) and not _encodes(value):
            return param_of(path)
        if isinstance(value, dict):
            todo += [((*path, k), v) for k, v in reversed(value.items())] + [((*path, k), k) for k in value]
        elif isinstance(value, list):
            todo += [((*path, i), v) for i, v in reversed(list(enumerate(value)))]
    return None


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def invalid(exc: ValidationError) -> EngineError:
    """The first validation error as OpenAI's 400, ``param`` naming the field."""
    first = exc.errors(include_url=False, include_input=False)[0]
    param = param_of(first["loc"])
    if first["type"] == "missing":
        return EngineError(400, f"Missing required parameter: '{param}'", param=param)
    msg = first["msg"].removeprefix("Value error, ")
    where = f"for '{param}'" if param else "in the body"
    return EngineError(400, f"Invalid value {where}: {msg}", param=param)


def _validate(model: type[BaseModel], body: Any, max_tokens_cap: int):
    try:
        return model.model_validate(body, context={"max_tokens_cap": max_tokens_cap})
    except ValidationError as exc:
        raise invalid(exc) from None


def sampling_params(req: ChatRequest | CompletionRequest) -> SamplingParams:
    """The validated body's sampling options as the engine's SamplingParams.

    Chat's ``logprobs`` is a flag with ``top_logprobs`` alternatives; the completions
    endpoint's ``logprobs`` is the number of alternatives (0 still returns the chosen tokens').
    """
    if isinstance(req, ChatRequest):
        max_tokens = req.max_completion_tokens or req.max_tokens
        logprobs, top = bool(req.logprobs), req.top_logprobs or 0
    else:
        max_tokens, logprobs, top = req.max_tokens, req.logprobs is not None, req.logprobs or 0
    try:
        return SamplingParams(**req.sampling(max_tokens, logprobs, top))
    except ValidationError as exc:
        raise invalid(exc) from None


def parse_chat(body: Any, max_tokens_cap: int) -> GenerationRequest:
    req: ChatRequest = _validate(ChatRequest, body, max_tokens_cap)
    review(req, "openai.chat")
    tools = [t.model_dump(exclude_none=True) for t in req.tools] if req.tools else None
    gen = GenerationRequest(None, sampling_params(req), messages=[m.for_template() for m in req.messages],
                            tools=tools, prompt_field="messages")
    return structured_output(req, gen)


def structured_output(req: ChatRequest, gen: GenerationRequest) -> GenerationRequest:
    """``response_format`` and ``tool_choice`` onto the engine's OutputFormat / tool_choice,
    the schemas checked here so a bad one is refused naming its field (engine/constraints.py)."""
    from mlxk.engine.constraints import SchemaError, check
    from mlxk.engine.requests import OutputFormat

    rf = req.response_format
    if rf is not None and rf.type == "json_schema":
        if rf.json_schema is None:
            raise EngineError(400, "Missing required parameter: 'response_format.json_schema'",
                              param="response_format.json_schema")
        js = rf.json_schema
        gen.output_format = OutputFormat("json_schema", js.schema_, js.name, bool(js.strict))
    elif rf is not None and rf.type == "json_object":
        gen.output_format = OutputFormat("json_object")
    choice = req.tool_choice
    gen.tool_choice = choice.function.name if choice is not None and not isinstance(choice, str) else choice
    try:
        check(gen)
    except SchemaError as exc:
        param = {"output_format": "response_format.json_schema.schema", "tool_choice": "tool_choice",
                 "tools": f"tools[{exc.index}].function.parameters"}[exc.field]
        raise EngineError(400, exc.message, param=param, code="invalid_schema" if exc.field != "tool_choice" else None) from None
    return gen


def parse_completion(body: Any, max_tokens_cap: int) -> GenerationRequest:
    req: CompletionRequest = _validate(CompletionRequest, body, max_tokens_cap)
    review(req, "openai.completions")
    return GenerationRequest(None, sampling_params(req), prompt=req.prompt, prompt_field="prompt")


def check_prompt_size(gen: GenerationRequest, context: int | None) -> None:
    """Refuse a text prompt that cannot fit the context before it is tokenized (which takes the
    engine thread, and so every stream, for as long as the text is long)."""
    if not context:
        return
    if gen.messages is not None:
        chars = sum(len(m["content"]) if isinstance(m["content"], str) else
                    sum(len(p.get("text") or "") for p in m["content"]) for m in gen.messages)
    elif isinstance(gen.prompt, str):
        chars = len(gen.prompt)
    else:
        return  # token ids: the engine counts them without tokenizing
    if chars > context * CHARS_PER_TOKEN:
        raise EngineError(400, f"This model's maximum context length is {context} tokens, but the prompt has "
                               f"{chars} characters (more than {CHARS_PER_TOKEN} per token of context)",
                          param=gen.prompt_field, code="context_length_exceeded")


# --- responses ------------------------------------------------------------------------

def _usage(u: Usage) -> dict[str, Any]:
    return {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
            "total_tokens": u.total_tokens, "prompt_tokens_details": {"cached_tokens": u.cached_tokens}}


IMPOSSIBLE_LOGPROB = -9999.0  # OpenAI's figure for a token that cannot come (JSON has no -Infinity)


def _finite(v: float) -> float:
    """A grammar-masked token's logprob is -inf (engine/constraints.py): OpenAI's -9999.0 instead."""
    return max(v, IMPOSSIBLE_LOGPROB)


def _chat_logprobs(lps: list[TokenLogprob]) -> dict[str, Any]:
    def one(t: str, v: float) -> dict:
        return {"token": t, "logprob": _finite(v), "bytes": list(t.encode("utf-8"))}

    return {"content": [{**one(lp.token, lp.logprob), "top_logprobs": [one(t, v) for t, v in lp.top]} for lp in lps]}


def _completion_logprobs(lps: list[TokenLogprob], offset: int) -> dict[str, Any]:
    offsets, pos = [], offset
    for lp in lps:
        offsets.append(pos)
        pos += len(lp.token)
    return {"tokens": [lp.token for lp in lps], "token_logprobs": [_finite(lp.logprob) for lp in lps],
            "top_logprobs": [{t: _finite(v) for t, v in lp.top} for lp in lps], "text_offset": offsets}


class Formatter:
    """Builds chat or completion objects for one request."""

    def __init__(self, kind: str, model: str):
        self.kind = kind
        self.model = model
        self.id = ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex[:24]
        self.created = int(time.time())
        self.sent_role = False
        self.text_offset = 0

    def _base(self, obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model,
                "system_fingerprint": "mlxk"}

    def chunk(self, text: str = "", finish: str | None = None, lps: list[TokenLogprob] | None = None,
              reasoning: str = "") -> dict:
        if self.kind == "chat":
            delta: dict[str, Any] = {}
            if not self.sent_role:
                delta["role"] = "assistant"
                self.sent_role = True
            if reasoning:  # issue 14: thinking as reasoning_content, never as content
                delta["reasoning_content"] = reasoning
            if text or (finish is None and not reasoning):
                delta["content"] = text
            choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish,
                                      "logprobs": _chat_logprobs(lps) if lps else None}
            return {**self._base("chat.completion.chunk"), "choices": [choice]}
        choice = {"index": 0, "text": text, "finish_reason": finish,
                  "logprobs": _completion_logprobs(lps, self.text_offset) if lps else None}
        self.text_offset += len(text)
        return {**self._base("text_completion"), "choices": [choice]}

    def tool_call_chunk(self, call, index: int) -> dict:
        """A whole call in one streamed delta (the engine hands calls over complete)."""
        delta: dict[str, Any] = {"tool_calls": [{"index": index, **_tool_call(call)}]}
        if not self.sent_role:
            delta["role"], self.sent_role = "assistant", True
        return {**self._base("chat.completion.chunk"), "choices": [{"index": 0, "delta": delta, "finish_reason": None,
                                                                   "logprobs": None}]}

    def usage_chunk(self, usage: Usage) -> dict:
        obj = "chat.completion.chunk" if self.kind == "chat" else "text_completion"
        return {**self._base(obj), "choices": [], "usage": _usage(usage)}

    def full(self, text: str, finish: str, usage: Usage, lps: list[TokenLogprob] | None, calls=(),
             reasoning: str = "") -> dict:
        if self.kind == "chat":
            message: dict[str, Any] = {"role": "assistant", "content": text if text or not calls else None}
            if reasoning:  # issue 14
                message["reasoning_content"] = reasoning
            if calls:
                message["tool_calls"] = [_tool_call(c) for c in calls]
            choice = {"index": 0, "message": message,
                      "finish_reason": finish, "logprobs": _chat_logprobs(lps) if lps is not None else None}
            return {**self._base("chat.completion"), "choices": [choice], "usage": _usage(usage)}
        choice = {"index": 0, "text": text, "finish_reason": finish,
                  "logprobs": _completion_logprobs(lps, 0) if lps is not None else None}
        return {**self._base("text_completion"), "choices": [choice], "usage": _usage(usage)}


def _tool_call(call) -> dict[str, Any]:
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}


def sse(obj: Any) -> bytes:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n".encode()


KEEPALIVE_S = float(os.environ.get("MLXK_SSE_KEEPALIVE_S", "5"))  # silence before a keep-alive comment
INTERRUPT_ERROR = EngineError(503, INTERRUPT_MESSAGE, "server_error", code="interrupted")


async def stream_events(handle, fmt: Formatter, include_usage: bool) -> AsyncIterator[bytes]:
    """SSE body. The first ``start`` event was consumed by the caller."""
    calls = 0
    try:
        yield sse(fmt.chunk(""))
        while True:
            ev: Event | None = await handle.next_within(KEEPALIVE_S)
            if ev is None:  # a long prefill: an SSE comment keeps proxies and clients from timing out
                yield b": keep-alive\n\n"
                continue
            if ev.kind == "delta":
                yield sse(fmt.chunk(ev.text, None, ev.logprobs, ev.reasoning))
            elif ev.kind == "tool_call":
                yield sse(fmt.tool_call_chunk(ev.tool_call, calls))
                calls += 1
            elif ev.kind == "finish":
                yield sse(fmt.chunk("", ev.finish_reason))
                if include_usage and ev.usage:
                    yield sse(fmt.usage_chunk(ev.usage))
                break
            elif ev.kind == "interrupt":
                # The marker: an OpenAI error event before [DONE] (the client raises on it).
                yield sse(error_body(INTERRUPT_ERROR))
                break
            elif ev.kind == "error":
                yield sse(error_body(ev.error))
                break
        yield b"data: [DONE]\n\n"
    finally:
        handle.cancel()


async def collect(handle, fmt: Formatter, want_logprobs: bool) -> tuple[int, dict]:
    parts: list[str] = []
    lps: list[TokenLogprob] = []
    calls = []
    thoughts: list[str] = []  # reasoning (issue 14)
    try:
        while True:
            ev: Event = await handle.next()
            if ev.kind == "delta":
                parts.append(ev.text)
                thoughts.append(ev.reasoning)
                lps.extend(ev.logprobs or [])
            elif ev.kind == "tool_call":
                calls.append(ev.tool_call)
            elif ev.kind == "finish":
                return 200, fmt.full("".join(parts), ev.finish_reason or "stop", ev.usage or Usage(),
                                     lps if want_logprobs else None, calls, "".join(thoughts))
            elif ev.kind == "interrupt":
                return 503, error_body(INTERRUPT_ERROR)
            elif ev.kind == "error":
                return ev.error.status, error_body(ev.error)
    finally:
        handle.cancel()
