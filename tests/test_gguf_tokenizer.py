"""SentencePiece GGUF tokenizers (``tokenizer.ggml.model = "llama"``) rebuilt as tokenizer.json.

The oracle is transformers' own GGUF tokenizer builder (private API, used only here): fed
the same metadata, read with gguf-py the way our import reads it (its ``get_gguf_tokenizer``
reads the file with torch, which the suite does not install). Token ids must be equal on a
fixed corpus, through every way mlxk loads a tokenizer: ``tokenizers`` itself, transformers'
AutoTokenizer and mlx_lm's loader (whose streaming detokenizer must give the text back).

Two vocabularies: the real Gemma 3 270M file (262,144 pieces, no merges, no space prefix,
merge order by piece index) and a small Llama-2-style file written here with GGUFWriter
(space prefix, ``<s>``/``</s>``/``<unk>``, byte pieces; once with merges, once without).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from mlxk.convert.gguf import GGUFFile
from mlxk.convert.gguf_tokenizer import build_tokenizer_json, dumps, tokenizer_config
from tests.real_models import GEMMA, assembled_gguf

CORPUS = [
    "Hello world",
    " leading space",
    "Two  spaces,   three,\tone tab,\t\ttwo tabs.",
    "line one\nline two\n\n\nafter three newlines\r\nwindows",
    "trailing spaces   ",
    "Café, naïve façade, Ångström, São Paulo, Straße, œuvre",
    "Привет, как дела? Съешь же ещё этих мягких французских булок.",
    "Καλημέρα κόσμε, ελληνικά γράμματα",
    "你好，世界。日本語のテキストとカタカナ。한국어 문장입니다.",
    "مرحبا بالعالم، هذه جملة عربية",
    "नमस्ते दुनिया, यह हिंदी है",
    "emoji 😀🎉👍🏽 and flags 🇫🇷 family 👨‍👩‍👧",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
    "digits 0123456789, 3.14159, 1,000,000 and 2026-12-02",
    "x = {'a': [1, 2, 3]}  # comment; y=x**2 != z",
    "<start_of_turn>user\nWhat is the capital of France?<end_of_turn>\n<start_of_turn>model\n",
    "<bos>text after bos, and <eos> inside",
    "<s>[INST] llama style [/INST] answer</s><s>",
    "a<b>bold</b> and <table><tr><td>cell</td></tr></table>",
    "control \x00\x07 bytes and \u2581 the meta space itself",
    "",
    " ",
    "\n",
]


# ---------------------------------------------------------------- the oracle

def oracle(meta: dict) -> tuple[Tokenizer, dict]:
    """transformers' tokenizer for this metadata, built as its load_gguf_checkpoint would.

    One deliberate change, for a space-prefix vocabulary: transformers prepends ``▁`` with a
    Metaspace pre-tokenizer (non-legacy: first stretch of text only, and not before a leading
    space). llama.cpp, which defines GGUF behaviour, prepends to every stretch of text, also
    after a special token and before a leading space; the oracle gets that rule (the original
    Llama 2 tokenizer.json's normalizer), and the rule itself is tested on its own below.
    """
    from transformers.integrations.gguf.gguf_tokenizer_mapping import (
        GGUF_TOKENIZER_MAPPING,
        convert_gguf_tokenizer,
    )

    tok = {name: meta[f"tokenizer.{key}"] for key, name in GGUF_TOKENIZER_MAPPING["tokenizer"].items()
           if f"tokenizer.{key}" in meta}
    backend, _ = convert_gguf_tokenizer(meta["general.architecture"], tok)
    spec = json.loads(backend.to_str())
    if (spec.get("pre_tokenizer") or {}).get("type") == "Metaspace":
        spec["pre_tokenizer"] = None
        spec["normalizer"] = {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u2581"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]}
    return Tokenizer.from_str(json.dumps(spec)), spec


class Loaded:
    """Our tokenizer (tokenizer.json and tokenizer_config.json as the import writes them), loaded
    by ``tokenizers``, by mlx_lm (which loads it with transformers' AutoTokenizer), and the oracle."""

    def __init__(self, meta: dict, folder: Path):
        from mlx_lm.tokenizer_utils import load as load_tokenizer

        self.meta, self.folder = meta, folder
        folder.mkdir(parents=True, exist_ok=True)
        self.spec, specials = build_tokenizer_json(meta)
        (folder / "tokenizer.json").write_text(dumps(self.spec), encoding="utf-8")
        (folder / "tokenizer_config.json").write_text(dumps(tokenizer_config(meta, specials)), encoding="utf-8")
        self.raw = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.mlx = load_tokenizer(folder)
        self.auto = self.mlx._tokenizer  # transformers' AutoTokenizer.from_pretrained(folder)
        self.oracle, self.oracle_spec = oracle(meta)
        self.added = [a["content"] for a in self.spec["added_tokens"]]

    def ids(self, text: str) -> dict[str, list[int]]:
        return {
            "tokenizers": self.raw.encode(text, add_special_tokens=False).ids,
            "AutoTokenizer": self.auto.encode(text, add_special_tokens=False),
            "mlx_lm": self.mlx.encode(text, add_special_tokens=False),
        }


def check_corpus(t: Loaded) -> None:
    for text in CORPUS:
        want = t.oracle.encode(text, add_special_tokens=False).ids
        for how, got in t.ids(text).items():
            assert got == want, (how, text, t.raw.encode(text, add_special_tokens=False).tokens,
                                 t.oracle.encode(text, add_special_tokens=False).tokens)


def check_round_trip(t: Loaded) -> None:
    """decode(encode(x)) == x, and mlx_lm's streaming detokenizer agrees token by token.

    With a space prefix, text after a special token gains a space (llama.cpp's rule; plain
    SentencePiece does not round-trip there either), and mlx_lm's SPM detokenizer drops leading
    spaces until the first non-space text (its ``trim_space``): those texts are left out there.
    A ``▁`` in the text comes back as a space (as in SentencePiece itself).
    """
    trims = bool(t.meta.get("tokenizer.ggml.add_space_prefix", True))
    added = t.added if trims else []
    for text in CORPUS:
        if "\u2581" in text or any(a in text for a in added):
            continue
        ids = t.raw.encode(text, add_special_tokens=False).ids
        assert t.raw.decode(ids, skip_special_tokens=False) == text
        assert t.auto.decode(ids, skip_special_tokens=False) == text
        if trims and text[:1].isspace():
            continue
        detok = t.mlx.detokenizer
        detok.reset()
        for i in ids:
            detok.add_token(i)
        detok.finalize()
        assert detok.text == text, (text, detok.text)


# ---------------------------------------------------------------- Gemma 3 (real file)

@pytest.fixture(scope="module")
def gemma_meta() -> dict:
    return GGUFFile(assembled_gguf(GEMMA)).metadata()


@pytest.fixture(scope="module")
def gemma(gemma_meta, tmp_path_factory) -> Loaded:
    return Loaded(gemma_meta, tmp_path_factory.mktemp("gemma-tok"))


def test_gemma_file_is_what_the_oracle_test_assumes(gemma_meta):
    assert gemma_meta["tokenizer.ggml.model"] == "llama"
    assert gemma_meta["general.architecture"] == "gemma3"
    assert len(gemma_meta["tokenizer.ggml.tokens"]) == 262_144
    assert "tokenizer.ggml.merges" not in gemma_meta
    assert gemma_meta["tokenizer.ggml.add_space_prefix"] is False
    assert gemma_meta["tokenizer.ggml.add_bos_token"] is True


def test_gemma_ids_equal_the_oracle(gemma):
    check_corpus(gemma)


def test_gemma_vocab_merges_and_added_tokens_equal_the_oracle(gemma):
    ours, theirs = gemma.spec, gemma.oracle_spec
    assert ours["model"]["vocab"] == theirs["model"]["vocab"]
    assert [tuple(m) for m in ours["model"]["merges"]] == [tuple(m) for m in theirs["model"]["merges"]]
    key = lambda a: (a["id"], a["content"], a["special"])  # noqa: E731
    assert sorted(map(key, ours["added_tokens"])) == sorted(map(key, theirs["added_tokens"]))
    # the whitespace pieces Gemma stores as real spaces are found as ▁▁ (id 138 is two spaces)
    assert gemma.raw.encode("a  b", add_special_tokens=False).ids[1] == 138


def test_gemma_special_and_user_defined_tokens(gemma):
    ids = gemma.raw.encode("<start_of_turn>user\nhi<end_of_turn>", add_special_tokens=False)
    assert ids.ids[0] == 105 and ids.ids[-1] == 106 and "\n" in ids.tokens
    added = {a["content"]: a for a in gemma.spec["added_tokens"]}
    assert added["<start_of_turn>"]["special"] and added["<bos>"]["special"]
    assert not added["<table>"]["special"] and not added["\n\n"]["special"]  # USER_DEFINED: whole, not special
    assert gemma.auto.decode(ids.ids, skip_special_tokens=True) == "user\nhi"


def test_gemma_bos_flag_and_no_space_prefix(gemma):
    for ids in (gemma.raw.encode("Paris").ids, gemma.auto.encode("Paris"), gemma.mlx.encode("Paris")):
        assert ids[0] == 2 and len(ids) == 2  # <bos>, then "Paris" without a ▁ in front
    assert gemma.raw.encode("Paris").tokens[1] == "Paris"
    assert gemma.mlx.bos_token == "<bos>" and gemma.mlx.eos_token_id == 1
    cfg = json.loads((gemma.folder / "tokenizer_config.json").read_text())
    assert (cfg["add_bos_token"], cfg["add_eos_token"], cfg["unk_token"], cfg["pad_token"]) == (
        True, False, "<unk>", "<pad>")
    assert "chat_template" not in cfg


def test_gemma_round_trips(gemma):
    check_round_trip(gemma)


# ---------------------------------------------------------------- a Llama-2-style file

TRAIN_TEXT = [
    "The quick brown fox jumps over the lazy dog. The dog sleeps; the fox runs away.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))",
    "Language models read text as tokens. Tokens are pieces of words, and sometimes whole words.",
    "Привет мир. Καλημέρα. Café crème brûlée. 12345 67890",
    "[INST] What is the capital of France? [/INST] The capital of France is Paris.",
] * 4


def llama_gguf(path: Path, *, with_merges: bool) -> Path:
    """A small SentencePiece-BPE vocabulary laid out as llama.cpp writes Llama 2's."""
    from gguf import GGUFWriter
    from tokenizers import SentencePieceBPETokenizer

    trainer = SentencePieceBPETokenizer(add_prefix_space=True)
    trainer.train_from_iterator(TRAIN_TEXT, vocab_size=400, min_frequency=1, show_progress=False,
                                special_tokens=[], limit_alphabet=200)
    trained = json.loads(trainer.to_str())["model"]
    pieces = sorted(trained["vocab"], key=trained["vocab"].get)
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + ["<tool>"] + pieces
    types = [2, 3, 3] + [6] * 256 + [4] + [1] * len(pieces)
    scores = [0.0] * 260 + [-float(i) for i in range(len(pieces))]
    w = GGUFWriter(str(path), "llama")
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    if with_merges:
        w.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in trained["merges"]])
        w.add_add_bos_token(True)
    else:
        w.add_add_eos_token(True)  # and no add_bos_token key: llama.cpp's default for SPM is BOS on
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_space_prefix(True)
    w.add_context_length(4096)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture(scope="module", params=["merges", "scores"])
def llama(request, tmp_path_factory) -> Loaded:
    folder = tmp_path_factory.mktemp(f"llama-{request.param}")
    meta = GGUFFile(llama_gguf(folder / "tiny.gguf", with_merges=request.param == "merges")).metadata()
    assert ("tokenizer.ggml.merges" in meta) == (request.param == "merges")
    return Loaded(meta, folder / "out")


def test_llama_ids_equal_the_oracle(llama):
    check_corpus(llama)


def test_llama_round_trips(llama):
    check_round_trip(llama)


def test_llama_space_prefix_as_llama_cpp(llama):
    """llama.cpp puts ``▁`` in front of each stretch of text: first, after a special token, before a space."""
    for text, pieces in ((" leading space", "\u2581\u2581leading\u2581space"), ("a  b", "\u2581a\u2581\u2581b")):
        assert "".join(llama.raw.encode(text, add_special_tokens=False).tokens) == pieces
    enc = llama.raw.encode("The fox</s>The dog", add_special_tokens=False)
    assert enc.tokens[0].startswith("\u2581") and enc.tokens[0] != "\u2581"
    after = enc.tokens[enc.tokens.index("</s>") + 1]
    assert after.startswith("\u2581")
    assert llama.raw.decode(enc.ids, skip_special_tokens=True) == "The fox The dog"


def test_llama_bos_eos_flags(llama):
    with_merges = "tokenizer.ggml.merges" in llama.meta
    want_eos = not with_merges
    for ids in (llama.raw.encode("The dog").ids, llama.auto.encode("The dog"), llama.mlx.encode("The dog")):
        assert ids[0] == 1
        assert (ids[-1] == 2) == want_eos
    cfg = json.loads((llama.folder / "tokenizer_config.json").read_text())
    assert (cfg["add_bos_token"], cfg["add_eos_token"]) == (True, want_eos)
    assert (cfg["bos_token"], cfg["eos_token"], cfg["unk_token"]) == ("<s>", "</s>", "<unk>")


def test_llama_byte_fallback_and_user_defined(llama):
    enc = llama.raw.encode("水<tool>", add_special_tokens=False)  # 水 is not in the small vocabulary
    assert enc.tokens[:4] == ["\u2581", "<0xE6>", "<0xB0>", "<0xB4>"] and enc.tokens[-1] == "<tool>"
    assert llama.raw.decode(enc.ids) == "水<tool>"


def test_unknown_tokenizer_model_is_refused():
    with pytest.raises(ValueError, match="'bert' is not supported"):
        build_tokenizer_json({"tokenizer.ggml.model": "bert", "tokenizer.ggml.tokens": ["a"]})


def test_imported_gemma_folder_tokenizes_as_the_oracle(gemma, gemma_model_dir):
    """What ``mlxk convert`` wrote for the real file (tests/real_models.py) is this tokenizer."""
    from mlx_lm.tokenizer_utils import load as load_tokenizer

    imported = load_tokenizer(gemma_model_dir)
    for text in CORPUS:
        assert imported.encode(text, add_special_tokens=False) == gemma.oracle.encode(
            text, add_special_tokens=False).ids, text
    assert imported.encode("Paris")[0] == 2
    cfg = json.loads((gemma_model_dir / "tokenizer_config.json").read_text())
    assert cfg == json.loads((gemma.folder / "tokenizer_config.json").read_text())


def test_mx_load_metadata_gives_the_same_tokenizer(tmp_path):
    """mx.load hands numeric metadata back as mx arrays; the rebuilt tokenizer must not change."""
    import mlx.core as mx

    path = llama_gguf(tmp_path / "tiny.gguf", with_merges=False)
    from_py = GGUFFile(path).metadata()
    _, from_mx = mx.load(str(path), return_metadata=True)
    assert type(from_mx["tokenizer.ggml.scores"]).__name__ == "array"
    (a, a_specials), (b, b_specials) = build_tokenizer_json(from_py), build_tokenizer_json(from_mx)
    assert json.dumps(a) == json.dumps(b) and a_specials == b_specials
    assert tokenizer_config(from_py, a_specials) == tokenizer_config(from_mx, b_specials)
