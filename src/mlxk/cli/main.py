"""Entry point of ``mlxk`` / ``mlxk2`` / ``mlxk-json`` / ``python -m mlxk``.

Parses, calls one operation, renders. With ``--json`` every outcome, argument errors
included, is one envelope on stdout and the exit code follows the error type.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from mlxk.cli.base import Command
from mlxk.contract import Envelope, MlxkError

COMMAND_MODULES = (
    "mlxk.cli.cmd_manage",
    "mlxk.cli.cmd_run",
    "mlxk.cli.cmd_convert",
    "mlxk.cli.cmd_serve",
    "mlxk.cli.cmd_hub",
    "mlxk.cli.cmd_deploy",
    "mlxk.cli.cmd_launch",
)


class ArgumentError(Exception):
    pass


class Parser(argparse.ArgumentParser):
    """Raises instead of printing usage and exiting, so --json can answer with an envelope."""

    def error(self, message: str):  # type: ignore[override]
        raise ArgumentError(f"{message} (see: {self.prog} --help)")


def load_commands() -> list[Command]:
    from importlib import import_module

    commands: list[Command] = []
    for name in COMMAND_MODULES:
        commands.extend(import_module(name).COMMANDS)
    return commands


def build_parser(commands: list[Command]) -> Parser:
    from mlxk import __version__

    common = Parser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="answer with the JSON envelope")
    parser = Parser(
        prog="mlxk",
        parents=[common],
        description=f"mlxk {__version__}: manage, run and serve local language models on MLX.",
    )
    parser.add_argument("--version", action="store_true", help="print the version (with --json: the envelope)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for cmd in commands:
        p = sub.add_parser(cmd.name, aliases=list(cmd.aliases), help=cmd.help, description=cmd.help, parents=[common])
        cmd.configure(p)
        p.set_defaults(_command=cmd)
    return parser


def _guess_command(argv: Sequence[str], commands: list[Command]) -> str:
    names = {alias: c.command_field for c in commands for alias in (c.name, *c.aliases)}
    for tok in argv:
        if not tok.startswith("-"):
            return names.get(tok, "unknown")
    return "version" if "--version" in argv else "unknown"


def _emit(env: Envelope, args: argparse.Namespace | None, json_mode: bool, cmd: Command | None) -> int:
    from mlxk.cli import render

    if json_mode:
        render.print_json(env)
    elif not env.ok:
        render.print_error(env)
    elif cmd is not None and cmd.render is not None:
        cmd.render(env, args)  # type: ignore[arg-type]
    else:
        render.print_json(env)
    return env.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    json_mode = "--json" in argv
    if "--version" in argv and set(argv) <= {"--version", "--json"}:
        return _version_fast(json_mode)
    commands = load_commands()
    parser = build_parser(commands)
    passthrough: list[str] = []
    if _guess_command(argv, commands) == "launch" and "--" in argv:  # the agent's own arguments, verbatim
        cut = argv.index("--")
        argv, passthrough = argv[:cut], argv[cut + 1:]
    try:
        args = parser.parse_args(argv)
        if passthrough:
            args.agent_args = passthrough
    except ArgumentError as exc:
        err = MlxkError("ValidationError", str(exc))
        return _emit(Envelope.failure(_guess_command(argv, commands), err), None, json_mode, None)
    except SystemExit as exc:  # --help
        return int(exc.code or 0)

    cmd: Command | None = getattr(args, "_command", None)
    if cmd is None:
        if args.version:
            cmd = next(c for c in commands if c.name == "version")
        else:
            parser.print_help(sys.stderr)
            return 0 if not argv else 1
    try:
        result = cmd.handler(args)
    except MlxkError as err:
        result = Envelope.failure(cmd.command_field, err)
    except KeyboardInterrupt:
        result = Envelope.failure(cmd.command_field, MlxkError("cancelled", "Interrupted by user (Ctrl-C)"))
    except Exception as exc:  # the envelope must come out whatever happens
        if os.environ.get("MLXK_DEBUG"):
            raise
        result = Envelope.failure(cmd.command_field, MlxkError("InternalError", f"{type(exc).__name__}: {exc}"))
    if isinstance(result, int):
        return result
    return _emit(result, args, json_mode, cmd)


def _version_fast(json_mode: bool) -> int:
    """The answer scripts ask for most, before the parser and the command modules' imports.

    Human output still gets the runtime lines other subsystems register (they are loaded
    only then); ``--json`` is the bare envelope.
    """
    if not json_mode:
        load_commands()
    from mlxk.cli.cmd_manage import version_fast

    return version_fast(json_mode)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
