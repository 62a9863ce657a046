"""Rebuild a Hugging Face ``tokenizer.json`` from a GGUF file's tokenizer metadata.

GGUF stores the vocabulary (``tokenizer.ggml.tokens``), the BPE merges, token types and
the name of the pre-tokenizer (``tokenizer.ggml.pre``); the regexes themselves live in
llama.cpp. The table below restates them in the ``tokenizers`` library's terms. This
module holds the byte-level BPE ("gpt2") path and what both paths share; SentencePiece
vocabularies ("llama") are in ``gguf_tokenizer_spm``.

``meta`` values may be plain Python (gguf-py's ``field.contents()``) or what ``mx.load``
returns (numeric arrays as mx arrays).
"""

from __future__ import annotations

import json
from typing import Any

# llama.cpp token types
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _byte_level(use_regex: bool) -> dict[str, Any]:
    return {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": use_regex}


def _split(regex: str) -> dict[str, Any]:
    return {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False}


def pre_tokenizer(pre: str) -> dict[str, Any]:
    """The pre-tokenizer llama.cpp applies for ``tokenizer.ggml.pre``."""
    if pre in ("smollm", "starcoder", "refact", "command-r", "olmo"):
        digits = {"type": "Digits", "individual_digits": True}
        return {"type": "Sequence", "pretokenizers": [digits, _byte_level(True)]}
    if pre in ("llama3", "llama-bpe", "llama-v3", "falcon3", "smaug-bpe", "dbrx"):
        return {"type": "Sequence", "pretokenizers": [_split(LLAMA3_REGEX), _byte_level(False)]}
    if pre in ("qwen2", "deepseek-r1-qwen", "qwen35"):
        return {"type": "Sequence", "pretokenizers": [_split(QWEN2_REGEX), _byte_level(False)]}
    if pre in ("gpt2", "default", "gpt-2", "phi-2", "mpt", "olmo2"):
        return _byte_level(True)
    raise ValueError(f"pre-tokenizer '{pre}' is not supported")


def build_tokenizer_json(meta: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(tokenizer.json, the special tokens by role) for the vocabulary ``tokenizer.ggml.model`` names."""
    model = meta.get("tokenizer.ggml.model")
    if model == "gpt2":
        return _build_gpt2(meta)
    if model == "llama":
        from mlxk.convert.gguf_tokenizer_spm import build_spm

        return build_spm(meta)
    raise ValueError(
        f"tokenizer model '{model}' is not supported (byte-level BPE 'gpt2' and SentencePiece 'llama' are)"
    )


def _build_gpt2(meta: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A GPT-2-style byte-level BPE vocabulary with its merges."""
    tokens: list[str] = list(meta["tokenizer.ggml.tokens"])
    merges: list[str] = list(meta.get("tokenizer.ggml.merges") or [])
    types = [int(t) for t in as_list(meta.get("tokenizer.ggml.token_type"), len(tokens), NORMAL)]
    added = [
        added_token(i, tok, special=types[i] == CONTROL, normalized=types[i] == USER_DEFINED)
        for i, tok in enumerate(tokens)
        if types[i] in (CONTROL, USER_DEFINED)
    ]
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": pre_tokenizer(str(meta.get("tokenizer.ggml.pre", "default"))),
        "post_processor": _byte_level_post_processor(meta, tokens),
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": "",
            "end_of_word_suffix": "",
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": {tok: i for i, tok in enumerate(tokens)},
            "merges": [m.split(" ", 1) for m in merges],
        },
    }
    return tokenizer, special_tokens(meta, tokens)


def added_token(idx: int, content: str, *, special: bool, normalized: bool) -> dict[str, Any]:
    return {"id": idx, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
            "normalized": normalized, "special": special}


def special_tokens(meta: dict[str, Any], tokens: list[str]) -> dict[str, str]:
    """The BOS/EOS/UNK/PAD tokens the GGUF names by id, keyed by transformers' role names."""
    specials = {}
    for role in ("bos", "eos", "unknown", "padding"):
        idx = meta.get(f"tokenizer.ggml.{role}_token_id")
        if idx is not None and 0 <= int(idx) < len(tokens):
            specials[{"unknown": "unk", "padding": "pad"}.get(role, role)] = tokens[int(idx)]
    return specials


def add_bos(meta: dict[str, Any]) -> bool:
    """``tokenizer.ggml.add_bos_token``; a SentencePiece file without the flag gets BOS (as in llama.cpp)."""
    flag = meta.get("tokenizer.ggml.add_bos_token")
    if flag is None:
        return meta.get("tokenizer.ggml.model") == "llama"
    return bool(flag)


def bos_eos_template(meta: dict[str, Any], tokens: list[str]) -> dict[str, Any] | None:
    """A TemplateProcessing that adds BOS in front and/or EOS behind, as the GGUF's flags say; None if neither."""
    ends = []
    for role, wanted in (("bos", add_bos(meta)), ("eos", bool(meta.get("tokenizer.ggml.add_eos_token")))):
        idx = meta.get(f"tokenizer.ggml.{role}_token_id")
        if wanted and idx is not None and 0 <= int(idx) < len(tokens):
            ends.append((role, tokens[int(idx)], int(idx)))
    if not ends:
        return None
    bos = [tok for role, tok, _ in ends if role == "bos"]
    eos = [tok for role, tok, _ in ends if role == "eos"]

    def seq(name: str, type_id: int) -> list[dict[str, Any]]:
        return ([{"SpecialToken": {"id": t, "type_id": type_id}} for t in bos]
                + [{"Sequence": {"id": name, "type_id": type_id}}]
                + [{"SpecialToken": {"id": t, "type_id": type_id}} for t in eos])

    return {
        "type": "TemplateProcessing",
        "single": seq("A", 0),
        "pair": seq("A", 0) + seq("B", 1),
        "special_tokens": {tok: {"id": tok, "ids": [idx], "tokens": [tok]} for _, tok, idx in ends},
    }


def _byte_level_post_processor(meta: dict[str, Any], tokens: list[str]) -> dict[str, Any]:
    """Byte-level offsets, plus BOS/EOS when the GGUF says to add them."""
    byte_level = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True}
    template = bos_eos_template(meta, tokens)
    return byte_level if template is None else {"type": "Sequence", "processors": [byte_level, template]}


def as_list(value: Any, n: int, default: Any) -> list:
    """A GGUF array as a Python list (mx.load hands numeric arrays back as mx arrays)."""
    if value is None:
        return [default] * n
    return value.tolist() if hasattr(value, "tolist") else list(value)


_as_list = as_list


def tokenizer_config(meta: dict[str, Any], specials: dict[str, str]) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(meta.get(f"{meta.get('general.architecture')}.context_length", 2048)),
        "add_bos_token": add_bos(meta),
        "add_eos_token": bool(meta.get("tokenizer.ggml.add_eos_token", False)),
    }
    for role, tok in specials.items():
        cfg[f"{role}_token"] = tok
    template = meta.get("tokenizer.chat_template")
    if template:
        cfg["chat_template"] = str(template)
    return cfg


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, indent=2)
