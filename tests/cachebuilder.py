"""Builds Hugging Face caches with the real layout, from real small files.

blobs/<sha256>, snapshots/<commit>/<file> as relative symlinks into blobs, refs/main,
optional trees/<commit>.json and .locks, exactly as huggingface_hub writes them.
Weights are real safetensors files written with the safetensors library.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Mapping

import numpy as np

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def safetensors_bytes(tensors: Mapping[str, np.ndarray] | None = None) -> bytes:
    from safetensors.numpy import save

    tensors = tensors or {"model.embed_tokens.weight": np.zeros((8, 4), dtype=np.float32)}
    return save(dict(tensors))


def tokenizer_json() -> bytes:
    vocab = {"<unk>": 0, "<|im_start|>": 1, "<|im_end|>": 2, "a": 3, "b": 4}
    return json.dumps(
        {"version": "1.0", "model": {"type": "BPE", "vocab": vocab, "merges": []}, "added_tokens": []}
    ).encode()


def llama_config(**extra) -> dict:
    cfg = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 128,
        "vocab_size": 5,
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-5,
    }
    cfg.update(extra)
    return cfg


def mlx_chat_files(quantized: bool = True, **config) -> dict[str, bytes]:
    cfg = llama_config(**config)
    if quantized:
        cfg["quantization"] = {"group_size": 64, "bits": 4}
    return {
        "config.json": json.dumps(cfg).encode(),
        "model.safetensors": safetensors_bytes(),
        "tokenizer.json": tokenizer_json(),
        "tokenizer_config.json": json.dumps({"chat_template": CHAT_TEMPLATE, "eos_token": "<|im_end|>"}).encode(),
        "special_tokens_map.json": b'{"eos_token": "<|im_end|>"}',
        "README.md": b"---\nlibrary_name: mlx\ntags:\n- mlx\n---\n# test model\n",
    }


def mlx_base_files() -> dict[str, bytes]:
    files = mlx_chat_files()
    files["tokenizer_config.json"] = b'{"eos_token": "</s>"}'
    return files


def gguf_bytes(arch: str = "llama", chat_template: str | None = CHAT_TEMPLATE) -> bytes:
    """A small, valid GGUF v3 header (metadata only, no tensors)."""
    import struct

    def s(text: str) -> bytes:
        raw = text.encode()
        return struct.pack("<Q", len(raw)) + raw

    kvs = [(s("general.architecture"), 8, s(arch)), (s(f"{arch}.context_length"), 4, struct.pack("<I", 2048))]
    tokens = [b"<unk>", b"a", b"b"]
    arr = struct.pack("<IQ", 8, len(tokens)) + b"".join(struct.pack("<Q", len(t)) + t for t in tokens)
    kvs.append((s("tokenizer.ggml.tokens"), 9, arr))
    if chat_template:
        kvs.append((s("tokenizer.chat_template"), 8, s(chat_template)))
    body = b"".join(k + struct.pack("<I", t) + v for k, t, v in kvs)
    return b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs)) + body


class CacheBuilder:
    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)

    def repo_path(self, repo_id: str) -> Path:
        return self.cache_dir / ("models--" + repo_id.replace("/", "--"))

    def add(
        self,
        repo_id: str,
        files: Mapping[str, bytes],
        commit: str | None = None,
        ref: str | None = "main",
        tree: bool = True,
        mtime: float | None = None,
    ) -> str:
        """Add one snapshot; returns its commit hash."""
        repo = self.repo_path(repo_id)
        commit = commit or hashlib.sha1(repr((repo_id, sorted(files.items()))).encode()).hexdigest()
        snap = repo / "snapshots" / commit
        (repo / "blobs").mkdir(parents=True, exist_ok=True)
        snap.mkdir(parents=True, exist_ok=True)
        listing = {}
        for name, content in files.items():
            blob_id = hashlib.sha256(content).hexdigest()
            blob = repo / "blobs" / blob_id
            blob.write_bytes(content)
            if mtime is not None:
                os.utime(blob, (mtime, mtime))
            target = snap / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_symlink() or target.exists():
                target.unlink()
            target.symlink_to(os.path.relpath(blob, target.parent))
            listing[name] = {"size": len(content), "blob_id": blob_id}
        if ref:
            (repo / "refs").mkdir(exist_ok=True)
            (repo / "refs" / ref).write_text(commit)
        if tree:
            (repo / "trees").mkdir(exist_ok=True)
            (repo / "trees" / f"{commit}.json").write_text(json.dumps({"format_version": 1, "files": listing}))
        return commit

    def snapshot(self, repo_id: str, commit: str) -> Path:
        return self.repo_path(repo_id) / "snapshots" / commit

    def add_lock(self, repo_id: str, name: str = "abc123.lock") -> Path:
        lock = self.cache_dir / ".locks" / ("models--" + repo_id.replace("/", "--")) / name
        lock.parent.mkdir(parents=True, exist_ok=True)
        lock.write_text("")
        return lock

    def add_incomplete(self, repo_id: str, size: int = 100) -> Path:
        blob = self.repo_path(repo_id) / "blobs" / (hashlib.sha256(repo_id.encode()).hexdigest() + ".incomplete")
        blob.write_bytes(b"\0" * size)
        return blob
