"""What every protocol's endpoints share: the body, the key, the model, the engine round trip.

A protocol module (openai_api, anthropic_api, responses_api, gemini_api) only translates its
JSON to a GenerationRequest and the engine's events back; the steps around that are here,
once: the key from whichever header the client uses, the body read within its limit, the
model (aliases first; chat refused for a base model), the engine's answer collected or
streamed with keep-alives.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable

from starlette.requests import Request

from mlxk.engine.bridge import RequestHandle
from mlxk.engine.requests import EngineError, Event, GenerationRequest, ToolCall, Usage
from mlxk.server import security
from mlxk.server.model_access import check_chat_capable

log = logging.getLogger("mlxk.server")
MAX_BODY = 4 * 1024 * 1024  # bytes of a request body; more is refused with 413 without being read
INTERRUPT_MESSAGE = "Stream interrupted: the server is shutting down"
INTERRUPT_ERROR = EngineError(503, INTERRUPT_MESSAGE, "server_error", code="interrupted")


def presented_key(request: Request) -> str | None:
    """The key in whichever place the client's SDK puts it: ``Authorization: Bearer`` (OpenAI,
    Claude Code), ``x-api-key`` (Anthropic), ``x-goog-api-key`` or ``?key=`` (Gemini)."""
    h = request.headers
    return (security.bearer_key(h) or h.get("x-api-key") or h.get("x-goog-api-key")
            or request.query_params.get("key"))


def check_auth(state, request: Request) -> None:
    security.check_key(state.config.api_key, presented_key(request))


async def read_json(request: Request) -> dict:
    """The body's JSON object, read no further than MAX_BODY bytes (nor at all when
    Content-Length announces more)."""
    from mlxk.server.openai_api import load_json_object

    too_large = EngineError(413, f"Request body larger than {MAX_BODY} bytes", code="request_too_large")
    try:
        announced = int(request.headers.get("content-length", "0"))
    except ValueError:
        announced = 0
    if announced > MAX_BODY:
        raise too_large
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY:
            raise too_large
    return load_json_object(bytes(raw))


def _ready_for(state, gen: GenerationRequest) -> None:
    from mlxk.server.openai_api import check_prompt_size

    if state.shutting_down:
        raise EngineError(503, "Server is shutting down", "server_error", code="shutting_down")
    eng = state.engine
    if gen.target is None and eng.state == "loading":
        raise EngineError(503, "The model is loading, retry shortly", "server_error", code="model_loading")
    if gen.target is None and eng.state == "failed":
        raise EngineError(503, f"The model failed to load: {eng.load_error}", "server_error", code="model_load_failed")
    wanted = gen.target or eng.default
    if wanted is not None and eng.current is not None and wanted.key == eng.current.key:
        check_prompt_size(gen, eng.context_length)
    _check_constraint(gen)


def _check_constraint(gen: GenerationRequest) -> None:
    """A schema or tool_choice that cannot compile is the client's 400 in every protocol
    (OpenAI's parse names its own fields first; this names the engine's)."""
    if gen.output_format is None and not gen.tools:
        return
    from mlxk.engine.constraints import SchemaError, check

    try:
        check(gen)
    except SchemaError as exc:
        param = exc.field if getattr(exc, "index", None) is None else f"{exc.field}[{exc.index}]"
        raise EngineError(400, exc.message, param=param,
                          code="invalid_schema" if exc.field != "tool_choice" else None) from None


async def begin(state, request: Request, parse: Callable[[dict, int], tuple[GenerationRequest, Any]]
                ) -> tuple[RequestHandle, Event, Any]:
    """What a generating endpoint does first, whatever its protocol: the key, the body, the
    protocol's ``parse(body, max_tokens) -> (GenerationRequest, its request model)``, then
    :func:`start` (EngineError at any step). Returns the handle, its first event, the model."""
    check_auth(state, request)
    body = await read_json(request)
    gen, req = parse(body, state.config.max_tokens)
    handle, first = await start(state, gen, req.model)
    return handle, first, req


async def start(state, gen: GenerationRequest, model: Any, count_only: bool = False) -> tuple[RequestHandle, Event]:
    """Submit ``gen`` for ``model`` and wait for its first event; EngineError if it failed."""
    gen.params = gen.params.filled_from(state.config.defaults)  # the server's --temp etc., every protocol
    gen.target = await state.target_for(model)
    wanted = gen.target or state.engine.default
    check_chat_capable(gen, wanted)  # a base model takes /v1/completions only (every protocol's chat: 400)
    _ready_for(state, gen)
    log.info("request model=%s", wanted.name if wanted else "-")
    handle = RequestHandle(asyncio.get_running_loop(), gen)
    handle.count_only = count_only  # engine: tokenize only, answer with the count (batch.Engine._count)
    state.engine.submit(handle)
    try:
        first = await handle.next()
    except asyncio.CancelledError:
        handle.cancel()
        raise
    if first.kind == "error":
        raise first.error
    if first.kind == "interrupt":
        raise INTERRUPT_ERROR
    return handle, first


async def count_tokens(state, gen: GenerationRequest, model: Any) -> int:
    """The prompt's real token count, by the engine's tokenizer and template (nothing generated)."""
    _, first = await start(state, gen, model, count_only=True)
    return first.usage.prompt_tokens if first.usage else 0


@dataclass
class Result:
    """A whole answer, for the non-streaming forms."""

    model: str = ""
    text: str = ""
    reasoning: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str = "stop"
    stop_sequence: str | None = None
    usage: Usage = field(default_factory=Usage)


def watch_disconnect(request: Request, handle: RequestHandle) -> asyncio.Task:
    """A task that cancels ``handle`` when a non-streaming client goes away (cancel it when done)."""

    async def watch() -> None:
        while True:
            await asyncio.sleep(0.25)
            if await request.is_disconnected():
                handle.cancel()
                return

    return asyncio.create_task(watch())


async def collect(request: Request, handle: RequestHandle, first: Event) -> Result:
    """Every event up to ``finish``; EngineError on an error or interrupt. A client that goes
    away frees its sequence."""
    watcher = watch_disconnect(request, handle)
    out = Result(model=first.model or "")
    text: list[str] = []
    reasoning: list[str] = []
    try:
        while True:
            ev = await handle.next()
            if ev.kind == "delta":
                text.append(ev.text)
                reasoning.append(ev.reasoning)
            elif ev.kind == "tool_call" and ev.tool_call is not None:
                out.tool_calls.append(ev.tool_call)
            elif ev.kind == "finish":
                out.text, out.reasoning = "".join(text), "".join(reasoning)
                out.finish_reason = ev.finish_reason or "stop"
                out.stop_sequence = getattr(ev, "stop_sequence", None)
                out.usage = ev.usage or Usage()
                return out
            elif ev.kind == "interrupt":
                raise INTERRUPT_ERROR
            elif ev.kind == "error":
                raise ev.error
    finally:
        watcher.cancel()
        handle.cancel()


async def events(handle: RequestHandle, keepalive_s: float | None = None) -> AsyncIterator[Event | None]:
    """The stream's events through the last one (finish, error, interrupt); None when
    ``keepalive_s`` passed without one (a long prefill: the protocol sends its ping)."""
    from mlxk.server.openai_api import KEEPALIVE_S

    wait = KEEPALIVE_S if keepalive_s is None else keepalive_s
    try:
        while True:
            ev = await handle.next_within(wait)
            yield ev
            if ev is not None and ev.kind in ("finish", "error", "interrupt"):
                return
    finally:
        handle.cancel()


def stream_error(ev: Event) -> EngineError:
    """The EngineError of a stream's last event when it is not ``finish``."""
    return INTERRUPT_ERROR if ev.kind == "interrupt" else ev.error


SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


# --- /openapi.json ------------------------------------------------------------------------------

_OPENAPI: dict | None = None


def openapi_document() -> dict[str, Any]:
    """The endpoints and their request bodies, from the protocols' own pydantic models."""
    from pydantic.json_schema import models_json_schema

    from mlxk.server import anthropic_api, gemini_api, openai_models, responses_api

    bodies = {
        ("/v1/chat/completions", "post"): openai_models.ChatRequest,
        ("/v1/completions", "post"): openai_models.CompletionRequest,
        ("/v1/messages", "post"): anthropic_api.MessagesRequest,
        ("/v1/messages/count_tokens", "post"): anthropic_api.CountTokensRequest,
        ("/v1/responses", "post"): responses_api.ResponsesRequest,
        ("/v1beta/models/{model}:generateContent", "post"): gemini_api.GenerateContentRequest,
        ("/v1beta/models/{model}:streamGenerateContent", "post"): gemini_api.GenerateContentRequest,
        ("/v1beta/models/{model}:countTokens", "post"): gemini_api.CountTokensRequest,
    }
    answers = {("/v1/messages", "post"): anthropic_api.MessageResponse}
    errors = [anthropic_api.ErrorResponse]
    models = sorted({*bodies.values(), *answers.values(), *errors}, key=lambda m: m.__name__ + m.__module__)
    keys, defs = models_json_schema([(m, "validation") for m in models],
                                    ref_template="#/components/schemas/{model}")
    ref = {m: keys[(m, "validation")] for m in models}
    paths: dict[str, dict] = {}
    for (path, method), model in bodies.items():
        op: dict[str, Any] = {"requestBody": {"required": True, "content": {"application/json": {"schema": ref[model]}}},
                              "responses": {"200": {"description": "the answer (or an SSE stream when asked)"}}}
        if (path, method) in answers:
            op["responses"]["200"]["content"] = {"application/json": {"schema": ref[answers[(path, method)]]}}
        paths.setdefault(path, {})[method] = op
    for path in ("/v1/models", "/v1beta/models", "/health", "/metrics"):
        paths[path] = {"get": {"responses": {"200": {"description": "OK"}}}}
    from mlxk import __version__

    return {"openapi": "3.1.0", "info": {"title": "mlxk serve", "version": __version__}, "paths": paths,
            "components": {"schemas": defs.get("$defs", {})}}


async def openapi(state, request: Request):
    from starlette.responses import JSONResponse

    global _OPENAPI
    if _OPENAPI is None:
        _OPENAPI = openapi_document()
    return JSONResponse(_OPENAPI)
