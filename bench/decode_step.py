#!/usr/bin/env python
"""Decode-step time per batch size: mlxk's engine against plain mlx-lm on the same BLAS.

    python bench/decode_step.py --model PATH_OR_NAME [--batch 1 2 4 8 16] [--rounds 5]

"mlxk" loads the model the way ``mlxk serve`` and ``mlxk run`` do: OpenBLAS with mlxk's
decode GEMM in front of it (``mlxk.accel``). "mlx_lm" is ``mlx_lm.load`` on
OpenBLAS alone, which is what ``python -m mlx_lm.server`` gets with OpenBLAS preloaded.
The library sits below MLX for the whole process, so each side runs in a process of its
own; the two take turns, ``--rounds`` times, and the medians are compared. Each run times
20 greedy decode steps after a 64-token prompt for each batch size. This isolates the
engine from HTTP and from the clients, whose noise swamps a 10% change in the server bench.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


def step_ms(model, batch: int, steps: int = 20) -> float:
    import mlx.core as mx
    from mlx_lm.models.cache import make_prompt_cache

    cache = make_prompt_cache(model)
    mx.eval(model(mx.array([[7] * 64] * batch), cache=cache))
    y = mx.array([[5]] * batch)
    for i in range(steps + 3):
        if i == 3:
            start = time.perf_counter()
        y = mx.argmax(model(y, cache=cache)[:, -1, :], axis=-1)[:, None]
        mx.eval(y)
    return (time.perf_counter() - start) / steps * 1000


def child(kind: str, path: str, batches: list[int]) -> None:
    from mlxk import accel
    from mlxk.accel import report

    accel.bootstrap()  # mlx_lm's side runs with every piece but OpenBLAS switched off
    line = "; ".join(report.observe().lines()[:2])
    if kind == "mlxk":
        from mlxk.engine.loader import load

        model = load(Path(path)).model
    else:
        from mlx_lm import load as mlx_load

        model = mlx_load(path)[0]
    print(json.dumps({"blas": line, "ms": {b: step_ms(model, b) for b in batches}}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--child", choices=["mlxk", "mlx_lm"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.model, args.batch)
        return 0
    from serve_throughput import resolve_path

    path = resolve_path(args.model)
    envs = {"mlxk": dict(os.environ), "mlx_lm": {**os.environ, "MLXK_DECODE_GEMM": "off", "MLXK_CPU_KERNELS": "off",
                                                 "MLXK_CPU_OPS": "off"}}
    times: dict[str, dict[int, list[float]]] = {k: {b: [] for b in args.batch} for k in envs}
    for r in range(args.rounds):
        for kind in (list(envs) if r % 2 == 0 else list(envs)[::-1]):
            cmd = [sys.executable, __file__, "--child", kind, "--model", path, "--batch", *map(str, args.batch)]
            out = json.loads(subprocess.run(cmd, env=envs[kind], check=True, capture_output=True,
                                            text=True).stdout.strip().splitlines()[-1])
            if r == 0:
                print(f"{kind}: {out['blas']}")
            for b in args.batch:
                times[kind][b].append(out["ms"][str(b)])
    print(f"\nms per decode step, median of {args.rounds} rounds, model {Path(path).name}")
    print(f"{'batch':>6} {'mlxk':>9} {'mlx_lm':>9} {'speed-up':>9}")
    for b in args.batch:
        a, m = statistics.median(times["mlxk"][b]), statistics.median(times["mlx_lm"][b])
        print(f"{b:6d} {a:9.1f} {m:9.1f} {m / a:8.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
