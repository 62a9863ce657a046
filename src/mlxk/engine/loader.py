"""Load a model folder with mlx-lm, after mlxk.accel's CPU speed-ups are in place."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlxk import accel


@dataclass
class Loaded:
    model: Any
    tokenizer: Any  # mlx_lm TokenizerWrapper
    path: Path
    generation_config: dict[str, Any]
    load_seconds: float


def load(path: Path, trust_remote_code: bool = False) -> Loaded:
    """``trust_remote_code`` runs Python files shipped with the model: only when the user opts in."""
    import time

    accel.bootstrap()
    from mlx_lm import load as mlx_load

    start = time.perf_counter()
    extra = {"trust_remote_code": True, "tokenizer_config": {"trust_remote_code": True}} if trust_remote_code else {}
    model, tokenizer = mlx_load(str(path), **extra)
    gen_cfg: dict[str, Any] = {}
    gc_file = path / "generation_config.json"
    if gc_file.is_file():
        try:
            data = json.loads(gc_file.read_text())
            gen_cfg = data if isinstance(data, dict) else {}
        except ValueError:
            gen_cfg = {}
    return Loaded(model, tokenizer, path, gen_cfg, time.perf_counter() - start)


def eos_token_ids(tokenizer: Any, generation_config: dict[str, Any]) -> set[int]:
    ids = set(getattr(tokenizer, "eos_token_ids", None) or [])
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    extra = generation_config.get("eos_token_id")
    if isinstance(extra, int):
        ids.add(extra)
    elif isinstance(extra, list):
        ids.update(int(x) for x in extra)
    # Chat models end a turn with an end-of-turn token that is often not the EOS token.
    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
    for tok in ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>"):
        if tok in vocab:
            ids.add(int(vocab[tok]))
    return ids
