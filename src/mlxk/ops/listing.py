"""``list``, ``show`` and ``health``: read-only views of the store."""

from __future__ import annotations

from typing import Any

from mlxk.contract import Envelope
from mlxk.inspection.classify import text_config
from mlxk.inspection.model_object import Inspection, inspect
from mlxk.store.cache import scan
from mlxk.store.names import ModelRef, resolve


def _all_refs() -> list[ModelRef]:
    refs = []
    for repo in scan():
        snap = repo.selected()
        refs.append(ModelRef(repo.repo_id, snap.path if snap else None, True, repo, snap))
    return refs


def inspect_all(pattern: str | None = None) -> list[Inspection]:
    needle = (pattern or "").lower()
    return [inspect(ref) for ref in _all_refs() if needle in ref.name.lower()]


def list_models(pattern: str | None = None) -> tuple[Envelope, list[Inspection]]:
    """The JSON lists every model (filters are for humans); the inspections go to the renderer."""
    found = inspect_all(pattern)
    models = [i.model_object() for i in found]
    return Envelope.success("list", {"models": models, "count": len(models)}), found


def health(pattern: str | None = None) -> Envelope:
    """No pattern: every model. A pattern names one model (``Qwen3@e96``), as in spec 0.1.7."""
    found = [inspect(resolve(pattern))] if pattern else inspect_all()
    healthy, unhealthy = [], []
    for item in found:
        entry = {
            "name": item.ref.name,
            "status": "healthy" if item.healthy else "unhealthy",
            "reason": item.health_reason or "Model is healthy",
        }
        (healthy if item.healthy else unhealthy).append(entry)
    return Envelope.success(
        "health",
        {
            "healthy": healthy,
            "unhealthy": unhealthy,
            "summary": {"total": len(found), "healthy_count": len(healthy), "unhealthy_count": len(unhealthy)},
        },
    )


def human_size(num: int) -> str:
    value = float(num)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{int(value)}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}TB"


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
        "context_length": tc.get("max_position_embeddings") or tc.get("max_seq_len") or tc.get("n_ctx"),
        "vocab_size": tc.get("vocab_size"),
        "hidden_size": tc.get("hidden_size"),
        "num_attention_heads": tc.get("num_attention_heads"),
        "num_hidden_layers": tc.get("num_hidden_layers"),
    }
    if tc.get("num_key_value_heads") is not None:
        out["num_key_value_heads"] = tc.get("num_key_value_heads")
    if isinstance(quant, dict) and quant.get("group_size"):
        out["group_size"] = quant.get("group_size")
    return out


def _gguf_metadata(meta: dict[str, Any]) -> dict[str, Any]:
    arch = meta.get("general.architecture")
    return {
        "model_type": arch,
        "quantization": meta.get("general.file_type"),
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
    data["metadata"] = metadata(item)
    return Envelope.success("show", data)
