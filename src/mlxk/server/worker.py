"""The server process (run by the supervisor): engine thread + Starlette app under uvicorn.

Signals: the first SIGINT/SIGTERM interrupts every running stream (each gets the interrupt
marker and ``[DONE]``), stops accepting and exits 0; uvicorn force-exits on a second one.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading


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
    p.add_argument("--api-key")
    p.add_argument("--allow", nargs="*", default=[])
    p.add_argument("--idle-unload", type=float)
    p.add_argument("--prefix-cache-dir")
    p.add_argument("--prefix-cache-bytes", type=int)
    p.add_argument("--no-prefix-cache", action="store_true")
    p.add_argument("--max-concurrency", type=int, default=32)
    p.add_argument("--max-queue", type=int)
    p.add_argument("--log-json", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if args.log_json else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    log = logging.getLogger("mlxk.server")
    from mlxk import accel
    from mlxk.accel import report

    accel.bootstrap()  # before anything imports mlx
    for line in report.observe(probe=True).lines():
        log.info(line)

    import uvicorn

    from mlxk.engine.batch import Engine
    from mlxk.engine.requests import EngineError
    from mlxk.server.app import ServerConfig, ServeState, build_app, resolve_target

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
                    idle_unload=args.idle_unload)
    state = ServeState(engine, ServerConfig(args.model, args.api_key, list(args.allow or []), args.max_tokens))
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
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
