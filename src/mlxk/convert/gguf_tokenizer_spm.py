"""SentencePiece vocabularies in GGUF (``tokenizer.ggml.model = "llama"``: Llama 2, Mistral, Gemma).

A GGUF keeps the SentencePiece pieces, their scores and token types, but not the
``tokenizer.model`` itself. The ``tokenizers`` library runs a SentencePiece BPE model as
BPE with byte fallback (the ``<0xNN>`` pieces) behind a normalizer that turns spaces
into ``▁``. Such a BPE needs merges; files rarely carry them, so they are derived from
the vocabulary: every way of cutting a piece into two pieces that are themselves in the
vocabulary is a merge, ranked by the merged piece's score, best first (the rule
transformers' ``generate_merges`` uses, restated here so the result is the same).
Gemma's scores do not follow its merge order; the order of the pieces in the file does.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mlxk.convert.gguf_tokenizer import (
    CONTROL,
    NORMAL,
    USER_DEFINED,
    added_token,
    as_list,
    bos_eos_template,
    special_tokens,
)

# Architectures whose merges follow the order of the pieces in the file, not their scores.
RANK_BY_INDEX = ("gemma", "gemma2", "gemma3", "gemma3_text", "gemma3n")

SPACE = "\u2581"


def respell_spaces(tokens: list[str]) -> list[str]:
    """Pieces made only of spaces (Gemma stores ``"  "`` for ``"▁▁"``) get their ``▁`` spelling back.

    The normalizer turns every space into ``▁`` before the model sees the text, so a piece spelled
    with real spaces could never be produced. Left alone when the ``▁`` spelling is taken.
    """
    taken = set(tokens)
    out = list(tokens)
    for i, tok in enumerate(tokens):
        if tok and not tok.strip(" ") and " " in tok:
            spelled = SPACE * len(tok)
            if spelled not in taken:
                out[i] = spelled
                taken.add(spelled)
    return out


def derive_merges(tokens: list[str], rank: list[float]) -> list[tuple[str, str]]:
    """The merges a SentencePiece BPE vocabulary implies, best first.

    Every split of a piece into two vocabulary pieces is a merge; they are ordered by the
    merged piece's rank (higher first), then longer left part, longer right part, then
    vocabulary order (one numpy sort): a few seconds for Gemma's 262k pieces.
    """
    known = set(tokens)
    scores = dict(zip(tokens, rank))  # a repeated piece keeps its first place, its last rank
    pieces, values = list(scores), list(scores.values())
    stride = max(map(len, pieces), default=0) + 1
    hits: list[int] = []  # piece index * stride + cut: one int each, no tuples to allocate
    for i, piece in enumerate(pieces):
        for cut in range(1, len(piece)):
            if piece[:cut] in known and piece[cut:] in known:
                hits.append(i * stride + cut)
    if not hits:
        return []
    packed = np.array(hits, dtype=np.int64)
    idx, cuts = packed // stride, packed % stride
    lengths = np.array([len(p) for p in pieces], dtype=np.int64)[idx]
    neg_score = -np.asarray(values, dtype=np.float64)[idx]
    order = np.lexsort((idx, cuts - lengths, -cuts, neg_score))
    return [(pieces[i][:c], pieces[i][c:]) for i, c in zip(idx[order].tolist(), cuts[order].tolist())]


def _normalizer(prefix: bool) -> dict[str, Any]:
    """Spaces become ``▁``; with ``add_space_prefix``, one ``▁`` goes in front of the text.

    As llama.cpp does it: in front of every stretch of text, including one that follows a
    special token (added tokens are cut out before the normalizer runs) and one that already
    starts with a space (``" x"`` is ``▁▁x``). transformers' Metaspace pre-tokenizer does
    neither (non-legacy ``prepend_scheme="first"``, and no ``▁`` before a leading space), so it
    is not used; this is the shape of the original Llama 2 ``tokenizer.json``.
    """
    replace = {"type": "Replace", "pattern": {"String": " "}, "content": SPACE}
    if not prefix:
        return replace
    return {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": SPACE}, replace]}


def build_spm(meta: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """(tokenizer.json, the special tokens by role) for a SentencePiece BPE vocabulary."""
    raw: list[str] = [str(t) for t in meta["tokenizer.ggml.tokens"]]
    n = len(raw)
    types = [int(t) for t in as_list(meta.get("tokenizer.ggml.token_type"), n, NORMAL)]
    arch = str(meta.get("general.architecture", ""))
    tokens = respell_spaces(raw)
    if meta.get("tokenizer.ggml.merges"):
        merges = [str(m).split(" ", 1) for m in meta["tokenizer.ggml.merges"]]
    else:
        scores = meta.get("tokenizer.ggml.scores")
        if arch in RANK_BY_INDEX or scores is None:
            rank = [-float(i) for i in range(n)]
        else:
            rank = [float(s) for s in as_list(scores, n, 0)]
        merges = derive_merges(tokens, rank)
    vocab = {tok: i for i, tok in enumerate(tokens)}
    added = [
        added_token(i, raw[i], special=types[i] == CONTROL, normalized=False)
        for i in range(n)
        if (types[i] == CONTROL or (types[i] == USER_DEFINED and raw[i] == tokens[i]))
        and vocab.get(raw[i]) == i
    ]
    prefix = bool(meta.get("tokenizer.ggml.add_space_prefix", True))
    decoders: list[dict[str, Any]] = [
        {"type": "Replace", "pattern": {"String": SPACE}, "content": " "},
        {"type": "ByteFallback"},
        {"type": "Fuse"},
    ]
    if prefix:
        decoders.append({"type": "Strip", "content": " ", "start": 1, "stop": 0})
    specials = special_tokens(meta, tokens)
    unk = specials.get("unk")
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": _normalizer(prefix),
        "pre_tokenizer": None,
        "post_processor": bos_eos_template(meta, tokens),
        "decoder": {"type": "Sequence", "decoders": decoders},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": unk,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": True,
            "byte_fallback": True,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": merges,
        },
    }
    return tokenizer, specials
