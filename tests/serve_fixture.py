"""Fixtures for ``mlxk serve`` tests: a model folder and a running server subprocess.

``serve_model_dir`` prefers the real demo model (``demo_model_dir`` from
tests/model_fixture.py) and falls back to a tiny random-weight llama with a small BPE
tokenizer and a ChatML template, built once per session.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = """The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins with a single step.
To be or not to be, that is the question. All that glitters is not gold. Local models run on MLX.
Hello world! How are you today? I am fine, thank you. Caches, batches, tokens and streams. 0123456789
Überraschung: naïve café, emoji 🙂 and more text for the byte level tokenizer to learn merges from.
"""


def build_tiny_model(dest: Path) -> Path:
    """A deterministic llama-family MLX model with random weights (a few MB)."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models import llama
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    dest.mkdir(parents=True, exist_ok=True)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([_CORPUS] * 20, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|im_end|>",
                                   unk_token="<|endoftext|>", pad_token="<|endoftext|>")
    fast.chat_template = CHATML
    fast.save_pretrained(str(dest))
    vocab = tok.get_vocab_size()
    config = {
        "model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128,
        "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5, "vocab_size": vocab,
        "max_position_embeddings": 2048, "rope_theta": 10000.0, "tie_word_embeddings": True,
        "eos_token_id": tok.token_to_id("<|im_end|>"), "bos_token_id": tok.token_to_id("<|endoftext|>"),
        "torch_dtype": "float32",
    }
    args = llama.ModelArgs.from_dict(config)
    mx.random.seed(1234)
    model = llama.Model(args)
    # Spread the logits so greedy choices are far from ties.
    params = dict(tree_flatten(model.parameters()))
    params["model.embed_tokens.weight"] = params["model.embed_tokens.weight"] * 1.5
    mx.save_safetensors(str(dest / "model.safetensors"), params)
    (dest / "config.json").write_text(json.dumps(config, indent=2))
    (dest / "README.md").write_text("---\nlibrary_name: mlx\ntags: [mlx]\n---\nTiny random llama for mlxk serve tests.\n")
    return dest


@pytest.fixture(scope="session")
def serve_model_dir(request, tmp_path_factory) -> Path:
    try:
        return Path(request.getfixturevalue("demo_model_dir"))
    except pytest.FixtureLookupError:
        return build_tiny_model(tmp_path_factory.mktemp("tiny-model") / "tiny-llama")


@pytest.fixture(scope="session")
def serve_is_demo(serve_model_dir) -> bool:
    """True with the real demo model: tests then ask for fewer tokens (CPU time)."""
    return (serve_model_dir / "README.md").is_file() is False or "Tiny random llama" not in (
        serve_model_dir / "README.md").read_text(errors="replace")


def link_model(src: Path, dest: Path) -> Path:
    """A second model folder with the same files (symlinks: no copy of the weights)."""
    dest.mkdir(parents=True)
    for f in src.iterdir():
        (dest / f.name).symlink_to(f.resolve())
    return dest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProc:
    """``mlxk serve`` in a subprocess; log goes to a file so it never blocks on a pipe."""

    def __init__(self, model: Path | str, tmp: Path, *extra: str, env: dict | None = None):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / f"serve-{self.port}.log"
        hf_home = tmp / "hf_home"
        hf_home.mkdir(exist_ok=True)
        inherited = {k: v for k, v in os.environ.items() if k != "MLXK_API_KEY"}  # a key only when a test sets one
        full_env = {**inherited, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", **(env or {})}
        if "--prefix-cache-dir" not in extra and "--no-prefix-cache" not in extra:
            extra = (*extra, "--prefix-cache-dir", str(tmp / "prefix-cache"))
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlxk", "serve", "--model", str(model), "--port", str(self.port), *extra],
            stdout=self._log, stderr=subprocess.STDOUT, env=full_env,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def worker_pid(self) -> int:
        """The server process the supervisor (``self.proc``) started."""
        children = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout.split()
        assert len(children) == 1, f"expected one server process, found {children}:\n{self.log()}"
        return int(children[0])

    def wait_ready(self, timeout: float = 90) -> "ServerProc":
        import httpx2 as httpx

        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}:\n{self.log()}")
            try:
                r = httpx.get(self.base + "/health", timeout=2)
                if r.status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"server not ready in {timeout}s:\n{self.log()}")

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(2)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@pytest.fixture(scope="module")
def served(serve_model_dir, tmp_path_factory):
    """A server for the whole module: yields the ServerProc."""
    tmp = tmp_path_factory.mktemp("serve")
    srv = ServerProc(serve_model_dir, tmp, env={"MLXK_API_KEY": "sk-test"}).wait_ready()
    yield srv
    srv.stop()
