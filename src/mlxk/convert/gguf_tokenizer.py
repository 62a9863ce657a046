"""Rebuild a Hugging Face ``tokenizer.json`` from a GGUF file's tokenizer metadata.

GGUF stores the vocabulary (``tokenizer.ggml.tokens``), the BPE merges, token types and
the name of the pre-tokenizer (``tokenizer.ggml.pre``); the regexes themselves live in
llama.cpp. The table below restates them in the ``tokenizers`` library's terms.
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
    """(tokenizer.json, the special tokens by role) for a GPT-2-style BPE vocabulary."""
    model = meta.get("tokenizer.ggml.model")
    if model != "gpt2":
        raise ValueError(f"tokenizer model '{model}' is not supported (only byte-level BPE, 'gpt2')")
    tokens: list[str] = list(meta["tokenizer.ggml.tokens"])
    merges: list[str] = list(meta.get("tokenizer.ggml.merges") or [])
    types = [int(t) for t in _as_list(meta.get("tokenizer.ggml.token_type"), len(tokens), NORMAL)]
    added = [
        {"id": i, "content": tok, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": types[i] == USER_DEFINED, "special": types[i] == CONTROL}
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
        "post_processor": _post_processor(meta, tokens),
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
    specials = {}
    for role in ("bos", "eos", "unknown", "padding"):
        idx = meta.get(f"tokenizer.ggml.{role}_token_id")
        if idx is not None and 0 <= int(idx) < len(tokens):
            specials[{"unknown": "unk", "padding": "pad"}.get(role, role)] = tokens[int(idx)]
    return tokenizer, specials


def _post_processor(meta: dict[str, Any], tokens: list[str]) -> dict[str, Any]:
    """Byte-level offsets, plus the BOS token in front when the GGUF says to add one."""
    byte_level = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True}
    bos = meta.get("tokenizer.ggml.bos_token_id")
    if not meta.get("tokenizer.ggml.add_bos_token") or bos is None:
        return byte_level
    bos_tok = tokens[int(bos)]
    template = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": bos_tok, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": bos_tok, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": bos_tok, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {bos_tok: {"id": bos_tok, "ids": [int(bos)], "tokens": [bos_tok]}},
    }
    return {"type": "Sequence", "processors": [byte_level, template]}


def _as_list(value: Any, n: int, default: int) -> list:
    if value is None:
        return [default] * n
    return value.tolist() if hasattr(value, "tolist") else list(value)


def tokenizer_config(meta: dict[str, Any], specials: dict[str, str]) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(meta.get(f"{meta.get('general.architecture')}.context_length", 2048)),
        "add_bos_token": bool(meta.get("tokenizer.ggml.add_bos_token", False)),
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
