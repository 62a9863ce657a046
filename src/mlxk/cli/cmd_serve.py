"""``mlxk serve`` (alias ``server``): the OpenAI-compatible server under its supervisor."""

from __future__ import annotations

import argparse
import sys

from mlxk.cli.base import Command


def _cfg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="model to preload (name, org/name, name@hash or a workspace path)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-tokens", type=int, default=4096, help="upper bound for max_tokens per request")
    p.add_argument("--api-key", help="require 'Authorization: Bearer KEY'")
    p.add_argument("--allow", nargs="+", metavar="MODEL", help="models a request may switch to")
    p.add_argument("--idle-unload", type=float, metavar="SECONDS", help="free the model after inactivity")
    p.add_argument("--prefix-cache-dir", help="folder of prefix-cache snapshots (default: under the mlxk cache)")
    p.add_argument("--prefix-cache-bytes", type=int, help="size bound of the disk prefix cache")
    p.add_argument("--no-prefix-cache", action="store_true", help="disable the prefix cache")
    p.add_argument("--max-concurrency", type=int, default=32, help="sequences decoded together")
    p.add_argument("--max-queue", type=int, help="requests waiting beyond that before 503 (default 8x concurrency, min 64)")
    p.add_argument("--log-json", action="store_true", help="log lines as JSON")


def _serve(args: argparse.Namespace) -> int:
    from mlxk.server.supervisor import supervise

    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.api_key:
        sys.stderr.write(f"warning: binding {args.host} without --api-key: anyone who can reach it can use it\n")
    cmd = [sys.executable, "-m", "mlxk.server.worker", "--host", args.host, "--port", str(args.port),
           "--max-tokens", str(args.max_tokens), "--max-concurrency", str(args.max_concurrency)]
    for flag in ("model", "api_key", "idle_unload", "prefix_cache_dir", "prefix_cache_bytes", "max_queue"):
        value = getattr(args, flag)
        if value is not None:
            cmd += ["--" + flag.replace("_", "-"), str(value)]
    if args.allow:
        cmd += ["--allow", *args.allow]
    if args.no_prefix_cache:
        cmd.append("--no-prefix-cache")
    if args.log_json:
        cmd.append("--log-json")
    return supervise(cmd)


COMMANDS = [
    Command(name="serve", aliases=("server",), help="OpenAI-compatible server with continuous batching",
            configure=_cfg, handler=_serve),
]
