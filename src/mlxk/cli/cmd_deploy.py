"""``mlxk deploy``: named model servers as services (thin: parse, call mlxk.ops.deploy, render)."""

from __future__ import annotations

import argparse
import sys

from mlxk.cli.base import Command
from mlxk.contract import Envelope, MlxkError

ACTIONS_ONE = {
    "show": "its config, validity, backend and service file",
    "install": "write and enable its service (launchd, systemd or process)",
    "uninstall": "stop it and remove its service (config and logs stay)",
    "start": "start it",
    "stop": "stop it (graceful)",
    "restart": "stop and start it (the config is read again)",
    "status": "state, pid, port, model, uptime, the server's /health, last log lines",
    "logs": "its last log lines (--follow: as they come)",
    "watch": "download and load progress until healthy (exit 0) or failed (exit 1)",
}
ACTIONS_ALL = ("install-all", "uninstall-all", "start-all", "stop-all")


def _cfg(p: argparse.ArgumentParser) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="answer with the JSON envelope")
    common.add_argument("--dir", metavar="DIR", help="the deployments folder (default: $MLXK_DEPLOY_DIR, else "
                        "~/.config/mlxk/deployments)")
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    c = sub.add_parser("create", parents=[common], help="write a deployment's config.json")
    c.add_argument("name")
    c.add_argument("--model", required=True, help="cache name, org/name from the Hub (pulled on first start) or a folder")
    c.add_argument("--port", type=int, help="default: the first from 8000 no other deployment uses")
    c.add_argument("--host", help="default 127.0.0.1; any other address needs --api-key-env or --api-key-file")
    c.add_argument("--display-name")
    c.add_argument("--temp", type=float, help="default temperature of requests that set none")
    c.add_argument("--top-p", type=float)
    c.add_argument("--top-k", type=int)
    c.add_argument("--max-tokens", type=int, help="default max_tokens of requests that set none")
    c.add_argument("--kv-bits", type=int, help="quantize the KV cache to this many bits")
    c.add_argument("--kv-group-size", type=int)
    c.add_argument("--kv-quantized-start", type=int)
    c.add_argument("--api-key-env", metavar="VAR", help="environment variable holding the API key")
    c.add_argument("--api-key-file", metavar="PATH", help="file holding the API key")
    c.add_argument("--model-id", help="kept as server.model_id")
    c.add_argument("--idle-unload", type=float, metavar="SECONDS")
    c.add_argument("--prefix-cache-bytes", type=int)
    c.add_argument("--force", action="store_true", help="replace an existing (uninstalled) deployment's config")

    sub.add_parser("list", parents=[common], help="all deployments with their state")
    for action, about in ACTIONS_ONE.items():
        a = sub.add_parser(action, parents=[common], help=about, description=about)
        a.add_argument("name")
        if action in ("install", "start", "restart"):
            a.add_argument("--trust-remote-code", action="store_true",
                           help="accept server.trust_remote_code: true (runs Python code shipped with the model)")
        if action == "install":
            a.add_argument("--start", action="store_true", help="start it once installed")
            a.add_argument("--backend", choices=("launchd", "systemd", "process"),
                           help="default: launchd on macOS, systemd with a user manager, else process")
        if action == "logs":
            a.add_argument("--lines", "-n", type=int, default=50)
            a.add_argument("--follow", "-f", action="store_true", help="keep printing new lines (Ctrl-C ends)")
        if action == "watch":
            a.add_argument("--timeout", type=float, default=1800, metavar="SECONDS")
    for action in ACTIONS_ALL:
        a = sub.add_parser(action, parents=[common], help=f"{action.split('-')[0]} every deployment")
        if action == "install-all":
            a.add_argument("--start", action="store_true")
            a.add_argument("--backend", choices=("launchd", "systemd", "process"))
            a.add_argument("--trust-remote-code", action="store_true")


def _json(args) -> bool:
    return bool(getattr(args, "json", False))


def _deploy(args: argparse.Namespace) -> Envelope | int:
    from mlxk.deploy.store import deploy_root
    from mlxk.ops import deploy as ops

    root = deploy_root(args.dir)
    a = args.action
    if a == "create":
        return ops.create(
            root, args.name, args.model, port=args.port, host=args.host, display_name=args.display_name,
            parameters={"temp": args.temp, "top_p": args.top_p, "top_k": args.top_k, "max_tokens": args.max_tokens},
            kv_cache={"bits": args.kv_bits, "group_size": args.kv_group_size,
                      "quantized_start": args.kv_quantized_start},
            server={"api_key_env": args.api_key_env, "api_key_file": args.api_key_file, "model_id": args.model_id,
                    "idle_unload": args.idle_unload, "prefix_cache_bytes": args.prefix_cache_bytes},
            force=args.force)
    if a == "list":
        return ops.list_(root)
    if a == "install":
        return ops.install(root, args.name, backend=args.backend, start_now=args.start,
                           trust_remote_code=args.trust_remote_code)
    if a in ("show", "uninstall", "stop", "status"):
        return getattr(ops, a)(root, args.name)
    if a in ("start", "restart"):
        return getattr(ops, a)(root, args.name)
    if a == "logs":
        if args.follow:
            if _json(args):
                raise MlxkError("ValidationError", "--follow prints lines as they come; it has no --json form")
            try:
                ops.follow(root, args.name, _print_line, backlog=args.lines)
            except KeyboardInterrupt:
                return 0
            return 0
        return ops.logs(root, args.name, args.lines)
    if a == "watch":
        return ops.watch(root, args.name, None if _json(args) else _print_line, timeout=args.timeout)
    if a == "install-all":
        def one(r, n):
            return ops.install(r, n, backend=args.backend, start_now=args.start,
                               trust_remote_code=args.trust_remote_code)
        return ops.for_all(root, a, one, validate_first=True, trust_remote_code=args.trust_remote_code)
    op = {"uninstall-all": ops.uninstall, "start-all": ops.start, "stop-all": ops.stop}[a]
    return ops.for_all(root, a, op)


def _print_line(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _render(env: Envelope, args: argparse.Namespace) -> None:
    from mlxk.cli import render

    d = env.data
    action = d["action"]
    if action == "list":
        if not d["deployments"]:
            render.line("No deployments (mlxk deploy create NAME --model M makes one)")
            return
        rows = [[x["name"], x["state"], x["backend"] or "-", f"{x['host']}:{x['port']}", str(x["model"]),
                 "config error" if x["config_error"] else ""] for x in d["deployments"]]
        render.table(["NAME", "STATE", "BACKEND", "ADDRESS", "MODEL", ""], rows)
    elif action == "show":
        import json

        render.line(json.dumps(d["config"], indent=2))
        render.kv([("backend", d["backend"] or "not installed"), ("service files", ", ".join(d["service_files"]) or "-"),
                   ("log", d["log"]), ("valid", "yes" if d["valid"] else d["config_error"])])
    elif action in ("status", "watch"):
        health = d["health"] or {}
        render.kv([("name", d["name"]), ("state", d["state"]), ("backend", d["backend"] or "-"),
                   ("pid", d["pid"] or "-"), ("address", f"{d['host']}:{d['port']}"), ("model", d["model"]),
                   ("uptime", f"{d['uptime']:.0f}s" if d["uptime"] is not None else "-"),
                   ("health", health.get("status", "no answer") if d["state"] == "running" else "-")]
                  + ([("reason", d["reason"])] if d["reason"] else []))
        if action == "status" and d["log_tail"]:
            render.line(f"last lines of {d['log']}:")
            for line in d["log_tail"]:
                render.line(f"  | {line}")
        if action == "watch":
            render.line(d["message"])
    elif action == "logs":
        for line in d["lines"]:
            _print_line(line)
    elif "results" in d:
        for r in d["results"]:
            render.line(f"{r['name']}: {r['message']}")
    else:
        render.line(d["message"])


COMMANDS = [
    Command(name="deploy", help="named model servers as services: create, install, start, status, logs, ...",
            configure=_cfg, handler=_deploy, render=_render),
]
