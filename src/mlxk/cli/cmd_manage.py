"""Read-only and housekeeping verbs: version, list, show, health, rm, schema."""

from __future__ import annotations

import argparse
import sys

from mlxk.cli import render
from mlxk.cli.base import Command
from mlxk.contract import Envelope


# --- version -----------------------------------------------------------------

def _version(args: argparse.Namespace) -> Envelope:
    from mlxk.ops.version import version

    return version()


def _render_version(env: Envelope, args: argparse.Namespace | None = None) -> None:
    """Plain writes, no rich: ``mlxk --version`` is answered before anything else is loaded."""
    data = env.data
    lines = [f"mlxk {data['cli_version']} (JSON API {data['json_api_spec_version']})"]
    lines += [text for text in (extra() for extra in VERSION_EXTRAS) if text]
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()


def version_fast(json_mode: bool) -> int:
    """``mlxk --version [--json]`` without the parser, rich or importlib.metadata."""
    from mlxk.ops.version import version

    env = version()
    if json_mode:
        render.print_json(env)
    else:
        _render_version(env)
    return env.exit_code


# Later subsystems (the runtime report) add lines here without touching the envelope.
VERSION_EXTRAS: list = []


# --- list --------------------------------------------------------------------

def _cfg_list(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", nargs="?", help="case-insensitive substring of the model name, or a path "
                   "(./dir, /abs/dir, ./prefix): the workspace models at or under it")
    p.add_argument("--all", action="store_true", help="every framework (MLX, GGUF, PyTorch, ...)")
    p.add_argument("--verbose", "-v", action="store_true", help="all MLX models (chat and base), full names")
    p.add_argument("--health", action="store_true", help="add the health column")


def _list(args: argparse.Namespace) -> Envelope:
    from mlxk.ops.listing import list_models

    env, _ = list_models(args.pattern)
    return env


def _shown(model: dict, args: argparse.Namespace) -> bool:
    if args.all:
        return True
    if model["framework"] != "MLX":
        return False
    if args.verbose:
        return True
    return model["health"] == "healthy" and model["runtime_compatible"] and "chat" in model["capabilities"]


def _render_list(env: Envelope, args: argparse.Namespace) -> None:
    from mlxk.ops.listing import human_size

    models = [m for m in env.data["models"] if _shown(m, args)]
    hidden = env.data["count"] - len(models)
    if not models:
        render.line("No models found." if not env.data["count"] else "No models match the current filter.")
    else:
        cols = ["Name", "ID", "Size", "Modified", "Framework", "Type"]
        if args.health or args.all:
            cols.append("Health")
        rows = []
        for m in models:
            name = m["name"]
            if not args.verbose and name.startswith("mlx-community/"):
                name = name[len("mlx-community/"):]
            row = [name, (m["hash"] or "-")[:8], human_size(m["size_bytes"]), render.relative_time(m["last_modified"]),
                   m["framework"], m["model_type"]]
            if args.health or args.all:
                row.append(m["health"] if m["health"] == "healthy" else f"unhealthy: {m['reason']}")
            rows.append(row)
        render.table(cols, rows)
    if hidden and not args.all:
        render.line(f"({hidden} more not shown: use --verbose for all MLX models, --all for every framework)", stderr=True)


# --- show --------------------------------------------------------------------

def _cfg_show(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="name, org/name, name@hash or a workspace path")
    p.add_argument("--files", action="store_true", help="list the files")
    p.add_argument("--config", action="store_true", help="include config.json")


def _show(args: argparse.Namespace) -> Envelope:
    from mlxk.ops.listing import show

    return show(args.model, files=args.files, config=args.config)


def _render_show(env: Envelope, args: argparse.Namespace) -> None:
    import json

    m = env.data["model"]
    pairs = [
        ("Model", m["name"]),
        ("Snapshot", m["hash"] or "-"),
        ("Location", "Hugging Face cache" if m["cached"] else "workspace"),
        ("Size", _size(m["size_bytes"])),
        ("Modified", f"{m['last_modified']} ({render.relative_time(m['last_modified'])})"),
        ("Framework", m["framework"]),
        ("Type", m["model_type"]),
        ("Capabilities", ", ".join(m["capabilities"]) or "-"),
        ("Health", m["health"]),
        ("Runnable", "yes" if m["runtime_compatible"] else "no"),
    ]
    if m["reason"]:
        pairs.append(("Reason", m["reason"]))
    for key, value in (env.data.get("metadata") or {}).items():
        if value is not None:
            pairs.append((key.replace("_", " ").capitalize(), value))
    render.kv(pairs)
    if env.data.get("files") is not None:
        render.line()
        render.table(["File", "Size", "Type"], [[f["name"], f["size"], f["type"]] for f in env.data["files"]])
    if env.data.get("config") is not None:
        render.line()
        render.line(json.dumps(env.data["config"], indent=2))


def _size(n: int) -> str:
    from mlxk.ops.listing import human_size

    return human_size(n)


# --- health ------------------------------------------------------------------

def _cfg_health(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", help="one model (name, name@hash, workspace path); default: all")


def _health(args: argparse.Namespace) -> Envelope:
    from mlxk.ops.listing import health

    return health(args.model)


def _render_health(env: Envelope, args: argparse.Namespace) -> None:
    for entry in env.data["healthy"]:
        render.line(f"ok   {entry['name']}")
    for entry in env.data["unhealthy"]:
        render.line(f"FAIL {entry['name']}: {entry['reason']}")
    s = env.data["summary"]
    render.line(f"{s['total']} model(s): {s['healthy_count']} healthy, {s['unhealthy_count']} unhealthy")


# --- rm ----------------------------------------------------------------------

def _cfg_rm(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="name, org/name or name@hash (only that revision)")
    p.add_argument("--force", "-f", action="store_true", help="no confirmation; also remove stale lock files")


def _rm(args: argparse.Namespace) -> Envelope:
    from mlxk.ops.remove import remove

    confirm = None
    if not getattr(args, "json", False) and sys.stdin.isatty():
        def confirm(plan) -> bool:
            what = "the whole model" if plan.whole_repo else "this revision"
            answer = input(f"Delete {plan.label} ({what}) from the cache? [y/N] ")
            return answer.strip().lower() in ("y", "yes")

    return remove(args.model, force=args.force, confirm=confirm, hold_signals_after=True)


def _render_rm(env: Envelope, args: argparse.Namespace) -> None:
    render.line(env.data["message"])


# --- schema ------------------------------------------------------------------

def _schema(args: argparse.Namespace) -> int:
    import json

    from mlxk.contract.models import json_schema

    sys.stdout.write(json.dumps(json_schema(), indent=2) + "\n")
    return 0


COMMANDS = [
    Command("version", "show the version", lambda p: None, _version, _render_version),
    Command("list", "list models in the cache", _cfg_list, _list, _render_list, aliases=("ls",)),
    Command("show", "details of one model", _cfg_show, _show, _render_show),
    Command("health", "check model integrity", _cfg_health, _health, _render_health),
    Command("rm", "delete a model (or one revision) from the cache", _cfg_rm, _rm, _render_rm),
    Command("schema", "print the JSON schema of every --json answer", lambda p: None, _schema),
]
