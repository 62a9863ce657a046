"""GGUF → MLX model folder (what ``mlx_lm.load`` reads).

``mx.load`` reads GGUF natively and hands Q4_0/Q4_1/Q8_0 tensors back as MLX affine
triples (packed weight, scales, biases; group size 32), so GGUF Q4_1 becomes MLX 4-bit
group-32 without loss. What remains is naming (llama.cpp → Hugging Face), undoing the
rope row permutation llama.cpp applies to attn_q/attn_k, the config and the tokenizer.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from mlxk.convert.gguf_tokenizer import build_tokenizer_json, dumps, tokenizer_config

# Architectures whose GGUF tensors map onto mlx_lm's llama-style modules.
SUPPORTED_ARCHS = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2"}

_LAYER_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_BLOCK_RE = re.compile(r"^blk\.(\d+)\.([a-z_]+)\.(weight|bias|scales|biases)$")
_TOP_RE = re.compile(r"^([a-z_]+)\.(weight|bias|scales|biases)$")


class UnsupportedGGUF(ValueError):
    """The file is readable but not something we can import (architecture, tokenizer, quant type)."""


@dataclass(frozen=True)
class ImportResult:
    dtype: str  # "float32", "float16", "bfloat16" or "q4"/"q8" when quantized weights are kept
    quantization: dict[str, Any] | None
    architecture: str
    parameters: int


def scalar(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def hf_name(gguf_name: str) -> str | None:
    m = _BLOCK_RE.match(gguf_name)
    if m:
        layer, part, kind = m.groups()
        mapped = _LAYER_NAMES.get(part)
        return f"model.layers.{layer}.{mapped}.{kind}" if mapped else None
    m = _TOP_RE.match(gguf_name)
    if m and m.group(1) in _TOP_NAMES:
        return f"{_TOP_NAMES[m.group(1)]}.{m.group(2)}"
    return None


def unpermute(w, n_heads: int):
    """Inverse of llama.cpp's ``permute`` (which maps rows (heads, 2, half) to (heads, half, 2))."""
    rows = w.shape[0]
    return w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def model_config(meta: dict[str, Any], arch: str, tied: bool) -> dict[str, Any]:
    g = lambda key, default=None: scalar(meta.get(f"{arch}.{key}", default))  # noqa: E731
    heads = int(g("attention.head_count"))
    hidden = int(g("embedding_length"))
    vocab = g("vocab_size") or len(meta["tokenizer.ggml.tokens"])
    cfg: dict[str, Any] = {
        "architectures": ["Qwen2ForCausalLM" if arch == "qwen2" else "LlamaForCausalLM"],
        "model_type": SUPPORTED_ARCHS[arch],
        "hidden_size": hidden,
        "intermediate_size": int(g("feed_forward_length")),
        "num_hidden_layers": int(g("block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(g("attention.head_count_kv", heads)),
        "head_dim": int(g("rope.dimension_count", hidden // heads)),
        "max_position_embeddings": int(g("context_length", 2048)),
        "rms_norm_eps": float(g("attention.layer_norm_rms_epsilon", 1e-5)),
        "rope_theta": float(g("rope.freq_base", 10000.0)),
        "vocab_size": int(vocab),
        "tie_word_embeddings": tied,
        "hidden_act": "silu",
        "attention_bias": arch == "qwen2",
        "mlp_bias": False,
    }
    for role in ("bos", "eos", "padding"):
        idx = meta.get(f"tokenizer.ggml.{role}_token_id")
        if idx is not None:
            cfg[{"padding": "pad"}.get(role, role) + "_token_id"] = int(scalar(idx))
    return cfg


def read_gguf(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    import mlx.core as mx

    try:
        return mx.load(str(path), return_metadata=True)
    except Exception as exc:  # mlx raises RuntimeError/ValueError for bad or unsupported files
        raise UnsupportedGGUF(f"cannot read {path.name} as GGUF: {exc}") from exc


def import_gguf(
    path: Path,
    target: Path,
    dtype: str = "float32",
    keep_quantized: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> ImportResult:
    """Write an MLX model folder for ``path`` into ``target`` (which must exist and be empty)."""
    import mlx.core as mx

    weights, meta = read_gguf(path)
    arch = str(meta.get("general.architecture", "unknown"))
    if arch not in SUPPORTED_ARCHS:
        raise UnsupportedGGUF(
            f"GGUF architecture '{arch}' is not supported for import (supported: {', '.join(sorted(SUPPORTED_ARCHS))})"
        )
    try:
        tok_json, specials = build_tokenizer_json(meta)
    except (ValueError, KeyError) as exc:
        raise UnsupportedGGUF(f"cannot rebuild the tokenizer: {exc}") from exc

    heads = int(scalar(meta[f"{arch}.attention.head_count"]))
    kv_heads = int(scalar(meta.get(f"{arch}.attention.head_count_kv", heads)))
    target_dtype = getattr(mx, dtype)
    out: dict[str, Any] = {}
    quant: dict[str, Any] = {}
    names = sorted(n for n in weights if not n.endswith((".scales", ".biases")))
    params = 0
    for i, name in enumerate(names):
        hf = hf_name(name)
        if hf is None:
            raise UnsupportedGGUF(f"unexpected tensor '{name}' for architecture '{arch}'")
        stem = name.rsplit(".", 1)[0]
        w = weights[name]
        scales, biases = weights.get(f"{stem}.scales"), weights.get(f"{stem}.biases")
        permute = heads if ".attn_q." in name else kv_heads if ".attn_k." in name else None
        if scales is not None:
            in_features = scales.shape[-1] * 32  # group size 32
            bits = w.shape[-1] * 32 // in_features
            params += w.shape[0] * in_features
            if keep_quantized:
                if permute:
                    w, scales, biases = (unpermute(t, permute) for t in (w, scales, biases))
                module = hf.rsplit(".", 1)[0]
                out[hf], out[f"{module}.scales"], out[f"{module}.biases"] = w, scales, biases
                quant[module] = {"group_size": 32, "bits": int(bits)}
                continue
            w = mx.dequantize(w, scales, biases, group_size=32, bits=int(bits))
        else:
            params += w.size
        if permute:
            w = unpermute(w, permute)
        out[hf] = w.astype(target_dtype) if mx.issubdtype(w.dtype, mx.floating) else w
        mx.eval(out[hf])
        if progress:
            progress(i + 1, len(names))

    tied = "lm_head.weight" not in out
    config = model_config(meta, arch, tied)
    quantization = None
    if quant:
        from collections import Counter

        common = Counter(q["bits"] for q in quant.values()).most_common(1)[0][0]
        quantization = {"group_size": 32, "bits": common}
        quantization.update({m: q for m, q in quant.items() if q["bits"] != common})
        config["quantization"] = config["quantization_config"] = quantization
    mx.save_safetensors(str(target / "model.safetensors"), out, metadata={"format": "mlx"})
    (target / "config.json").write_text(json.dumps(config, indent=2))
    (target / "tokenizer.json").write_text(dumps(tok_json), encoding="utf-8")
    (target / "tokenizer_config.json").write_text(dumps(tokenizer_config(meta, specials)), encoding="utf-8")
    gen = {k: config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if k in config}
    (target / "generation_config.json").write_text(json.dumps(gen, indent=2))
    return ImportResult("q%d" % quantization["bits"] if quantization else dtype, quantization, arch, params)
