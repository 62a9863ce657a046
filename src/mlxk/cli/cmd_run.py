"""``run`` (one-shot and interactive chat): parse the flags, render the stream.

Resolving, loading and generating are ops/run.py's; this module only turns flags into a
RunRequest and writes what comes back to the terminal.
"""

from __future__ import annotations

import argparse
import sys

from mlxk.cli import render
from mlxk.cli.base import Command
from mlxk.contract import Envelope, MlxkError


def _cfg_run(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="name, org/name, name@hash or a workspace path")
    p.add_argument("prompt", nargs="?", help="the prompt; '-' reads stdin; none starts a chat")
    p.add_argument("--system", help="system prompt")
    # One flag per SamplingParams field (the server's request options); see docs/run-and-convert.md.
    p.add_argument("--max-tokens", type=int, help="most tokens to generate (default 512)")
    p.add_argument("--temperature", type=float,
                   help="0 to 2; 0 = greedy (default: the model's generation_config, else 0)")
    p.add_argument("--top-p", type=float, help="0 to 1: sample from the smallest set with this much probability")
    p.add_argument("--top-k", type=int, help="sample from the k likeliest tokens (0 = all)")
    p.add_argument("--min-p", type=float, help="0 to 1: drop tokens less likely than this times the likeliest")
    p.add_argument("--repetition-penalty", type=float,
                   help="above 1 makes tokens of the last 20 less likely (off unless given)")
    p.add_argument("--seed", type=int, help="random seed, 0 to 2**64-1, for reproducible sampling")
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable, at most 16)")
    p.add_argument("--no-chat-template", action="store_true", help="send the prompt as raw text")
    shape = p.add_mutually_exclusive_group()  # structured output (engine/constraints.py)
    shape.add_argument("--json-schema", metavar="FILE", help="the answer is JSON matching this JSON Schema file")
    shape.add_argument("--json-object", action="store_true", help="the answer is a JSON object")
    p.add_argument("--no-stream", action="store_true", help="print the answer at the end")
    p.add_argument("--verbose", "-v", action="store_true", help="prompt/generation speed and peak memory")


def _request(args: argparse.Namespace):
    from mlxk.ops.run import RunRequest

    prompt = args.prompt
    if prompt == "-":
        prompt = sys.stdin.read()
    return RunRequest(
        model=args.model, prompt=prompt, system=args.system, max_tokens=args.max_tokens,
        temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, min_p=args.min_p,
        repetition_penalty=args.repetition_penalty, seed=args.seed, stop=tuple(args.stop),
        chat_template=not args.no_chat_template, json_schema=args.json_schema, json_object=args.json_object,
    )


def _stats_line(data: dict) -> str:
    return (
        f"[{data['prompt_tokens']} prompt tokens at {data['prompt_tokens_per_second']:.1f} tok/s, "
        f"{data['tokens_generated']} generated at {data['tokens_per_second']:.1f} tok/s, "
        f"peak memory {data['peak_memory_gb']:.2f} GB]"
    )


def _run(args: argparse.Namespace):
    from mlxk.ops.run import run_once

    req = _request(args)
    if req.prompt is None:
        if getattr(args, "json", False):
            raise MlxkError("ValidationError", "--json needs a prompt (interactive chat is for terminals)")
        return _chat(args, req)
    if getattr(args, "json", False):
        return run_once(req)
    stream = not args.no_stream

    def emit(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    def note(text: str) -> None:
        render.line(f"Note: {text}.", stderr=True)

    try:
        env = run_once(req, on_text=emit if stream else None, on_note=note)
    except KeyboardInterrupt:
        sys.stdout.write("\n")
        render.line("Interrupted.", stderr=True)
        return 130
    if not env.ok:
        return env
    if not stream:
        sys.stdout.write(env.data["response"])
    sys.stdout.write("\n")
    if args.verbose:
        from mlxk.accel import report

        render.line(_stats_line(env.data), stderr=True)
        for line in report.observe().lines():  # observed after the run: what was in use
            render.line(line, stderr=True)
    return 0


def _chat(args: argparse.Namespace, req) -> int:
    """Interactive chat: /exit or Ctrl-D leaves, Ctrl-C stops the answer, /clear, /system TEXT."""
    from mlxk.ops.run import Chat, new_stats

    chat = Chat(req)
    render.line(f"Chatting with {chat.name}. /exit or Ctrl-D to leave, /clear to start over, /system TEXT.",
                stderr=True)
    if chat.note:
        render.line(f"Note: {chat.note}; each turn continues the text so far.", stderr=True)
    while True:
        try:
            text = input(">>> ")
        except EOFError:
            sys.stdout.write("\n")
            return 0
        except KeyboardInterrupt:
            sys.stdout.write("\n")
            continue
        text = text.strip()
        if not text:
            continue
        if text in ("/exit", "/quit", "/bye"):
            return 0
        if text == "/clear":
            chat.clear()
            render.line("(conversation cleared)", stderr=True)
            continue
        if text.startswith("/system"):
            chat.set_system(text[len("/system"):].strip() or None)
            render.line("(system prompt set; conversation cleared)", stderr=True)
            continue
        stats = new_stats()
        try:
            for piece in chat.turn(text, stats):
                sys.stdout.write(piece)
                sys.stdout.flush()
        except KeyboardInterrupt:
            sys.stdout.write(" [stopped]")
        sys.stdout.write("\n")
        sys.stdout.flush()
        if args.verbose:
            render.line(
                f"[prefilled {stats.prefilled_tokens} of {stats.prompt_tokens} prompt tokens, "
                f"{stats.generated_tokens} generated at {stats.generation_tps:.1f} tok/s]",
                stderr=True,
            )


def _render_run(env: Envelope, args: argparse.Namespace) -> None:
    render.line(env.data["response"])


COMMANDS = [
    Command("run", "run a model: one prompt, or an interactive chat", _cfg_run, _run, _render_run),
]
