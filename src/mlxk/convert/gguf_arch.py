"""What each GGUF architecture needs to become an mlx_lm model: one table, one entry each.

llama.cpp's converters change some weights on the way into GGUF, and the import has to
undo exactly that, per architecture (not per guess):

- llama / mistral: attn_q and attn_k rows are permuted for llama.cpp's rope layout
  (``LlamaModel.permute`` in convert_hf_to_gguf.py); undone here.
- qwen2 / qwen3: no permutation (un-permuting them garbles the output); qwen2 has q/k/v
  biases, qwen3 has per-head q_norm / k_norm.
- gemma / gemma2 / gemma3: every ``*norm.weight`` was stored as ``w + 1`` (llama.cpp
  multiplies by the weight, the Gemma RMSNorm by ``1 + w``); undone by subtracting 1.
  Gemma 2/3 have four norms per block with their own names, gemma3 per-head q/k norms,
  and ``gemma3_text`` config values the GGUF does not carry.

Anything else is refused by name: a wrong guess would import "healthy" and answer garbage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

_COMMON = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_norm": "input_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_LLAMA_LAYERS = {**_COMMON, "ffn_norm": "post_attention_layernorm"}
_QK_NORMS = {"attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm"}
_GEMMA2_LAYERS = {
    **_COMMON,
    "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
}
TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}

Getter = Callable[[str, Any], Any]  # g("attention.head_count", default) reads "<arch>.attention.head_count"


def _no_extra(g: Getter, head_dim: int) -> dict[str, Any]:
    return {}


def _gemma2_extra(g: Getter, head_dim: int) -> dict[str, Any]:
    hidden, heads = int(g("embedding_length", 0)), int(g("attention.head_count", 1))
    # llama.cpp scales queries by 1/sqrt(hidden/heads) for Gemma 2 27B (46 blocks), 1/sqrt(head_dim) otherwise
    scalar = hidden // heads if int(g("block_count", 0)) == 46 else head_dim
    return {
        "query_pre_attn_scalar": scalar,
        "attn_logit_softcapping": float(g("attn_logit_softcapping", 50.0)),
        "final_logit_softcapping": float(g("final_logit_softcapping", 30.0)),
    }


def _gemma3_extra(g: Getter, head_dim: int) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "rope_local_base_freq": 10000.0,  # the sliding layers' rope base; llama.cpp hard-codes it too
        "query_pre_attn_scalar": head_dim,
        "sliding_window_pattern": 6,
        "sliding_window": int(g("attention.sliding_window", 512)),
    }
    factor = g("rope.scaling.factor", None)
    if factor and str(g("rope.scaling.type", "linear")) == "linear" and float(factor) != 1.0:
        cfg["rope_scaling"] = {"rope_type": "linear", "factor": float(factor)}
    return cfg


@dataclass(frozen=True)
class ArchSpec:
    model_type: str  # mlx_lm's module (mlx_lm/models/<model_type>.py)
    hf_class: str
    layers: dict[str, str]  # GGUF block tensor stem -> mlx_lm module path inside the layer
    permute_qk: bool = False  # undo llama.cpp's rope row permutation of attn_q / attn_k
    norm_minus_one: bool = False  # GGUF holds 1 + w for every *norm.weight
    hidden_act: str = "silu"
    extra: Callable[[Getter, int], dict[str, Any]] = field(default=_no_extra)


ARCHS: dict[str, ArchSpec] = {
    "llama": ArchSpec("llama", "LlamaForCausalLM", _LLAMA_LAYERS, permute_qk=True),
    "mistral": ArchSpec("llama", "MistralForCausalLM", _LLAMA_LAYERS, permute_qk=True),
    "qwen2": ArchSpec("qwen2", "Qwen2ForCausalLM", _LLAMA_LAYERS),
    "qwen3": ArchSpec("qwen3", "Qwen3ForCausalLM", {**_LLAMA_LAYERS, **_QK_NORMS}),
    "gemma": ArchSpec("gemma", "GemmaForCausalLM", _LLAMA_LAYERS, norm_minus_one=True, hidden_act="gelu_pytorch_tanh"),
    "gemma2": ArchSpec("gemma2", "Gemma2ForCausalLM", _GEMMA2_LAYERS, norm_minus_one=True,
                       hidden_act="gelu_pytorch_tanh", extra=_gemma2_extra),
    "gemma3": ArchSpec("gemma3_text", "Gemma3ForCausalLM", {**_GEMMA2_LAYERS, **_QK_NORMS}, norm_minus_one=True,
                       hidden_act="gelu_pytorch_tanh", extra=_gemma3_extra),
}


class UnsupportedGGUF(ValueError):
    """The file is readable but not something we can import (architecture, tokenizer, tensor type)."""


def spec_for(arch: str) -> ArchSpec:
    if arch not in ARCHS:
        raise UnsupportedGGUF(
            f"GGUF architecture '{arch}' is not supported for import (supported: {', '.join(sorted(ARCHS))})"
        )
    return ARCHS[arch]


def hf_name(spec: ArchSpec, gguf_name: str) -> str | None:
    """``blk.3.attn_q.weight`` -> ``model.layers.3.self_attn.q_proj.weight`` (None: not a tensor we know)."""
    parts = gguf_name.split(".")
    if len(parts) == 4 and parts[0] == "blk" and parts[1].isdigit():
        mapped = spec.layers.get(parts[2])
        return f"model.layers.{parts[1]}.{mapped}.{parts[3]}" if mapped else None
    if len(parts) == 2 and parts[0] in TOP_NAMES:
        return f"{TOP_NAMES[parts[0]]}.{parts[1]}"
    return None


def permute_heads(spec: ArchSpec, gguf_name: str, heads: int, kv_heads: int) -> int | None:
    """How many heads to un-permute ``gguf_name`` over, or None when it is left as it is."""
    if not spec.permute_qk:
        return None
    return heads if ".attn_q." in gguf_name else kv_heads if ".attn_k." in gguf_name else None


def shifts_norm(spec: ArchSpec, gguf_name: str) -> bool:
    return spec.norm_minus_one and gguf_name.endswith("norm.weight")


def unpermute(w, n_heads: int):
    """Inverse of llama.cpp's ``permute`` (rows (heads, 2, half) were stored as (heads, half, 2)).

    Works on numpy and mlx arrays alike.
    """
    rows = w.shape[0]
    return w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def model_config(meta: dict[str, Any], arch: str, tied: bool) -> dict[str, Any]:
    """config.json for mlx_lm, from the GGUF's ``<arch>.*`` keys and the arch's own defaults."""
    spec = spec_for(arch)

    def g(key: str, default: Any = None) -> Any:
        return meta.get(f"{arch}.{key}", default)

    heads = int(g("attention.head_count"))
    hidden = int(g("embedding_length"))
    head_dim = int(g("attention.key_length") or g("rope.dimension_count") or hidden // heads)
    vocab = g("vocab_size") or len(meta["tokenizer.ggml.tokens"])
    cfg: dict[str, Any] = {
        "architectures": [spec.hf_class],
        "model_type": spec.model_type,
        "hidden_size": hidden,
        "intermediate_size": int(g("feed_forward_length")),
        "num_hidden_layers": int(g("block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(g("attention.head_count_kv", heads)),
        "head_dim": head_dim,
        "max_position_embeddings": int(g("context_length", 2048)),
        "rms_norm_eps": float(g("attention.layer_norm_rms_epsilon", 1e-5)),
        "rope_theta": float(g("rope.freq_base", 10000.0)),
        "vocab_size": int(vocab),
        "tie_word_embeddings": tied,
        "hidden_act": spec.hidden_act,
    }
    if spec.model_type == "llama":
        cfg.update(attention_bias=False, mlp_bias=False)
    cfg.update(spec.extra(g, head_dim))
    for role in ("bos", "eos", "padding"):
        idx = meta.get(f"tokenizer.ggml.{role}_token_id")
        if idx is not None:
            cfg[{"padding": "pad"}.get(role, role) + "_token_id"] = int(idx)
    return cfg
