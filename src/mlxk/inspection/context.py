"""One reader of a model's context length, for `show`, `/v1/models` and the engine.

Hugging Face configs name it differently per family (llama: max_position_embeddings,
GPT-2: n_positions, others max_seq_len / seq_length / n_ctx); multimodal configs keep it
in ``text_config``. Fast: reads only config.json, imports nothing heavy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "n_ctx", "context_length")


def context_length_of_config(cfg: dict[str, Any]) -> int | None:
    """The context length a config declares, or None."""
    if not isinstance(cfg, dict):
        return None
    text_cfg = cfg.get("text_config")
    merged = {**cfg, **(text_cfg if isinstance(text_cfg, dict) else {})}
    for key in CONTEXT_KEYS:
        value = merged.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def context_length(path: Path | str, args: Any = None) -> int | None:
    """From ``path``/config.json, else from a loaded model's ``args``."""
    try:
        cfg = json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        cfg = {}
    found = context_length_of_config(cfg)
    if found is None and args is not None:
        for key in CONTEXT_KEYS:
            value = getattr(args, key, None)
            if isinstance(value, int) and value > 0:
                return value
    return found
