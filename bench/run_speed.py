#!/usr/bin/env python
"""Decode and prompt speed: ``mlxk run`` against ``mlx_lm.generate``, same model and prompt.

    python bench/run_speed.py [--model mlxk-demo/SmolLM2-135M-Instruct] [--tokens 128] [--repeat 3] [--busy N]

Each side runs in a fresh subprocess of this Python environment, alternating, and both load
OpenBLAS the same way (mlxk.accel.bootstrap() before mlx is imported); mlxk also puts its
decode GEMM in front of it, has MLX build its CPU kernels for this CPU and replaces
mx.logsumexp (mlxk.accel), which the peer runs without (MLXK_DECODE_GEMM, MLXK_CPU_KERNELS,
MLXK_CPU_OPS off), as mlx-lm is installed. Greedy decoding, chat template applied by
both. Prints the median tok/s of each side and mlxk / mlx_lm (target >= 0.95x).

``--busy N`` starts N busy-loop processes for the whole run (both sides, every round) and
stops them at the end: a machine whose CPUs other work keeps busy.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys

PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."

PEER = r"""
import json, sys
from mlxk import accel
from mlxk.accel import blas
accel.bootstrap()  # OpenBLAS alone: every other piece is switched off in its environment
import mlx_lm
from mlx_lm.sample_utils import make_sampler
path, prompt, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
model, tok = mlx_lm.load(path)
ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True)
last = None
for last in mlx_lm.stream_generate(model, tok, ids, max_tokens=n, sampler=make_sampler(0.0)):
    pass
print(json.dumps({"tps": last.generation_tps, "prompt_tps": last.prompt_tps,
                  "tokens": last.generation_tokens, "blas": blas.info().name}))
"""


def run_mlxk(model: str, n: int) -> dict:
    out = subprocess.run([sys.executable, "-m", "mlxk", "run", model, PROMPT, "--json", "--max-tokens", str(n),
                          "--temperature", "0"], capture_output=True, text=True, check=True).stdout
    d = json.loads(out)["data"]
    return {"tps": d["tokens_per_second"], "prompt_tps": d["prompt_tokens_per_second"],
            "tokens": d["tokens_generated"]}


PEER_OFF = {"MLXK_DECODE_GEMM": "off", "MLXK_CPU_KERNELS": "off", "MLXK_CPU_OPS": "off"}


def run_peer(path: str, n: int) -> dict:
    out = subprocess.run([sys.executable, "-c", PEER, path, PROMPT, str(n)], capture_output=True, text=True,
                         check=True, env={**os.environ, **PEER_OFF}).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mlxk-demo/SmolLM2-135M-Instruct")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--busy", type=int, default=0, metavar="N", help="busy-loop processes kept running meanwhile")
    args = ap.parse_args()

    from mlxk.store.names import resolve

    path = str(resolve(args.model).path)
    mine, peer = [], []
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a `timeout` still stops the busy loops
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    try:
        for i in range(args.repeat):
            mine.append(run_mlxk(args.model, args.tokens))
            peer.append(run_peer(path, args.tokens))
            print(f"round {i + 1}: mlxk {mine[-1]['tps']:.1f} tok/s ({mine[-1]['tokens']} tokens), "
                  f"mlx_lm {peer[-1]['tps']:.1f} tok/s ({peer[-1]['tokens']} tokens)", flush=True)
    finally:
        for proc in busy:
            proc.kill()
            proc.wait()
    if args.busy:
        print(f"with {args.busy} busy-loop process(es) running ({os.cpu_count()} CPUs)")
    med = {k: (statistics.median(r[k] for r in mine), statistics.median(r[k] for r in peer))
           for k in ("tps", "prompt_tps")}
    print(f"BLAS (both): {peer[-1]['blas']}, mlxk with its decode GEMM")
    print(f"decode  tok/s: mlxk {med['tps'][0]:.2f}  mlx_lm {med['tps'][1]:.2f}  ratio {med['tps'][0] / med['tps'][1]:.3f}x")
    print(f"prompt  tok/s: mlxk {med['prompt_tps'][0]:.2f}  mlx_lm {med['prompt_tps'][1]:.2f}  "
          f"ratio {med['prompt_tps'][0] / med['prompt_tps'][1]:.3f}x")


if __name__ == "__main__":
    main()
