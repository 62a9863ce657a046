"""Hub verbs: pull, push, clone (thin: parse, call src/mlxk/hub, render)."""

from __future__ import annotations

import argparse
import os
import sys

from mlxk.cli import render
from mlxk.cli.base import Command
from mlxk.contract import Envelope, MlxkError


def _json(args) -> bool:
    return bool(getattr(args, "json", False))


# --- pull --------------------------------------------------------------------

def _cfg_pull(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="org/name or a short name (mlx-community/<name>), optionally @branch, @tag or @commit")
    p.add_argument("--force", "-f", action="store_true", help="download again; repairs an unhealthy cached copy")


def _pull(args: argparse.Namespace) -> Envelope:
    from mlxk.hub.pull import interactive, pull

    tty = interactive() and not _json(args)
    confirm = None
    if tty:
        def confirm(problem: str) -> bool:
            answer = input(f"The cached copy is unhealthy ({problem}). Download it again? [y/N] ")
            return answer.strip().lower() in ("y", "yes")
    try:
        return pull(args.model, force=args.force, confirm_repair=confirm, progress=tty)
    except MlxkError as err:
        if err.type != "cancelled":
            raise
        # Download threads may still be in flight: answer now and leave without waiting for them.
        env = Envelope.failure("pull", err)
        (render.print_json if _json(args) else render.print_error)(env)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(env.exit_code)


def _render_pull(env: Envelope, args: argparse.Namespace) -> None:
    render.line(env.data["message"])


# --- clone -------------------------------------------------------------------

def _cfg_clone(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a model name (pulled first when not cached), optionally @hash")
    p.add_argument("target_dir", help="the workspace folder to create (must be missing or empty)")


def _clone(args: argparse.Namespace) -> Envelope:
    from mlxk.hub.clone import clone

    return clone(args.model, args.target_dir)


def _render_clone(env: Envelope, args: argparse.Namespace) -> None:
    render.line(env.data["message"])


# --- push --------------------------------------------------------------------

def _cfg_push(p: argparse.ArgumentParser) -> None:
    p.add_argument("local_dir", help="the workspace folder to upload")
    p.add_argument("repo_id", help="org/model on the Hub")
    p.add_argument("--private", action="store_true", help="required: repos are created private (no accidental public uploads)")
    p.add_argument("--create", action="store_true", help="create the repo when it does not exist")
    p.add_argument("--branch", default="main", help="target branch (created from main when missing)")
    p.add_argument("--commit", dest="commit_message", default=None, help="commit message")
    p.add_argument("--check-only", action="store_true", help="validate the workspace locally; no token, no network")
    p.add_argument("--dry-run", action="store_true", help="compare with the remote; upload nothing")
    p.add_argument("--verbose", "-v", action="store_true", help="list the files (human output only)")


def _push(args: argparse.Namespace) -> Envelope:
    from mlxk.hub.push import push

    return push(args.local_dir, args.repo_id, private=args.private, create=args.create, branch=args.branch,
                message=args.commit_message, check_only=args.check_only, dry_run=args.dry_run)


def _render_push(env: Envelope, args: argparse.Namespace) -> None:
    d = env.data
    render.line(d["message"])
    if d.get("commit_url"):
        render.line(f"Commit: {d['commit_url']}")
    if d.get("change_summary"):
        s = d["change_summary"]
        render.line(f"Changes: {s['added']} added, {s['modified']} modified, {s['deleted']} deleted")
    health = d.get("workspace_health")
    if health:
        render.line(f"Workspace: {'healthy' if health['healthy'] else 'unhealthy'}, {health['files_count']} files")
        for a in health["anomalies"]:
            render.line(f"  - {a}")
    if args.verbose:
        for key in ("added", "modified", "deleted"):
            for name in d.get(key) or []:
                render.line(f"  {key}: {name}")


COMMANDS = [
    Command("pull", "download a model from the Hugging Face Hub", _cfg_pull, _pull, _render_pull),
    Command("clone", "copy a cached model into a workspace folder", _cfg_clone, _clone, _render_clone),
    Command("push", "upload a workspace folder to the Hub (private)", _cfg_push, _push, _render_push),
]
