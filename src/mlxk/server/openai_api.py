"""OpenAI wire format: chat/completions and completions over the engine's event stream.

This adapter only translates: request JSON -> GenerationRequest, Events -> OpenAI JSON /
SSE chunks. Another protocol (Anthropic Messages, Gemini) is another module like this one.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, AsyncIterator

from mlxk.engine.requests import EngineError, Event, GenerationRequest, SamplingParams, TokenLogprob, Usage

ROLES = {"system", "user", "assistant", "tool", "developer"}
INTERRUPT_MESSAGE = "Stream interrupted: the server is shutting down"


def error_body(err: EngineError) -> dict[str, Any]:
    return {"error": {"message": err.message, "type": err.type, "param": err.param, "code": err.code}}


def _bad(message: str, param: str | None = None) -> EngineError:
    return EngineError(400, message, param=param)


def _num(body: dict, key: str, kind: type, lo: float | None = None, hi: float | None = None, default=None):
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        raise _bad(f"'{key}' must be {'an integer' if kind is int else 'a number'}", key)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise _bad(f"'{key}' must be between {lo} and {hi}, got {value}", key)
    return kind(value)


def sampling_params(body: dict, max_tokens_cap: int) -> SamplingParams:
    max_tokens = _num(body, "max_completion_tokens", int, 1, max_tokens_cap)
    if max_tokens is None:
        max_tokens = _num(body, "max_tokens", int, 1, max_tokens_cap)
    stop = body.get("stop")
    if stop is None:
        stop = []
    elif isinstance(stop, str):
        stop = [stop]
    elif not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)) or len(stop) > 16:
        raise _bad("'stop' must be a string or a list of at most 16 strings", "stop")
    logprobs = body.get("logprobs")
    top_logprobs = _num(body, "top_logprobs", int, 0, 20, 0)
    if _num(body, "n", int, 1, 1, 1) != 1:
        raise _bad("'n' must be 1", "n")
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=_num(body, "temperature", float, 0, 2, 1.0),
        top_p=_num(body, "top_p", float, 0, 1, 1.0),
        top_k=_num(body, "top_k", int, 0, 1_000_000, 0),
        min_p=_num(body, "min_p", float, 0, 1, 0.0),
        seed=_num(body, "seed", int, -(2**63), 2**64 - 1),
        stop=stop,
        logprobs=bool(logprobs) if not isinstance(logprobs, int) or isinstance(logprobs, bool) else logprobs > 0,
        top_logprobs=top_logprobs if not isinstance(logprobs, int) or isinstance(logprobs, bool) else max(top_logprobs, logprobs),
    )


def parse_chat(body: dict, max_tokens_cap: int) -> GenerationRequest:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("'messages' must be a non-empty list", "messages")
    clean = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise _bad(f"messages[{i}].role must be one of {sorted(ROLES)}", f"messages[{i}].role")
        content = m.get("content")
        if content is not None and not isinstance(content, (str, list)):
            raise _bad(f"messages[{i}].content must be a string or a list of parts", f"messages[{i}].content")
        msg = {"role": "system" if m["role"] == "developer" else m["role"], "content": content or ""}
        for extra in ("tool_calls", "tool_call_id", "name"):
            if extra in m:
                msg[extra] = m[extra]
        clean.append(msg)
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise _bad("'tools' must be a list", "tools")
    return GenerationRequest(None, sampling_params(body, max_tokens_cap), messages=clean, tools=tools,
                             prompt_field="messages")


def parse_completion(body: dict, max_tokens_cap: int) -> GenerationRequest:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]
    ok = isinstance(prompt, str) or (isinstance(prompt, list) and prompt and
                                     all(isinstance(t, int) and not isinstance(t, bool) for t in prompt))
    if not ok:
        raise _bad("'prompt' must be a string or a list of token ids", "prompt")
    return GenerationRequest(None, sampling_params(body, max_tokens_cap), prompt=prompt, prompt_field="prompt")


# --- responses ------------------------------------------------------------------------

def _usage(u: Usage) -> dict[str, Any]:
    return {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
            "total_tokens": u.total_tokens, "prompt_tokens_details": {"cached_tokens": u.cached_tokens}}


def _chat_logprobs(lps: list[TokenLogprob]) -> dict[str, Any]:
    def one(t: str, v: float) -> dict:
        return {"token": t, "logprob": v, "bytes": list(t.encode("utf-8"))}

    return {"content": [{**one(lp.token, lp.logprob), "top_logprobs": [one(t, v) for t, v in lp.top]} for lp in lps]}


def _completion_logprobs(lps: list[TokenLogprob], offset: int) -> dict[str, Any]:
    offsets, pos = [], offset
    for lp in lps:
        offsets.append(pos)
        pos += len(lp.token)
    return {"tokens": [lp.token for lp in lps], "token_logprobs": [lp.logprob for lp in lps],
            "top_logprobs": [{t: v for t, v in lp.top} for lp in lps], "text_offset": offsets}


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

    def chunk(self, text: str = "", finish: str | None = None, lps: list[TokenLogprob] | None = None) -> dict:
        if self.kind == "chat":
            delta: dict[str, Any] = {}
            if not self.sent_role:
                delta["role"] = "assistant"
                self.sent_role = True
            if text or finish is None:
                delta["content"] = text
            choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish,
                                      "logprobs": _chat_logprobs(lps) if lps else None}
            return {**self._base("chat.completion.chunk"), "choices": [choice]}
        choice = {"index": 0, "text": text, "finish_reason": finish,
                  "logprobs": _completion_logprobs(lps, self.text_offset) if lps else None}
        self.text_offset += len(text)
        return {**self._base("text_completion"), "choices": [choice]}

    def usage_chunk(self, usage: Usage) -> dict:
        obj = "chat.completion.chunk" if self.kind == "chat" else "text_completion"
        return {**self._base(obj), "choices": [], "usage": _usage(usage)}

    def full(self, text: str, finish: str, usage: Usage, lps: list[TokenLogprob] | None) -> dict:
        if self.kind == "chat":
            choice = {"index": 0, "message": {"role": "assistant", "content": text},
                      "finish_reason": finish, "logprobs": _chat_logprobs(lps) if lps is not None else None}
            return {**self._base("chat.completion"), "choices": [choice], "usage": _usage(usage)}
        choice = {"index": 0, "text": text, "finish_reason": finish,
                  "logprobs": _completion_logprobs(lps, 0) if lps is not None else None}
        return {**self._base("text_completion"), "choices": [choice], "usage": _usage(usage)}


def sse(obj: Any) -> bytes:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n".encode()


INTERRUPT_ERROR = EngineError(503, INTERRUPT_MESSAGE, "server_error", code="interrupted")


async def stream_events(handle, fmt: Formatter, include_usage: bool) -> AsyncIterator[bytes]:
    """SSE body. The first ``start`` event was consumed by the caller."""
    try:
        yield sse(fmt.chunk(""))
        while True:
            ev: Event = await handle.next()
            if ev.kind == "delta":
                yield sse(fmt.chunk(ev.text, None, ev.logprobs))
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
    try:
        while True:
            ev: Event = await handle.next()
            if ev.kind == "delta":
                parts.append(ev.text)
                lps.extend(ev.logprobs or [])
            elif ev.kind == "finish":
                return 200, fmt.full("".join(parts), ev.finish_reason or "stop", ev.usage or Usage(),
                                     lps if want_logprobs else None)
            elif ev.kind == "interrupt":
                return 503, error_body(INTERRUPT_ERROR)
            elif ev.kind == "error":
                return ev.error.status, error_body(ev.error)
    finally:
        handle.cancel()
