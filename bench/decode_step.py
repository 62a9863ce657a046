#!/usr/bin/env python
"""Decode-step time per batch size: the model as mlxk loads it against plain mlx-lm.

    python bench/decode_step.py --model PATH_OR_NAME [--batch 1 2 4 8 16] [--rounds 5]

Both load the same folder in this process with the same BLAS (mlxk's OpenBLAS set-up
runs before mlx is imported); the only difference is what mlxk's loader does to the
model (today: the decode-friendly linear layers of ``mlxk.engine.cpu_linear``). Each
round times 20 greedy decode steps after a 64-token prompt, for each batch size, taking
turns between the two; the medians and the ratio are printed. This isolates the engine
from HTTP and from the clients, whose noise swamps a 10% change in the server bench.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from mlxk.engine import blas


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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    print(blas.setup().line())
    from mlx_lm import load as mlx_load

    from mlxk.engine.loader import load as mlxk_load
    from serve_throughput import resolve_path

    path = resolve_path(args.model)
    models = {"mlxk": mlxk_load(Path(path)).model, "mlx_lm": mlx_load(path)[0]}
    times: dict[str, dict[int, list[float]]] = {k: {b: [] for b in args.batch} for k in models}
    for r in range(args.rounds):
        for b in args.batch:
            for kind in (list(models) if r % 2 == 0 else list(models)[::-1]):
                times[kind][b].append(step_ms(models[kind], b))
    print(f"\nms per decode step, median of {args.rounds} rounds, model {Path(path).name}")
    print(f"{'batch':>6} {'mlxk':>9} {'mlx_lm':>9} {'speed-up':>9}")
    for b in args.batch:
        a, m = statistics.median(times["mlxk"][b]), statistics.median(times["mlx_lm"][b])
        print(f"{b:6d} {a:9.1f} {m:9.1f} {m / a:8.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
