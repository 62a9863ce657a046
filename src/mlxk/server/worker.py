"""The server process (run by the supervisor): engine thread + Starlette app under uvicorn.

Signals: the first SIGINT/SIGTERM interrupts every running stream (each gets the interrupt
marker and ``[DONE]``), stops accepting and exits 0; uvicorn force-exits on a second one.

The API key comes only from ``MLXK_API_KEY`` (argv is world-readable in ``ps``). With
``--supervisor-pid`` the worker never outlives its supervisor (see ``watch_supervisor``).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import logging
import os
import signal
import sys
import threading
import time


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({"ts": record.created, "level": record.levelname, "logger": record.name,
                           "msg": record.getMessage()})


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="mlxk-serve-worker")
    p.add_argument("--model")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-tokens", type=int, default=4096)
    p.add_argument("--allow", nargs="*", default=[])
    p.add_argument("--model-dir", action="append", default=[])
    p.add_argument("--idle-unload", type=float)
    p.add_argument("--prefix-cache-dir")
    p.add_argument("--prefix-cache-bytes", type=int)
    p.add_argument("--no-prefix-cache", action="store_true")
    p.add_argument("--max-concurrency", type=int, default=32)
    p.add_argument("--max-queue", type=int)
    p.add_argument("--log-json", action="store_true")
    p.add_argument("--temp", type=float)  # request defaults (a request's own value wins)
    p.add_argument("--top-p", type=float)
    p.add_argument("--top-k", type=int)
    p.add_argument("--default-max-tokens", type=int)
    p.add_argument("--kv-bits", type=int)  # KV-cache quantization
    p.add_argument("--kv-group-size", type=int)
    p.add_argument("--kv-quantized-start", type=int)
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--alias", action="append", default=[])  # NAME=MODEL
    p.add_argument("--context-length", type=int)
    p.add_argument("--allowed-host", action="append", default=[])
    p.add_argument("--cors-origin", action="append", default=[])
    p.add_argument("--supervisor-pid", type=int, help="exit when this parent dies; stdin is a pipe from it")
    return p.parse_args(argv)


def request_defaults(args: argparse.Namespace):
    """--temp/--top-p/--top-k/--default-max-tokens as validated SamplingParams (None: none given)."""
    from pydantic import ValidationError

    from mlxk.engine.requests import SamplingParams

    given = {k: v for k, v in (("temperature", args.temp), ("top_p", args.top_p), ("top_k", args.top_k),
                               ("max_tokens", args.default_max_tokens)) if v is not None}
    if not given:
        return None
    try:
        return SamplingParams(**given)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise SystemExit(f"invalid request default {first['loc'][0]}: {first['msg']}") from None




def kv_quant_of(args: argparse.Namespace):
    """--kv-bits / --kv-group-size / --kv-quantized-start as the engine's KVQuant (None: off)."""
    from mlxk.engine.solo import KV_BITS, KV_GROUP_SIZES, KVQuant

    if args.kv_bits is None:
        return None
    if args.kv_bits not in KV_BITS:
        raise SystemExit(f"--kv-bits must be one of {KV_BITS}, got {args.kv_bits}")
    group = 64 if args.kv_group_size is None else args.kv_group_size
    if group not in KV_GROUP_SIZES:
        raise SystemExit(f"--kv-group-size must be one of {KV_GROUP_SIZES}, got {group}")
    start = 0 if args.kv_quantized_start is None else args.kv_quantized_start
    if start < 0:
        raise SystemExit(f"--kv-quantized-start must be 0 or more, got {start}")
    return KVQuant(args.kv_bits, group, start)


PR_SET_PDEATHSIG = 1


def watch_supervisor(supervisor_pid: int, grace: float = 8.0) -> None:
    """Never serve orphaned: a ``kill -9`` of the supervisor must free the port.

    Linux: the kernel sends SIGTERM when the parent dies (PR_SET_PDEATHSIG), and a parent
    that died before it was armed shows as a changed ppid. Everywhere: stdin is a pipe whose
    only writer is the supervisor, so EOF means it is gone (or wants us gone): SIGTERM for
    the graceful exit, then a hard exit after ``grace`` seconds should that hang.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != supervisor_pid:
        os._exit(1)

    def watch() -> None:
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        os.kill(os.getpid(), signal.SIGTERM)  # a second SIGTERM after the kernel's is harmless
        time.sleep(grace)
        os._exit(1)

    threading.Thread(target=watch, name="supervisor-watch", daemon=True).start()


def log_level() -> int:
    """``MLXK_LOG_LEVEL`` (debug, info, warning, error; default info) for mlxk's loggers. debug
    adds one line per engine step: what a slow stream or a long prefill is waiting on."""
    name = os.environ.get("MLXK_LOG_LEVEL", "info").strip().upper()
    level = logging.getLevelName(name)
    return level if isinstance(level, int) else logging.INFO


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.supervisor_pid is not None:
        watch_supervisor(args.supervisor_pid)
    from mlxk.server.security import API_KEY_ENV, SecurityPolicy  # no mlx: fine before the BLAS set-up

    api_key = os.environ.pop(API_KEY_ENV, "").strip() or None  # not inherited by anything we start
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if args.log_json else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    level = log_level()
    logging.basicConfig(level=max(level, logging.INFO), handlers=[handler], force=True)
    logging.getLogger("mlxk").setLevel(level)  # debug: mlxk's own lines, not every library's
    log = logging.getLogger("mlxk.server")
    from mlxk import accel
    from mlxk.accel import report

    accel.bootstrap()  # before anything imports mlx
    for line in report.observe(probe=True).lines():
        log.info(line)

    import uvicorn

    from mlxk.engine.batch import Engine
    from mlxk.engine.requests import EngineError
    from mlxk.server.app import ServerConfig, ServeState, build_app
    from mlxk.server.model_access import resolve_target
    from mlxk.server.model_access import parse_aliases

    target = None
    if args.model:
        try:
            target = resolve_target(args.model)
        except EngineError as err:
            log.error("%s", err.message)
            return 2
    prefix_cache = None
    if not args.no_prefix_cache:
        try:
            from mlxk.engine.prefix_cache import PrefixCache
        except ImportError:
            PrefixCache = None  # type: ignore[assignment]
        if PrefixCache is not None:
            prefix_cache = PrefixCache.from_options(args.prefix_cache_dir, args.prefix_cache_bytes)
    engine = Engine(target, max_tokens=args.max_tokens, max_concurrency=args.max_concurrency,
                    max_queue=args.max_queue if args.max_queue is not None else max(64, 8 * args.max_concurrency), prefix_cache=prefix_cache,
                    idle_unload=args.idle_unload, kv_quant=kv_quant_of(args),
                    trust_remote_code=args.trust_remote_code, context_length_override=args.context_length)
    policy = SecurityPolicy(args.host, args.allowed_host, args.cors_origin)
    state = ServeState(engine, ServerConfig(args.model, api_key, list(args.allow or []), args.max_tokens,
                                            security=policy, model_dirs=list(args.model_dir),
                                            defaults=request_defaults(args), aliases=parse_aliases(args.alias)))
    app = build_app(state)

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):  # first signal: interrupt streams, then uvicorn's graceful exit
            if not state.shutting_down:
                log.info("shutting down: interrupting %d stream(s)", engine.active_sequences)
                state.shutting_down = True
                engine.interrupt_all()
            super().handle_exit(sig, frame)

        @contextlib.contextmanager
        def capture_signals(self):  # like uvicorn's, without re-raising the signal at exit: we exit 0
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            old = {s: signal.signal(s, self.handle_exit) for s in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for s, h in old.items():
                    signal.signal(s, h)

    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=3, lifespan="off")
    server = Server(config)
    engine.start()
    log.info("serving on http://%s:%d (model: %s)", args.host, args.port, target.name if target else "none")
    try:
        server.run()
    finally:
        engine.stop(timeout=2.0)
    log.info("stopped%s", " (engine thread still busy)" if engine.alive else "")
    return 0


if __name__ == "__main__":
    code = main()
    # MLX's native threads can abort a normal interpreter teardown ("terminate called
    # without an active exception"); everything is flushed by now, so leave directly.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # the supervisor (the pipe's reader) may be gone
            pass
    os._exit(code)
