"""``list``, ``show`` and ``health``: read-only views of the store."""

from __future__ import annotations

from typing import Any

from mlxk.contract import Envelope
from mlxk.inspection.classify import text_config
from mlxk.inspection.context import context_length_of_config
from mlxk.inspection.model_object import Inspection, health_reason, inspect
from mlxk.store.cache import CachedRepo, scan, shallow_scan
from mlxk.store.names import ModelRef, is_path_spec, resolve, workspace_refs


def _refs(repos: list[CachedRepo]) -> list[ModelRef]:
    refs = []
    for repo in repos:
        snap = repo.selected()
        refs.append(ModelRef(repo.repo_id, snap.path if snap else None, True, repo, snap))
    return refs


def inspect_all(pattern: str | None = None) -> list[Inspection]:
    """Cache models whose name holds ``pattern``; a path pattern: the workspace models at or under it."""
    if pattern and is_path_spec(pattern):
        return [inspect(ref) for ref in workspace_refs(pattern)]
    needle = (pattern or "").lower()
    return [inspect(ref) for ref in _refs(scan()) if needle in ref.name.lower()]


def list_models(pattern: str | None = None) -> tuple[Envelope, list[Inspection]]:
    """The JSON lists every model (filters are for humans); the inspections go to the renderer."""
    found = inspect_all(pattern)
    models = [i.model_object() for i in found]
    return Envelope.success("list", {"models": models, "count": len(models)}), found


def health(pattern: str | None = None) -> Envelope:
    """No pattern: every model. A pattern names one model (``Qwen3@e96``), as in spec 0.1.7.

    Integrity only, from the folders: no huggingface_hub scan, no classification beyond
    GGUF-or-not (the same checks ``list`` reports, see ``inspection.health``).
    """
    repos = shallow_scan()
    refs = [resolve(pattern, repos)] if pattern else _refs(repos)
    healthy, unhealthy = [], []
    for ref in refs:
        reason = health_reason(ref)
        entry = {"name": ref.name, "status": "unhealthy" if reason else "healthy", "reason": reason or "Model is healthy"}
        (unhealthy if reason else healthy).append(entry)
    return Envelope.success(
        "health",
        {
            "healthy": healthy,
            "unhealthy": unhealthy,
            "summary": {"total": len(refs), "healthy_count": len(healthy), "unhealthy_count": len(unhealthy)},
        },
    )


def human_size(num: int) -> str:
    value = float(num)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{int(value)}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}TB"


# The sizes `show` reports and the names families give them (GPT-2: n_embd, n_head, n_layer).
SIZE_KEYS = {
    "hidden_size": ("hidden_size", "n_embd", "d_model"),
    "num_attention_heads": ("num_attention_heads", "n_head", "num_heads"),
    "num_hidden_layers": ("num_hidden_layers", "n_layer", "num_layers"),
}


def _first(cfg: dict[str, Any], *keys: str) -> Any:
    return next((cfg[k] for k in keys if cfg.get(k) is not None), None)


def metadata(item: Inspection) -> dict[str, Any] | None:
    cfg = item.files.config
    if cfg is None and item.gguf_meta:
        return _gguf_metadata(item.gguf_meta)
    if cfg is None:
        return None
    tc = text_config(cfg)
    quant = cfg.get("quantization") or cfg.get("quantization_config")
    bits = quant.get("bits") if isinstance(quant, dict) else None
    out: dict[str, Any] = {
        "model_type": cfg.get("model_type"),
        "quantization": f"{bits}bit" if bits else None,
        "context_length": context_length_of_config(cfg),
        "vocab_size": tc.get("vocab_size"),
        **{key: _first(tc, *names) for key, names in SIZE_KEYS.items()},
    }
    if tc.get("num_key_value_heads") is not None:
        out["num_key_value_heads"] = tc.get("num_key_value_heads")
    if isinstance(quant, dict) and quant.get("group_size"):
        out["group_size"] = quant.get("group_size")
    return out


# llama.cpp's LLAMA_FTYPE values, for GGUF files' general.file_type.
GGUF_FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
    12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
    19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL",
    26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16",
}


def _gguf_metadata(meta: dict[str, Any]) -> dict[str, Any]:
    arch = meta.get("general.architecture")
    ftype = meta.get("general.file_type")
    return {
        "model_type": arch,
        "quantization": GGUF_FILE_TYPES.get(ftype, ftype) if ftype is not None else None,
        "context_length": meta.get(f"{arch}.context_length"),
        "vocab_size": (meta.get("tokenizer.ggml.tokens") or {}).get("array_length"),
        "hidden_size": meta.get(f"{arch}.embedding_length"),
        "num_attention_heads": meta.get(f"{arch}.attention.head_count"),
        "num_hidden_layers": meta.get(f"{arch}.block_count"),
    }


def show(spec: str, files: bool = False, config: bool = False) -> Envelope:
    item = inspect(resolve(spec))
    data: dict[str, Any] = {"model": item.model_object()}
    if files:
        data["files"] = [
            {"name": f.name, "size": "missing" if f.broken else human_size(f.size), "type": f.kind}
            for f in sorted(item.files.files.values(), key=lambda f: f.name)
        ]
    if config:
        data["config"] = item.files.config
    # As the spec's examples: the detail views (--files, --config) carry no metadata.
    data["metadata"] = None if files or config else metadata(item)
    return Envelope.success("show", data)
