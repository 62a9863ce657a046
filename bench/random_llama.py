#!/usr/bin/env python
"""A llama-family MLX model of a chosen size with random weights, for benches where no
weights can be downloaded (a lent GPU machine, say).

    python bench/random_llama.py --dest /tmp/model [--hidden 2048 --layers 16 --intermediate 5632
                                                    --heads 16 --kv-heads 4 --dtype bfloat16]

The defaults give ~0.72B parameters (1.45 GB in bf16), TinyLlama's shape with 16 layers. The
tokenizer, chat template and vocabulary (512 byte-level BPE tokens) are the test suite's
tiny model's (tests/serve_fixture.py). The output rows of the special tokens are zero, so
their logit is 0 while the best of the ~500 others is well above it: greedy decoding never
ends on EOS and every request of a bench decodes its full ``max_tokens``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dest", required=True, type=Path)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--intermediate", type=int, default=5632)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--context", type=int, default=8192, help="max_position_embeddings")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    args = ap.parse_args()

    from tests.serve_fixture import build_tiny_model

    build_tiny_model(args.dest)  # tokenizer, chat template, config to start from
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models import llama

    config = json.loads((args.dest / "config.json").read_text())
    config.update(hidden_size=args.hidden, num_hidden_layers=args.layers, intermediate_size=args.intermediate,
                  num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
                  max_position_embeddings=args.context, tie_word_embeddings=False, torch_dtype=args.dtype)
    mx.random.seed(0)
    model = llama.Model(llama.ModelArgs.from_dict(config))
    dtype = getattr(mx, args.dtype)
    params = {k: v.astype(dtype) for k, v in tree_flatten(model.parameters())}
    tok = json.loads((args.dest / "tokenizer.json").read_text())
    specials = [t["id"] for t in tok.get("added_tokens", []) if t.get("special")]
    keep = mx.ones((config["vocab_size"], 1), dtype=dtype)
    keep[mx.array(specials)] = 0
    params["lm_head.weight"] = params["lm_head.weight"] * keep
    mx.eval(params)
    (args.dest / "model.safetensors").unlink()
    mx.save_safetensors(str(args.dest / "model.safetensors"), params)
    (args.dest / "config.json").write_text(json.dumps(config, indent=2))
    n = sum(v.size for v in params.values())
    print(f"{args.dest}: {n / 1e9:.3f}B parameters, {args.dtype}, vocab {config['vocab_size']}, "
          f"special tokens {specials} never chosen greedily")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
