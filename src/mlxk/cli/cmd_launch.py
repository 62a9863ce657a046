"""``mlxk launch claude|codex|gemini``: a coding agent against a local server (mlxk.ops.launch)."""

from __future__ import annotations

import argparse
import os
import sys

from mlxk.cli.base import Command


def _cfg(p: argparse.ArgumentParser) -> None:
    p.add_argument("agent", choices=["claude", "codex", "gemini"], help="the agent CLI to run")
    p.add_argument("--model", default=os.environ.get("MLXK_LAUNCH_MODEL"),
                   help="model to serve (default: $MLXK_LAUNCH_MODEL)")
    p.add_argument("--port", type=int, default=8000, help="port of the server (one already serving the model there "
                                                          "is reused)")
    p.add_argument("--context-length", type=int, metavar="TOKENS",
                   help="context window the server assumes (agents' system prompts may exceed a small model's)")
    p.add_argument("--server-log", metavar="FILE", help="keep the log of the server launch starts in FILE "
                                                        "(appended; by default it is removed after)")
    p.add_argument("--print-env", action="store_true", help="print what would be set and run; start nothing")
    p.set_defaults(agent_args=[])  # what follows "--" (cli/main.py hands it over verbatim)


def _launch(args: argparse.Namespace) -> int:
    from mlxk.contract import MlxkError
    from mlxk.ops import launch

    extra = list(args.agent_args or [])
    if extra[:1] == ["--"]:
        extra = extra[1:]
    if not args.model:
        raise MlxkError("ValidationError", "Name the model to serve: --model M (or set MLXK_LAUNCH_MODEL)", exit_code=2)
    if args.context_length is not None and args.context_length < 1:
        raise MlxkError("ValidationError", "--context-length must be at least 1", exit_code=2)
    if args.print_env:
        sys.stdout.write(launch.print_env(args.agent, args.model, args.port, args.context_length, extra) + "\n")
        return 0
    return launch.launch(args.agent, args.model, args.port, args.context_length, extra, args.server_log)


COMMANDS = [
    Command(name="launch", help="run Claude Code, Codex or gemini-cli against a local mlxk serve",
            configure=_cfg, handler=_launch),
]
