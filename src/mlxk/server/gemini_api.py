"""Gemini wire format: ``/v1beta/models/{model}:generateContent``, ``:streamGenerateContent``,
``:countTokens`` and ``GET /v1beta/models`` (what gemini-cli and google-genai speak).

This module only translates (the request models are in gemini_models.py): ``contents`` (text, functionCall, functionResponse parts),
``systemInstruction``, ``tools.functionDeclarations`` (``parameters`` in Google's schema
dialect, upper-case types, or ``parametersJsonSchema``), ``toolConfig`` and
``generationConfig`` -> GenerationRequest, every field in either proto3 JSON spelling
(``parametersJsonSchema`` or ``parameters_json_schema``); fields this server does not honour
are logged or refused (request_fields.py); events -> GenerateContentResponse objects (one
per SSE ``data:`` line with ``?alt=sse``, a JSON array without). Reasoning is a part with
``thought: true``. Errors have Google's shape ``{"error": {"code", "message", "status"}}``.
The key comes as ``x-goog-api-key`` or ``?key=``.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, AsyncIterator

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from mlxk.engine.requests import EngineError, GenerationRequest, OutputFormat, SamplingParams, Usage
from mlxk.server import handlers
from mlxk.server.gemini_models import (CountTokensRequest, FunctionDeclaration, GenerateContentRequest,
                                       GenerationConfig)
from mlxk.server.openai_models import param_of
from mlxk.server.request_fields import review

STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
          405: "INVALID_ARGUMENT", 413: "INVALID_ARGUMENT", 415: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED",
          499: "CANCELLED", 500: "INTERNAL", 503: "UNAVAILABLE"}


# --- errors ---------------------------------------------------------------------------------

def error_body(err: EngineError) -> dict[str, Any]:
    return {"error": {"code": err.status, "message": err.message,
                      "status": STATUS.get(err.status, "INTERNAL" if err.status >= 500 else "INVALID_ARGUMENT")}}


def error_response(err: EngineError) -> JSONResponse:
    return JSONResponse(error_body(err), status_code=err.status,
                        headers={"Retry-After": "2"} if err.status == 503 else None)


def _validate(model: type[BaseModel], body: Any):
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        param = param_of(first["loc"])
        raise EngineError(400, f"Invalid value at '{param or 'body'}': {first['msg']}", param=param) from None


# --- request -> GenerationRequest --------------------------------------------------------------

def _messages(req: GenerateContentRequest) -> list[dict]:
    out: list[dict] = []
    if req.system_instruction is not None:
        system = "".join(p.text or "" for p in req.system_instruction.parts)
        if system:
            out.append({"role": "system", "content": system})
    pending: dict[str, list[str]] = {}  # name -> ids of calls not yet answered (a result may carry no id)
    for i, c in enumerate(req.contents):
        text: list[str] = []
        calls: list[dict] = []
        for j, p in enumerate(c.parts):
            if p.inline_data is not None or p.file_data is not None:
                raise EngineError(400, f"contents[{i}].parts[{j}]: images and files are not supported: this "
                                       "server's models read text only", param=f"contents[{i}].parts[{j}]")
            if p.function_call is not None:
                call_id = p.function_call.id or "call_" + uuid.uuid4().hex[:24]
                pending.setdefault(p.function_call.name, []).append(call_id)
                calls.append({"id": call_id, "type": "function", "function": {
                    "name": p.function_call.name, "arguments": json.dumps(p.function_call.args, ensure_ascii=False)}})
            elif p.function_response is not None:
                fr = p.function_response
                ids = pending.get(fr.name) or []
                call_id = fr.id or (ids.pop(0) if ids else fr.name)
                out.append({"role": "tool", "tool_call_id": call_id, "name": fr.name,
                            "content": json.dumps(fr.response, ensure_ascii=False)})
            elif p.text and not p.thought:
                text.append(p.text)
        if text or calls:
            msg: dict[str, Any] = {"role": "assistant" if c.role == "model" else "user", "content": "".join(text)}
            if calls:
                msg["tool_calls"] = calls
            out.append(msg)
    return out


CALLING = "toolConfig.functionCallingConfig"


def _declarations(req: GenerateContentRequest) -> list[FunctionDeclaration]:
    out: list[FunctionDeclaration] = []
    for i, t in enumerate(req.tools or []):
        for j, d in enumerate(t.function_declarations or []):
            if d.parameters is not None and d.parameters_json_schema is not None:
                where = f"tools[{i}].functionDeclarations[{j}]"
                raise EngineError(400, f"Invalid value at '{where}': give 'parameters' or 'parametersJsonSchema', "
                                       "not both", param=where)
            out.append(d)
    return out


def _tools(req: GenerateContentRequest) -> tuple[list[dict] | None, str | None]:
    """The declarations offered and the engine's tool_choice. Mode ANY is always a call: to
    the one function left after ``allowedFunctionNames``, or to any of those left."""
    decls = _declarations(req)
    cfg = req.tool_config.function_calling_config if req.tool_config else None
    mode = (cfg.mode if cfg else None) or "AUTO"
    allowed = cfg.allowed_function_names if cfg else None
    if allowed:
        unknown = [n for n in allowed if n not in {d.name for d in decls}]
        if unknown:
            raise EngineError(400, f"Invalid value at '{CALLING}.allowedFunctionNames': {', '.join(unknown)} "
                                   "is not a declared function", param=f"{CALLING}.allowedFunctionNames")
        decls = [d for d in decls if d.name in allowed]
    if mode == "ANY" and not decls:
        raise EngineError(400, f"Invalid value at '{CALLING}.mode': mode ANY needs at least one function "
                               "declaration", param=f"{CALLING}.mode")
    tools = [{"type": "function", "function": {"name": d.name, "description": d.description or "",
                                               "parameters": d.arguments_schema()}} for d in decls]
    if mode == "NONE":
        return tools or None, "none"
    if mode == "ANY":
        return tools, decls[0].name if len(decls) == 1 else "required"
    return tools or None, "auto" if tools else None


def _output_format(cfg: GenerationConfig | None) -> OutputFormat | None:
    if cfg is None:
        return None
    if cfg.response_schema is not None and cfg.response_json_schema is not None:
        raise EngineError(400, "Invalid value at 'generationConfig': give 'responseSchema' or 'responseJsonSchema', "
                               "not both", param="generationConfig.responseJsonSchema")
    schema = cfg.response_json_schema
    if schema is None and cfg.response_schema is not None:
        schema = cfg.response_schema.json_schema()
    if cfg.response_mime_type != "application/json":
        if schema is not None:
            raise EngineError(400, "Invalid value at 'generationConfig.responseMimeType': a response schema needs "
                                   "responseMimeType 'application/json'", param="generationConfig.responseMimeType")
        return None
    return OutputFormat("json_schema", schema) if schema else OutputFormat("json_object")


def _request(req: GenerateContentRequest, max_tokens_cap: int) -> GenerationRequest:
    cfg = req.generation_config or GenerationConfig()
    if cfg.max_output_tokens and cfg.max_output_tokens > max_tokens_cap:
        raise EngineError(400, f"Invalid value at 'generationConfig.maxOutputTokens': must be at most "
                               f"{max_tokens_cap} on this server", param="generationConfig.maxOutputTokens")
    sampling = {k: v for k, v in (("temperature", cfg.temperature), ("top_p", cfg.top_p), ("top_k", cfg.top_k),
                                  ("seed", cfg.seed)) if v is not None}
    try:
        params = SamplingParams(max_tokens=cfg.max_output_tokens, stop=list(cfg.stop_sequences or []), **sampling)
    except ValidationError as exc:
        raise EngineError(400, f"Invalid generationConfig: {exc.errors()[0]['msg']}") from None
    tools, choice = _tools(req)
    return GenerationRequest(None, params, messages=_messages(req), tools=tools, tool_choice=choice,
                             output_format=_output_format(req.generation_config))


def parse(body: Any, max_tokens_cap: int) -> GenerationRequest:
    req: GenerateContentRequest = _validate(GenerateContentRequest, body)
    review(req, "gemini")
    return _request(req, max_tokens_cap)


def parse_count(body: Any) -> GenerationRequest:
    req: CountTokensRequest = _validate(CountTokensRequest, body)
    review(req, "gemini.countTokens")
    if req.generate_content_request is not None:
        return _request(req.generate_content_request, 1 << 30)
    if not req.contents:
        raise EngineError(400, "Invalid value at 'contents': give contents or generateContentRequest",
                          param="contents")
    return _request(GenerateContentRequest(contents=req.contents), 1 << 30)


# --- events -> GenerateContentResponse ------------------------------------------------------------

FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP"}


def usage_of(u: Usage) -> dict[str, int]:
    return {"promptTokenCount": u.prompt_tokens, "candidatesTokenCount": u.completion_tokens,
            "totalTokenCount": u.total_tokens, "cachedContentTokenCount": u.cached_tokens}


def _call_part(call) -> dict[str, Any]:
    return {"functionCall": {"id": call.id, "name": call.name, "args": json.loads(call.arguments or "{}")}}


def response(model: str, resp_id: str, parts: list[dict], finish: str | None = None,
             usage: Usage | None = None) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish:
        candidate["finishReason"] = FINISH.get(finish, "STOP")
    out: dict[str, Any] = {"candidates": [candidate], "modelVersion": model, "responseId": resp_id}
    if usage is not None:
        out["usageMetadata"] = usage_of(usage)
    return out


def full(result: handlers.Result, resp_id: str) -> dict[str, Any]:
    parts: list[dict] = []
    if result.reasoning:
        parts.append({"text": result.reasoning, "thought": True})
    if result.text or not result.tool_calls:
        parts.append({"text": result.text})
    parts += [_call_part(c) for c in result.tool_calls]
    return response(result.model, resp_id, parts, result.finish_reason, result.usage)


async def chunks(handle, first, resp_id: str) -> AsyncIterator[dict | None]:
    """One response object per event (None: a keep-alive tick); the last carries finishReason
    and usageMetadata."""
    model = first.model or ""
    async for ev in handlers.events(handle):
        if ev is None:
            yield None
        elif ev.kind == "delta":
            parts = ([{"text": ev.reasoning, "thought": True}] if ev.reasoning else []) + \
                    ([{"text": ev.text}] if ev.text else [])
            if parts:
                yield response(model, resp_id, parts)
        elif ev.kind == "tool_call" and ev.tool_call is not None:
            yield response(model, resp_id, [_call_part(ev.tool_call)])
        elif ev.kind == "finish":
            yield response(model, resp_id, [{"text": ""}], ev.finish_reason or "stop", ev.usage or Usage())
        else:
            raise handlers.stream_error(ev)


async def sse(handle, first, resp_id: str) -> AsyncIterator[bytes]:
    try:
        async for obj in chunks(handle, first, resp_id):
            yield b": keep-alive\n\n" if obj is None else f"data: {json.dumps(obj, ensure_ascii=False)}\n\n".encode()
    except EngineError as err:
        yield f"data: {json.dumps(error_body(err))}\n\n".encode()


# --- endpoints -------------------------------------------------------------------------------------

def split_target(path: str) -> tuple[str, str]:
    """``org/name:generateContent`` -> (``org/name``, ``generateContent``)."""
    model, sep, method = path.rpartition(":")
    if not sep:
        return path, ""
    return model, method


async def model_action(state, request: Request) -> Response:
    model, method = split_target(request.path_params["target"])
    try:
        handlers.check_auth(state, request)
        if method not in ("generateContent", "streamGenerateContent", "countTokens"):
            raise EngineError(404, f"Unknown method '{method or request.url.path}': use :generateContent, "
                                   ":streamGenerateContent or :countTokens", code="not_found")
        body = await handlers.read_json(request)
        if method == "countTokens":
            return JSONResponse({"totalTokens": await handlers.count_tokens(state, parse_count(body), model)})
        gen = parse(body, state.config.max_tokens)
        handle, first = await handlers.start(state, gen, model)
    except EngineError as err:
        return error_response(err)
    resp_id = uuid.uuid4().hex[:24]
    if method == "streamGenerateContent":
        if request.query_params.get("alt") == "sse":
            return StreamingResponse(sse(handle, first, resp_id), media_type="text/event-stream",
                                     headers=handlers.SSE_HEADERS)
        try:  # without alt=sse: the same chunks as one JSON array
            return JSONResponse([c async for c in chunks(handle, first, resp_id) if c is not None])
        except EngineError as err:
            return error_response(err)
    try:
        result = await handlers.collect(request, handle, first)
    except EngineError as err:
        return error_response(err)
    return JSONResponse(full(result, resp_id))


async def list_models(state, request: Request) -> Response:
    import asyncio

    try:
        handlers.check_auth(state, request)
    except EngineError as err:
        return error_response(err)
    from mlxk.server.app import list_runnable

    data = await asyncio.to_thread(list_runnable, state)
    methods = ["generateContent", "streamGenerateContent", "countTokens"]
    return JSONResponse({"models": [{"name": f"models/{m['id']}", "baseModelId": m["id"], "version": "mlxk",
                                     "displayName": m["id"], "inputTokenLimit": m.get("context_length") or 0,
                                     "outputTokenLimit": state.config.max_tokens,
                                     "supportedGenerationMethods": methods} for m in data]})
