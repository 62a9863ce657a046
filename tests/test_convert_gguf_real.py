"""The real K-quant GGUF files (Qwen2.5-Coder-0.5B-Instruct and Gemma 3 270M, Q4_K_M) imported by ``mlxk convert``.

The import itself runs once per importer version (tests/real_models.py); these check
what a user sees afterwards: healthy, right config, and answers that only a correctly
imported model gives (a garbled import, e.g. qwen2 rows un-permuted, fails them all).
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_json

ADD_PROMPT = "Write a Python function add(a, b) that returns the sum."


def test_qwen_imports_healthy_with_its_kquants_dequantized(qwen_model_in_cache, qwen_model_dir):
    payload, rc = run_json("health", qwen_model_in_cache)
    assert rc == 0, payload
    assert payload["data"]["summary"]["healthy_count"] == 1, payload
    assert payload["data"]["healthy"][0]["name"] == qwen_model_in_cache
    cfg = json.loads((qwen_model_dir / "config.json").read_text())
    assert (cfg["model_type"], cfg["num_hidden_layers"], cfg["tie_word_embeddings"]) == ("qwen2", 24, False)
    readme = (qwen_model_dir / "README.md").read_text()
    assert "gguf-import" in readme
    index = json.loads((qwen_model_dir / "model.safetensors.index.json").read_text())
    assert "model.layers.0.self_attn.q_proj.bias" in index["weight_map"]


def test_qwen_greedy_answer_writes_the_function(qwen_model_in_cache):
    payload, rc = run_json("run", qwen_model_in_cache, ADD_PROMPT, "--temperature", "0", "--max-tokens", "56",
                           timeout=600)
    assert rc == 0, payload
    assert "def add" in payload["data"]["response"], payload["data"]["response"]


def test_qwen_template_has_native_tool_calls(qwen_model_dir):
    tok_cfg = json.loads((qwen_model_dir / "tokenizer_config.json").read_text())
    assert "<tool_call>" in tok_cfg["chat_template"]
    tok = json.loads((qwen_model_dir / "tokenizer.json").read_text())
    assert {"id": 151657, "content": "<tool_call>"}.items() <= next(
        t for t in tok["added_tokens"] if t["content"] == "<tool_call>").items()


@pytest.fixture(scope="module")
def gemma(gemma_model_dir):
    from mlx_lm import load

    return load(str(gemma_model_dir))


def test_gemma_imports_as_gemma3_text(gemma_model_dir):
    cfg = json.loads((gemma_model_dir / "config.json").read_text())
    assert cfg["model_type"] == "gemma3_text"
    assert (cfg["head_dim"], cfg["query_pre_attn_scalar"], cfg["sliding_window"], cfg["sliding_window_pattern"],
            cfg["rope_local_base_freq"]) == (256, 256, 512, 6, 10000.0)
    assert cfg["tie_word_embeddings"] is True


def test_gemma_knows_the_capital_of_france(gemma):
    import mlx.core as mx

    model, tok = gemma
    ids = tok.encode("The capital of France is")
    assert ids[0] == tok.bos_token_id
    logits = model(mx.array([ids]))[0, -1]
    top5 = [tok.decode([int(i)]) for i in mx.argsort(-logits)[:5].tolist()]
    assert " Paris" in top5, top5


def test_gemma_continues_fibonacci_with_an_if(gemma):
    from mlx_lm import generate
    from mlx_lm.sample_utils import make_sampler

    model, tok = gemma
    text = generate(model, tok, "def fibonacci(n):\n", max_tokens=12, sampler=make_sampler(0.0))
    assert text.lstrip().startswith("if"), repr(text)



def test_gemma_is_listed_as_base_and_chat_is_refused(gemma_model_in_cache, gemma_model_dir, tmp_path):
    """No chat template in the GGUF: listed as ``base``; a chat request is a 400 pointing to completions."""
    import openai

    from tests.serve_fixture import ServerProc

    payload, rc = run_json("show", gemma_model_in_cache)
    assert rc == 0 and payload["data"]["model"]["model_type"] == "base", payload
    listed, rc = run_json("list", "--verbose")
    assert rc == 0
    assert {m["name"]: m["model_type"] for m in listed["data"]["models"]}[gemma_model_in_cache] == "base", listed
    srv = ServerProc(gemma_model_dir, tmp_path, env={"MLXK_API_KEY": "sk-g"}).wait_ready(timeout=300)
    try:
        client = openai.OpenAI(base_url=srv.base + "/v1", api_key="sk-g", max_retries=0, timeout=300)
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(model=gemma_model_dir.name, max_tokens=4,
                                           messages=[{"role": "user", "content": "Hi"}])
        assert "/v1/completions" in e.value.body["message"], e.value.body
        r = client.completions.create(model=gemma_model_dir.name, prompt="def fibonacci(n):\n", max_tokens=6,
                                      temperature=0)
        assert r.choices[0].text.lstrip().startswith("if"), r
    finally:
        srv.stop()
