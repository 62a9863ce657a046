"""The HTTP app (Starlette): routing, auth, model selection, /health, /metrics.

Protocol adapters (openai_api, later anthropic/gemini) turn bodies into engine requests.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from mlxk.engine.batch import Engine
from mlxk.engine.requests import EngineError, ModelTarget, SamplingParams
from mlxk.server import handlers, openai_api, security
from mlxk.server.model_access import ModelAccess

log = logging.getLogger("mlxk.server")


@dataclass
class ServerConfig:
    model_spec: str | None = None
    api_key: str | None = None
    allow: list[str] = field(default_factory=list)
    max_tokens: int = 4096
    security: security.SecurityPolicy = field(default_factory=security.SecurityPolicy)
    model_dirs: list[str] = field(default_factory=list)  # folders a request may name by path
    defaults: SamplingParams | None = None  # --temp/--top-p/--top-k/--default-max-tokens
    aliases: dict[str, str] = field(default_factory=dict)  # --alias NAME=MODEL ("*": any other name)


class ServeState:
    def __init__(self, engine: Engine, config: ServerConfig):
        self.engine = engine
        self.config = config
        self.started = time.time()
        self.shutting_down = False
        self.access = ModelAccess(config.model_spec, config.allow, config.model_dirs, config.aliases)

    async def target_for(self, requested: Any) -> ModelTarget | None:
        return await self.access.target_for(requested, self.engine.default)


def _err(err: EngineError, headers: dict | None = None) -> JSONResponse:
    headers = dict(headers or {})
    if err.status == 503:
        headers.setdefault("Retry-After", "2")
    if err.status == 413:  # the rest of the body stays unread: end the connection rather than drain it
        headers.setdefault("Connection", "close")
    return JSONResponse(openai_api.error_body(err), status_code=err.status, headers=headers)


def build_app(state: ServeState) -> Starlette:
    async def generate(request: Request, kind: str) -> Response:
        try:
            handlers.check_auth(state, request)  # any of the protocols' key headers (issue 14)
            if state.shutting_down:
                raise EngineError(503, "Server is shutting down", "server_error", code="shutting_down")
            body = await handlers.read_json(request)
            cap = state.config.max_tokens
            gen = openai_api.parse_chat(body, cap) if kind == "chat" else openai_api.parse_completion(body, cap)
            stream = bool(body.get("stream"))  # types checked by the parse above
            opts = body.get("stream_options") or {}
            handle, first = await handlers.start(state, gen, body.get("model"))
        except EngineError as err:
            log.info("%s %s -> %d %s", request.method, request.url.path, err.status, err.code or err.type)
            return _err(err)
        fmt = openai_api.Formatter(kind, first.model or "")
        if stream:
            return StreamingResponse(openai_api.stream_events(handle, fmt, bool(opts.get("include_usage"))),
                                     media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        watcher = handlers.watch_disconnect(request, handle)  # a client that goes away frees its sequence
        try:
            status, payload = await openai_api.collect(handle, fmt, gen.params.logprobs)
        finally:
            watcher.cancel()
        return JSONResponse(payload, status_code=status, headers={"Retry-After": "2"} if status == 503 else None)

    async def chat(request: Request) -> Response:
        return await generate(request, "chat")

    async def completions(request: Request) -> Response:
        return await generate(request, "completion")

    async def models(request: Request) -> Response:
        try:
            handlers.check_auth(state, request)  # any of the protocols' key headers (issue 14)
        except EngineError as err:
            return _err(err)
        data = await asyncio.to_thread(list_runnable, state)
        return JSONResponse({"object": "list", "data": data})

    async def health(request: Request) -> Response:
        eng = state.engine
        pc = eng.prefix_cache
        status = "shutting_down" if state.shutting_down else eng.state
        body = {
            "status": "ok" if status in ("ready", "idle") else status,
            "model": eng.current.name if eng.current else (eng.default.name if eng.default else None),
            "active_sequences": eng.active_sequences,
            "queued": eng.queued,
            "prefix_cache_files": pc.disk_files if pc else 0,
            "prefix_cache_bytes": pc.disk_bytes if pc else 0,
            "prefix_cache_hits": eng.metrics.cache_hits,
            "prefix_cache_misses": eng.metrics.cache_misses,
            "uptime": round(time.time() - state.started, 3),
        }
        if eng.load_error:
            body["error"] = eng.load_error
        if eng.kv_quant is not None:
            body["kv_cache"] = eng.kv_quant.describe()
        if eng.load_errors:
            body["load_errors"] = eng.load_errors  # {model: reason} of loads that failed
        code = 200 if body["status"] == "ok" else 503
        return JSONResponse(body, status_code=code, headers={"Retry-After": "2"} if code == 503 else None)

    async def metrics(request: Request) -> Response:
        return PlainTextResponse(render_metrics(state), media_type="text/plain; version=0.0.4")

    async def not_found(request: Request, exc) -> Response:
        return _err(EngineError(404, f"Unknown path {request.url.path}", code="not_found"))

    async def bad_method(request: Request, exc) -> Response:
        return _err(EngineError(405, f"Method {request.method} not allowed on {request.url.path}", code="method_not_allowed"))

    routes = [
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/chat/completions", chat, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/completions", completions, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        *protocol_routes(state),
    ]
    return Starlette(routes=routes, exception_handlers={404: not_found, 405: bad_method},
                     middleware=security.middleware(state.config.security))


def protocol_routes(state: ServeState) -> list[Route]:
    """Anthropic Messages, OpenAI Responses, Gemini, and /openapi.json (each module only translates)."""
    from mlxk.server import anthropic_api, gemini_api, handlers, responses_api

    table = [("/v1/messages", anthropic_api.messages, "POST"),
             ("/v1/messages/count_tokens", anthropic_api.count_tokens, "POST"),
             ("/v1/responses", responses_api.responses, "POST"),
             ("/v1beta/models", gemini_api.list_models, "GET"),
             ("/v1beta/models/{target:path}", gemini_api.model_action, "POST"),
             ("/v1/models/{target:path}", gemini_api.model_action, "POST"),  # google-genai's default version
             ("/openapi.json", handlers.openapi, "GET")]

    def bind(fn):
        async def endpoint(request: Request) -> Response:
            return await fn(state, request)
        return endpoint

    return [Route(path, bind(fn), methods=[method]) for path, fn, method in table]


def list_runnable(state: ServeState) -> list[dict]:
    from mlxk.inspection.context import context_length
    from mlxk.ops.listing import inspect_all

    out: dict[str, dict] = {}
    eng = state.engine
    override = getattr(eng, "context_length_override", None)  # serve --context-length
    for target in [t for t in (eng.default, eng.current) if t is not None]:
        out[target.name] = {"id": target.name, "object": "model", "created": int(state.started), "owned_by": "mlxk",
                            "context_length": override or context_length(target.path, None)}
    for alias, target in state.access.alias_targets().items():  # --alias names are models to clients too
        out.setdefault(alias, {"id": alias, "object": "model", "created": int(state.started), "owned_by": "mlxk",
                               "alias_of": target.name,
                               "context_length": override or context_length(target.path, None)})
    try:
        found = inspect_all()
    except Exception:  # the cache may be unreadable; the loaded model still counts
        found = []
    for info in found:
        if not (info.healthy and info.runtime_compatible and info.framework == "MLX" and info.ref.path):
            continue
        name = info.ref.name
        if state.config.allow and name not in state.config.allow:
            continue
        created = int(info.ref.snapshot.last_modified) if info.ref.snapshot else int(state.started)
        out.setdefault(name, {"id": name, "object": "model", "created": created, "owned_by": name.split("/")[0],
                              "context_length": context_length(info.ref.path, None)})
    return list(out.values())


def render_metrics(state: ServeState) -> str:
    eng, m = state.engine, state.engine.metrics
    lines = [
        "# TYPE mlxk_requests_total counter", f"mlxk_requests_total {m.requests}",
        "# TYPE mlxk_requests_failed_total counter", f"mlxk_requests_failed_total {m.requests_failed}",
        "# TYPE mlxk_prompt_tokens_total counter", f"mlxk_prompt_tokens_total {m.prompt_tokens}",
        "# TYPE mlxk_completion_tokens_total counter", f"mlxk_completion_tokens_total {m.completion_tokens}",
        "# TYPE mlxk_active_sequences gauge", f"mlxk_active_sequences {eng.active_sequences}",
        "# TYPE mlxk_queued_requests gauge", f"mlxk_queued_requests {eng.queued}",
        "# TYPE mlxk_batch_size_avg gauge",
        f"mlxk_batch_size_avg {m.batch_size_sum / m.batch_steps if m.batch_steps else 0:.3f}",
        "# TYPE mlxk_prefix_cache_hits_total counter", f"mlxk_prefix_cache_hits_total {m.cache_hits}",
        "# TYPE mlxk_prefix_cache_misses_total counter", f"mlxk_prefix_cache_misses_total {m.cache_misses}",
        *_disk_write_metrics(eng.prefix_cache, m.requests),
        *(line for name, value in eng.memory().items()
          for line in (f"# TYPE mlxk_memory_{name}_bytes gauge", f"mlxk_memory_{name}_bytes {value}")),
        "# TYPE mlxk_ttft_seconds histogram",
    ]
    cum = 0
    for b, c in zip(m.TTFT_BUCKETS, m.ttft_counts):
        cum += c
        lines.append(f'mlxk_ttft_seconds_bucket{{le="{b}"}} {cum}')
    lines.append(f'mlxk_ttft_seconds_bucket{{le="+Inf"}} {m.ttft_n}')
    lines += [f"mlxk_ttft_seconds_sum {m.ttft_sum:.6f}", f"mlxk_ttft_seconds_count {m.ttft_n}"]
    return "\n".join(lines) + "\n"


def _disk_write_metrics(pc, requests: int) -> list[str]:
    """What the disk prefix cache wrote, in all and per request (its cost in disk wear)."""
    written = pc.bytes_written if pc else 0
    files = pc.files_written if pc else 0
    return ["# TYPE mlxk_prefix_cache_bytes_written_total counter", f"mlxk_prefix_cache_bytes_written_total {written}",
            "# TYPE mlxk_prefix_cache_files_written_total counter", f"mlxk_prefix_cache_files_written_total {files}",
            "# TYPE mlxk_prefix_cache_bytes_written_per_request gauge",
            f"mlxk_prefix_cache_bytes_written_per_request {written / requests if requests else 0:.1f}"]
