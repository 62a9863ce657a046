"""`mlxk run` on the real imported SmolLM2, as a user runs it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.cachebuilder import mlx_chat_files
from tests.conftest import run_cli, run_json

QUESTION = "What is the capital of France?"


def test_greedy_answer_names_paris(demo_model_in_cache):
    payload, rc = run_json("run", "SmolLM2", QUESTION, "--max-tokens", "24")
    assert rc == 0
    d = payload["data"]
    assert "Paris" in d["response"]
    assert d["model"] == "mlxk-demo/SmolLM2-135M-Instruct"
    assert d["tokens_generated"] > 0 and d["prompt_tokens"] > 5
    assert d["finish_reason"] in ("stop", "length")
    assert "<|im_end|>" not in d["response"] and "<|im_start|>" not in d["response"]


def test_stream_and_no_stream_are_identical(demo_model_in_cache):
    args = ("run", "SmolLM2", "Name three fruits.", "--max-tokens", "30")
    streamed = run_cli(*args)
    buffered = run_cli(*args, "--no-stream")
    assert streamed.returncode == buffered.returncode == 0
    assert streamed.stdout == buffered.stdout and streamed.stdout.strip()


def test_end_of_turn_stops_generation(demo_model_in_cache):
    payload, _ = run_json("run", "SmolLM2", "Say just the word hello.", "--max-tokens", "200")
    assert payload["data"]["finish_reason"] == "stop"
    assert payload["data"]["tokens_generated"] < 200


def test_stop_strings_cut_the_answer(demo_model_in_cache):
    full, _ = run_json("run", "SmolLM2", QUESTION, "--max-tokens", "24")
    text = full["data"]["response"]
    assert "Paris" in text
    cut, _ = run_json("run", "SmolLM2", QUESTION, "--max-tokens", "24", "--stop", "Paris")
    assert cut["data"]["response"] == text[: text.index("Paris")]
    assert cut["data"]["finish_reason"] == "stop"


def test_prompt_from_stdin_and_system_prompt(demo_model_in_cache):
    proc = run_cli("run", "SmolLM2", "-", "--max-tokens", "20", input=QUESTION)
    assert proc.returncode == 0 and "Paris" in proc.stdout
    payload, _ = run_json("run", "SmolLM2", "Who are you?", "--system", "You are a pirate named Bob.",
                          "--max-tokens", "30")
    assert payload["data"]["prompt_tokens"] > 15


def test_verbose_reports_speed_memory_and_blas(demo_model_in_cache):
    proc = run_cli("run", "SmolLM2", QUESTION, "--max-tokens", "8", "--verbose")
    assert proc.returncode == 0
    assert "tok/s" in proc.stderr and "peak memory" in proc.stderr and "BLAS:" in proc.stderr


def test_tokenizer_round_trips_text(demo_model_dir):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(demo_model_dir / "tokenizer.json"))
    corpus = [
        "Hello, world! 1234567890 3.14159",
        "ünïcödé — ½ ∑ 日本語のテキスト 🚀🙂",
        "def f(x):\n\treturn x ** 2  # comment\n",
        "   leading and trailing spaces   ",
        "line one\r\nline two\n\n\nthree",
        "<|im_start|>user\nhi<|im_end|>",
    ]
    for text in corpus:
        ids = tok.encode(text, add_special_tokens=False).ids
        assert tok.decode(ids, skip_special_tokens=False) == text
    # digits are split one by one, as SmolLM2's own tokenizer does
    assert len(tok.encode("12345", add_special_tokens=False).ids) == 5


def test_chat_turn_two_prefills_only_new_tokens(demo_model_dir):
    """The KV cache survives between turns: turn 2 runs only what turn 1 did not already cover."""
    code = f"""
import json
from pathlib import Path
from mlxk.engine.loader import load
from mlxk.engine.generate import ChatSession, Stats
from mlxk.engine.requests import SamplingParams
loaded = load(Path({str(demo_model_dir)!r}))
session = ChatSession(loaded)
out = []
for q in ["What is the capital of France?", "And of Germany?"]:
    s = Stats()
    text = "".join(c.text for c in session.turn(q, SamplingParams(max_tokens=20, temperature=0.0), s))
    out.append({{"prompt": s.prompt_tokens, "prefilled": s.prefilled_tokens, "text": text}})
print(json.dumps(out))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    first, second = json.loads(proc.stdout)
    assert first["prefilled"] == first["prompt"]
    assert second["prompt"] > first["prompt"]
    assert second["prefilled"] < second["prompt"] - first["prompt"] + 10
    assert "Berlin" in second["text"]


def test_interactive_chat_with_commands(demo_model_in_cache):
    script = "What is the capital of France?\n/clear\n/system You answer in one word.\nHi\n/exit\n"
    proc = run_cli("run", "SmolLM2", "--max-tokens", "20", input=script)
    assert proc.returncode == 0
    assert "Paris" in proc.stdout
    assert "conversation cleared" in proc.stderr and "system prompt set" in proc.stderr


def test_ctrl_c_during_one_shot_exits_130(demo_model_in_cache):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlxk", "run", "SmolLM2", "Write a very long story about dragons.",
         "--max-tokens", "2000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    first = proc.stdout.read(1)  # the answer has started streaming
    assert first
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert "Interrupted" in err and "Traceback" not in err


def test_ctrl_c_in_chat_stops_the_answer_and_keeps_the_session(demo_model_in_cache):
    import pty

    pid, fd = pty.fork()
    if pid == 0:
        os.execv(sys.executable, [sys.executable, "-m", "mlxk", "run", "SmolLM2", "--max-tokens", "400"])
    buf = b""

    def read_until(marker: bytes, timeout: float = 120) -> None:
        nonlocal buf
        deadline = time.time() + timeout
        while marker not in buf:
            assert time.time() < deadline, buf[-500:]
            buf += os.read(fd, 4096)

    read_until(b">>> ")
    os.write(fd, b"Write a long story about a dragon.\n")
    read_until(b"dragon", 120)
    time.sleep(0.5)
    os.kill(pid, signal.SIGINT)
    read_until(b"[stopped]")
    read_until(b">>> ")
    os.write(fd, b"/exit\n")
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.parametrize(
    "setup,args,err_type,fragment",
    [
        ("none", ["nonexistent-model", "hi"], "model_not_found", "No model found"),
        ("unhealthy", ["org/broken", "hi"], "unhealthy", "config.json missing"),
        ("gguf", ["org/some-GGUF", "hi"], "not_runnable", "Framework GGUF"),
        ("none", ["org/x", "hi", "--max-tokens", "0"], "ValidationError", "--max-tokens"),
    ],
)
def test_run_refusals(cache, setup, args, err_type, fragment):
    from tests.cachebuilder import gguf_bytes

    if setup == "unhealthy":
        commit = cache.add("org/broken", mlx_chat_files())
        (cache.snapshot("org/broken", commit) / "config.json").unlink()
    elif setup == "gguf":
        cache.add("org/some-GGUF", {"m.gguf": gguf_bytes()})
    payload, rc = run_json("run", *args)
    assert rc == 1
    assert payload["error"]["type"] == err_type and fragment in payload["error"]["message"]


def test_run_refuses_a_model_larger_than_memory(cache, hub_cache):
    """A sparse 1 TiB weights file: the gate refuses before anything is loaded."""
    commit = cache.add("org/huge", mlx_chat_files(), tree=False)
    weights = cache.snapshot("org/huge", commit) / "model.safetensors"
    blob = weights.resolve()
    with open(blob, "r+b") as fh:
        fh.truncate(2**40)
    payload, rc = run_json("run", "org/huge", "hi")
    assert rc == 1 and payload["error"]["type"] == "not_runnable"
    assert "memory" in payload["error"]["message"]
