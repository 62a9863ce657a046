#!/usr/bin/env python
"""GGUF import: time and peak memory of ``mlxk convert``, then what the Qwen import decodes at.

    python bench/gguf_import.py [--qwen FILE] [--gemma FILE] [--tokens 64] [--out DIR]

Without files it uses the real test models (tests/real_models.py: the PyPI wheels, kept
under MLXK_TEST_CACHE). Steps, each in a fresh subprocess so peak RSS is its own
(``os.wait4``):

1. import both files as ``auto`` (f32 on the CPU); Qwen also as f16 and re-quantized to
   MLX affine q8 and q4 (group 64), time and peak RSS each;
2. greedy decode tok/s of every Qwen variant through ``mlxk run --json``;
   (float16 with fewer tokens: MLX's CPU backend has no fast half-precision matmul);
3. the cost of the second quantization: on fixed prompts the f32 model's greedy
   continuation is scored by q4/q8 in one forward pass (teacher forcing); top-1 agreement
   with f32 at each continuation position and the mean KL(f32 || q) of the next-token
   distributions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROMPTS = [
    "Write a Python function add(a, b) that returns the sum.",
    "Explain what a hash map is in two sentences.",
    "Write a SQL query that counts the rows of the table users.",
    "What is the capital of France?",
    "Write a bash one-liner that prints the ten largest files in a folder.",
    "Translate to French: The weather is nice today.",
]
DECODE_PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."

AGREEMENT = r"""
import json, sys
from mlxk import accel
accel.bootstrap()
import mlx.core as mx
import mlx_lm
from mlx_lm.sample_utils import make_sampler
paths, prompts, n = json.loads(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3])
ref, tok = mlx_lm.load(paths["f32"])
seqs = []
for p in prompts:
    ids = tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True)
    out = [r.token for r in mlx_lm.stream_generate(ref, tok, ids, max_tokens=n, sampler=make_sampler(0.0))]
    seqs.append((ids, out))
def logprobs(model, ids, out):
    logits = model(mx.array([ids + out[:-1]]))[0, len(ids) - 1:].astype(mx.float32)
    return logits - mx.logsumexp(logits, axis=-1, keepdims=True)
refs = [logprobs(ref, ids, out) for ids, out in seqs]
del ref
res = {}
for name in ("q8", "q4"):
    model, _ = mlx_lm.load(paths[name])
    agree = total = 0
    kls = []
    for (ids, out), lp in zip(seqs, refs):
        lq = logprobs(model, ids, out)
        agree += int((lq.argmax(-1) == lp.argmax(-1)).sum().item())
        total += lp.shape[0]
        kls.append((mx.exp(lp) * (lp - lq)).sum(-1).mean().item())
    res[name] = {"top1_agreement": agree / total, "kl_mean": sum(kls) / len(kls), "positions": total}
    del model
print(json.dumps(res))
"""


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, int, str]:
    """(wall seconds, peak RSS bytes of that process alone, stdout)."""
    with tempfile.TemporaryFile("w+") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.PIPE, text=True, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        err = proc.stderr.read()
        out.seek(0)
        text = out.read()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{text}\n{err}")
    return elapsed, usage.ru_maxrss * 1024, text


def import_one(gguf: Path, folder: Path, *flags: str) -> dict:
    secs, rss, out = timed([sys.executable, "-m", "mlxk", "convert", str(gguf), str(folder), "--json", *flags])
    d = json.loads(out)["data"]
    size = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    return {"seconds": round(secs, 1), "peak_rss_gib": round(rss / 2**30, 2), "dtype": d["dtype"],
            "health": d["health_status"], "weights_gib": round(size / 2**30, 2)}


def decode(folder: Path, tokens: int) -> dict:
    _, rss, out = timed([sys.executable, "-m", "mlxk", "run", str(folder), DECODE_PROMPT, "--json",
                         "--max-tokens", str(tokens), "--temperature", "0"])
    d = json.loads(out)["data"]
    return {"tok_s": d["tokens_per_second"], "prompt_tok_s": d["prompt_tokens_per_second"],
            "tokens": d["tokens_generated"], "peak_rss_gib": round(rss / 2**30, 2)}


def versions() -> dict:
    from importlib.metadata import version

    return {p: version(p) for p in ("mlx", "mlx-lm", "gguf")} | {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "python": platform.python_version()}


def real_files() -> tuple[Path, Path]:
    from tests.real_models import GEMMA, QWEN, assembled_gguf

    return assembled_gguf(QWEN), assembled_gguf(GEMMA)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--qwen", type=Path)
    ap.add_argument("--gemma", type=Path)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--f16-tokens", type=int, default=8, help="float16 decodes very slowly on the CPU backend")
    ap.add_argument("--agree-tokens", type=int, default=32)
    ap.add_argument("--reuse", action="store_true", help="keep folders already in --out (no import figures)")
    ap.add_argument("--out", type=Path, help="keep the imported folders here (default: a temporary folder)")
    args = ap.parse_args()
    if not (args.qwen and args.gemma):
        qwen, gemma = real_files()
        args.qwen, args.gemma = args.qwen or qwen, args.gemma or gemma
    root = args.out or Path(tempfile.mkdtemp(prefix="mlxk-gguf-bench-"))
    report: dict = {"versions": versions(), "imports": {}, "decode": {}}
    variants = {"f32": [], "f16": ["--dtype", "float16"], "q8": ["--quantize", "8"], "q4": ["--quantize", "4"]}
    jobs = [(f"qwen-{name}", args.qwen, flags) for name, flags in variants.items()] + [("gemma-auto", args.gemma, [])]
    for name, gguf, flags in jobs:
        if args.reuse and (root / name / "config.json").exists():
            continue
        try:
            report["imports"][name] = import_one(gguf, root / name, *flags)
        except SystemExit as exc:  # e.g. a tokenizer not importable: the rest still stands
            report["imports"][name] = {"error": str(exc).splitlines()[-1][:300]}
        print(name, report["imports"][name], flush=True)
    for name in variants:
        report["decode"][name] = decode(root / f"qwen-{name}", args.f16_tokens if name == "f16" else args.tokens)
        print("decode", name, report["decode"][name], flush=True)
    paths = {name: str(root / f"qwen-{name}") for name in variants}
    _, _, out = timed([sys.executable, "-c", AGREEMENT, json.dumps(paths), json.dumps(PROMPTS),
                       str(args.agree_tokens)])
    report["agreement_vs_f32"] = json.loads(out.strip().splitlines()[-1])
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
