"""``mlxk serve`` (alias ``server``): the OpenAI-compatible server under its supervisor."""

from __future__ import annotations

import argparse
import os
import sys

from mlxk.cli.base import Command


def _cfg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="model to preload (name, org/name, name@hash or a workspace path)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1); any other than loopback needs an API key")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-tokens", type=int, default=4096, help="upper bound for max_tokens per request")
    p.add_argument("--api-key-file", metavar="PATH",
                   help="require 'Authorization: Bearer KEY', KEY read from this file (or set MLXK_API_KEY)")
    p.add_argument("--api-key", metavar="KEY",
                   help="deprecated: the key is visible to every user in 'ps'; use MLXK_API_KEY or --api-key-file")
    p.add_argument("--insecure-no-auth", action="store_true",
                   help="allow binding a non-loopback address without an API key")
    p.add_argument("--allowed-host", action="append", metavar="NAME",
                   help="also serve requests whose Host header is NAME (repeatable; default: the bound "
                        "address and localhost only, against DNS rebinding)")
    p.add_argument("--cors-origin", action="append", metavar="ORIGIN",
                   help="also serve browser pages from ORIGIN, e.g. https://app.example (repeatable; '*' for "
                        "any; default: same origin and http://localhost, 127.0.0.1, [::1] on any port)")
    p.add_argument("--allow", nargs="+", metavar="MODEL", help="models a request may switch to")
    p.add_argument("--model-dir", action="append", metavar="DIR",
                   help="let requests name model folders inside DIR by path (repeatable; default: cache names only)")
    p.add_argument("--idle-unload", type=float, metavar="SECONDS", help="free the model after inactivity")
    p.add_argument("--prefix-cache-dir", help="folder of prefix-cache snapshots (default: under the mlxk cache)")
    p.add_argument("--prefix-cache-bytes", type=int, help="size bound of the disk prefix cache")
    p.add_argument("--no-prefix-cache", action="store_true", help="disable the prefix cache")
    p.add_argument("--max-concurrency", type=int, default=32, help="sequences decoded together")
    p.add_argument("--max-queue", type=int, help="requests waiting beyond that before 503 (default 8x concurrency, min 64)")
    p.add_argument("--log-json", action="store_true", help="log lines as JSON")
    p.add_argument("--temp", type=float, help="temperature of requests that set none")
    p.add_argument("--top-p", type=float, help="top_p of requests that set none")
    p.add_argument("--top-k", type=int, help="top_k of requests that set none")
    p.add_argument("--default-max-tokens", type=int, help="max_tokens of requests that set none (at most --max-tokens)")
    p.add_argument("--kv-bits", type=int, help="quantize the KV cache to this many bits")
    p.add_argument("--kv-group-size", type=int, help="group size of the KV-cache quantization")
    p.add_argument("--kv-quantized-start", type=int, help="tokens before the KV cache is quantized")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="let the model's tokenizer run Python code shipped with it (off: mlxk never does by default)")
    p.add_argument("--alias", action="append", metavar="NAME=MODEL",
                   help="serve MODEL to requests naming NAME, e.g. claude-sonnet-5-5=SmolLM2 (repeatable; NAME '*' "
                        "takes every other name)")
    p.add_argument("--context-length", type=int, metavar="TOKENS",
                   help="the context window to assume instead of the model's own (agents' prompts may need more)")


def _serve(args: argparse.Namespace) -> int:
    from mlxk.contract import MlxkError
    from mlxk.server.security import API_KEY_ENV, is_loopback, resolve_api_key
    from mlxk.server.supervisor import supervise

    if args.api_key is not None:
        sys.stderr.write("warning: --api-key is visible to every user of this machine in 'ps'; "
                         f"use {API_KEY_ENV} or --api-key-file instead\n")
    key = resolve_api_key(args.api_key, args.api_key_file)
    if not key and not is_loopback(args.host):
        if not args.insecure_no_auth:
            raise MlxkError("ValidationError", f"Refusing to bind {args.host} without an API key: anyone who can "
                            f"reach it could use it. Set {API_KEY_ENV} or --api-key-file, or pass "
                            "--insecure-no-auth if that is really meant.", exit_code=2)
        sys.stderr.write(f"warning: binding {args.host} without an API key (--insecure-no-auth): "
                         "anyone who can reach it can use it\n")
    env = dict(os.environ)
    # glibc gives each of the server's threads (engine, I/O, HTTP pool, BLAS) its own malloc arena;
    # under many clients their fragments kept growing (bench/soak.py: RSS +27% vs +12% with 2).
    env.setdefault("MALLOC_ARENA_MAX", "2")
    env.pop(API_KEY_ENV, None)
    if key:
        env[API_KEY_ENV] = key  # the worker reads it there: never in its argv
    cmd = [sys.executable, "-m", "mlxk.server.worker", "--host", args.host, "--port", str(args.port),
           "--max-tokens", str(args.max_tokens), "--max-concurrency", str(args.max_concurrency)]
    for flag in ("model", "idle_unload", "prefix_cache_dir", "prefix_cache_bytes", "max_queue", "temp", "top_p",
                 "top_k", "default_max_tokens", "kv_bits", "kv_group_size", "kv_quantized_start"):
        value = getattr(args, flag)
        if value is not None:
            cmd += ["--" + flag.replace("_", "-"), str(value)]
    from mlxk.server.model_access import parse_aliases

    parse_aliases(args.alias or [])  # refused here, before the worker starts
    if args.context_length is not None and args.context_length < 1:
        raise MlxkError("ValidationError", "--context-length must be at least 1", exit_code=2)
    if args.context_length is not None:
        cmd += ["--context-length", str(args.context_length)]
    for flag in ("allowed_host", "cors_origin", "model_dir", "alias"):
        for value in getattr(args, flag) or []:
            cmd.append(f"--{flag.replace('_', '-')}={value}")  # "=": a value may start with "-"
    if args.allow:
        cmd += ["--allow", *args.allow]
    if args.no_prefix_cache:
        cmd.append("--no-prefix-cache")
    if args.log_json:
        cmd.append("--log-json")
    if args.trust_remote_code:
        cmd.append("--trust-remote-code")
    return supervise(cmd, env=env)


COMMANDS = [
    Command(name="serve", aliases=("server",), help="OpenAI-compatible server with continuous batching",
            configure=_cfg, handler=_serve),
]
