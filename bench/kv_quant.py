#!/usr/bin/env python
"""KV-cache quantization: cache memory, decode speed and greedy agreement, unquantized (the model dtype), 8 and 4 bits.

    python bench/kv_quant.py --model NAME_OR_PATH [--context 4096] [--tokens 64]

Prefills a ``--context``-token prompt once per setting through mlx-lm's ``generate_step``
(what ``mlxk serve --kv-bits`` runs), then decodes ``--tokens`` greedy tokens. Prints the
KV cache's bytes after the prefill, decode tok/s, and how many of the greedy tokens agree
with the unquantized run (position of the first difference). Same process, same BLAS
(mlxk.accel's bootstrap) for every setting.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def resolve_path(spec: str) -> Path:
    p = Path(spec).expanduser()
    if p.is_dir():
        return p
    from mlxk.store.names import resolve

    return Path(resolve(spec).path)


def run_one(model, prompt, bits, tokens: int, group: int):
    import mlx.core as mx
    from mlx_lm.generate import generate_step
    from mlx_lm.models.cache import make_prompt_cache

    cache = make_prompt_cache(model)
    gen = generate_step(mx.array(prompt), model, max_tokens=tokens, prompt_cache=cache, prefill_step_size=512,
                        kv_bits=bits, kv_group_size=group, quantized_kv_start=0)
    t0 = time.perf_counter()
    first, _ = next(gen)
    prefill_s = time.perf_counter() - t0
    nbytes = sum(c.nbytes for c in cache)
    out = [int(first)]
    t1 = time.perf_counter()
    for tok, _ in gen:
        out.append(int(tok))
    decode_s = time.perf_counter() - t1
    return out, nbytes, prefill_s, (len(out) - 1) / decode_s if decode_s > 0 else 0.0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--context", type=int, default=4096)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--group-size", type=int, default=64)
    args = ap.parse_args()
    from mlxk import accel

    accel.bootstrap()
    import mlx.core as mx
    from mlx_lm import load

    path = resolve_path(args.model)
    model, tok = load(str(path))
    text = ("In the old library, the clocks ticked while the rain fell on the bridges and the gardens. "
            "A train passed; the birds sang of winter, bread and coffee by the river. ") * 200
    prompt = tok.encode(text)[: args.context - args.tokens - 1]
    print(f"model {path.name}, device {mx.default_device()}, prompt {len(prompt)} tokens, {args.tokens} decoded")
    base = None
    print(f"{'KV bits':>8} {'cache MB':>9} {'vs off':>6} {'prefill s':>9} {'decode tok/s':>12} {'agree':>6}")
    for bits in (None, 8, 4):
        out, nbytes, prefill_s, tps = run_one(model, prompt, bits, args.tokens, args.group_size)
        if base is None:
            base = (out, nbytes)
        agree = next((i for i, (a, b) in enumerate(zip(out, base[0])) if a != b), len(out))
        label = "off" if bits is None else str(bits)
        print(f"{label:>8} {nbytes / 1e6:9.1f} {nbytes / base[1]:6.2f} {prefill_s:9.1f} {tps:12.1f} "
              f"{agree:>3}/{len(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
