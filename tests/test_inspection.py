"""Framework, type, capabilities, integrity health and the runtime gate, on real cache layouts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mlxk.inspection.model_object import inspect
from mlxk.inspection.runtime import mlx_lm_install
from mlxk.store.names import resolve
from tests.cachebuilder import (
    gguf_bytes,
    llama_config,
    mlx_base_files,
    mlx_chat_files,
    safetensors_bytes,
    tokenizer_json,
)


def obj(name: str) -> dict:
    return inspect(resolve(name)).model_object()


def test_healthy_mlx_chat(cache):
    cache.add("mlx-community/chat-4bit", mlx_chat_files())
    m = obj("mlx-community/chat-4bit")
    assert m["framework"] == "MLX"
    assert (m["model_type"], m["capabilities"]) == ("chat", ["text-generation", "chat"])
    assert (m["health"], m["runtime_compatible"], m["reason"], m["cached"]) == ("healthy", True, None, True)
    assert len(m["hash"]) == 40 and m["last_modified"].endswith("Z")
    assert m["size_bytes"] == sum(len(v) for v in mlx_chat_files().values())


def test_base_model(cache):
    cache.add("mlx-community/base", mlx_base_files())
    m = obj("mlx-community/base")
    assert (m["model_type"], m["capabilities"], m["runtime_compatible"]) == ("base", ["text-generation"], True)


def test_chat_template_from_jinja_file(cache):
    files = mlx_base_files()
    files["chat_template.jinja"] = b"{{ messages }}"
    cache.add("org/jinja", files)
    assert obj("org/jinja")["model_type"] == "chat"


def test_mlx_detected_from_readme_without_quantization(cache):
    cache.add("someone/fp16-mlx", mlx_chat_files(quantized=False))
    assert obj("someone/fp16-mlx")["framework"] == "MLX"


def test_embedding_model(cache):
    cfg = {"architectures": ["BertModel"], "model_type": "bert", "hidden_size": 8}
    cache.add(
        "mlx-community/embed",
        {"config.json": json.dumps(cfg).encode(), "model.safetensors": safetensors_bytes(),
         "tokenizer.json": tokenizer_json(), "modules.json": b"[]"},
    )
    m = obj("mlx-community/embed")
    assert (m["model_type"], m["capabilities"]) == ("embedding", ["embeddings"])
    assert m["health"] == "healthy"
    assert m["runtime_compatible"] is False and "bert" in m["reason"]


def test_vision_model(cache):
    files = mlx_chat_files(model_type="qwen2_vl", vision_config={"depth": 2})
    files["preprocessor_config.json"] = b"{}"
    cache.add("mlx-community/vl", files)
    m = obj("mlx-community/vl")
    assert m["capabilities"] == ["text-generation", "chat", "vision"]
    assert m["runtime_compatible"] is True


def test_gguf_model(cache):
    cache.add("TheBloke/tiny-GGUF", {"tiny.Q4_K_M.gguf": gguf_bytes(), "README.md": b"# gguf\n"})
    m = obj("tiny-GGUF")
    assert (m["framework"], m["health"], m["runtime_compatible"]) == ("GGUF", "healthy", False)
    assert m["model_type"] == "chat"
    assert m["reason"].startswith("Framework GGUF not executable with mlx-lm (requires MLX)")
    assert "mlxk convert" in m["reason"]


def test_pytorch_model(cache):
    cfg = llama_config()
    cache.add(
        "meta/llama-torch",
        {"config.json": json.dumps(cfg).encode(), "model.safetensors": safetensors_bytes(),
         "tokenizer.json": tokenizer_json()},
    )
    m = obj("meta/llama-torch")
    assert (m["framework"], m["runtime_compatible"]) == ("PyTorch", False)
    assert m["reason"].startswith("Framework PyTorch not executable")


def test_unsupported_architecture_names_it_and_the_version(cache):
    cache.add("mlx-community/future", mlx_chat_files(model_type="qwen99_next"))
    m = obj("mlx-community/future")
    assert m["health"] == "healthy" and m["runtime_compatible"] is False
    assert "qwen99_next" in m["reason"] and mlx_lm_install()[1] in m["reason"]


def test_model_remapping_respected(cache):
    cache.add("mlx-community/mistral", mlx_chat_files(model_type="mistral"))
    assert obj("mlx-community/mistral")["runtime_compatible"] is True


def _corrupt(cache, name, files=None, after=None):
    commit = cache.add(name, files or mlx_chat_files())
    if after:
        after(cache.snapshot(name, commit), cache.repo_path(name))
    return obj(name)


def _unlink(rel):
    return lambda snap, repo: (snap / rel).unlink()


def _rm_blob(rel):
    return lambda snap, repo: (snap / rel).resolve().unlink()


SHARDED_INDEX = json.dumps(
    {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
).encode()


def _sharded(**overrides):
    files = mlx_chat_files()
    del files["model.safetensors"]
    files["model-00001-of-00002.safetensors"] = safetensors_bytes()
    files["model-00002-of-00002.safetensors"] = safetensors_bytes({"x": np.ones((2,), dtype=np.float32)})
    files["model.safetensors.index.json"] = SHARDED_INDEX
    files.update(overrides)
    return {k: v for k, v in files.items() if v is not None}


@pytest.mark.parametrize(
    "files,after,reason",
    [
        (None, _unlink("config.json"), "config.json missing"),
        ({**mlx_chat_files(), "config.json": b"[1, 2]"}, None, "config.json is not a JSON object"),
        ({**mlx_chat_files(), "config.json": b"{nope"}, None, "config.json is not valid JSON"),
        ({k: v for k, v in mlx_chat_files().items() if k != "model.safetensors"}, None, "No model weights found"),
        (None, _unlink("model.safetensors"), "Interrupted download: missing model.safetensors"),
        (_sharded(**{"model-00002-of-00002.safetensors": None}), None, "Missing shards listed in model.safetensors.index.json: model-00002-of-00002.safetensors"),
        (_sharded(**{"model-00002-of-00002.safetensors": b""}), None, "Empty shard files: model-00002-of-00002.safetensors"),
        (_sharded(**{"model.safetensors.index.json": None}), None, "Sharded weights without index"),
        ({**mlx_chat_files(), "model.safetensors": b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n"}, None, "LFS pointers instead of files: model.safetensors"),
        (None, _rm_blob("tokenizer.json"), "Interrupted download: blob missing for tokenizer.json"),
        (None, lambda snap, repo: (repo / "blobs" / "deadbeef.incomplete").write_bytes(b"12"), "Interrupted download: 1 incomplete file(s)"),
        (None, lambda snap, repo: (snap / "special_tokens_map.json").unlink(), "Interrupted download: missing special_tokens_map.json"),
        ({k: v for k, v in mlx_chat_files().items() if k != "tokenizer.json"}, None, "Tokenizer files missing"),
        ({**mlx_chat_files(), "model.safetensors.partial": b"\0" * 64}, None,
         "Interrupted download: unfinished file(s) model.safetensors.partial"),
        ({**mlx_chat_files(), "tokenizer.json.tmp": b"{"}, None, "Interrupted download: unfinished file(s) tokenizer.json.tmp"),
        # the leftover explains the missing shard: it is the reason, not the shard
        (_sharded(**{"model-00002-of-00002.safetensors": None, "model-00002-of-00002.safetensors.partial": b"\0"}), None,
         "Interrupted download: unfinished file(s) model-00002-of-00002.safetensors.partial"),
        ({k: v for k, v in mlx_chat_files().items() if k != "config.json"} | {"config.json.tmp": b"{"}, None,
         "Interrupted download: unfinished file(s) config.json.tmp"),
    ],
    ids=["no-config", "config-not-object", "config-not-json", "no-weights", "weights-not-downloaded", "missing-shard", "empty-shard",
         "shards-without-index", "lfs-pointer", "broken-symlink", "incomplete-blob", "tree-listing", "tokenizer",
         "partial-file", "tmp-file", "partial-shard", "tmp-config"],
)
def test_integrity_problems(cache, files, after, reason):
    m = _corrupt(cache, "org/corrupt", files, after)
    assert m["health"] == "unhealthy"
    assert m["runtime_compatible"] is False  # gate: runtime check skipped
    assert m["reason"].startswith(reason), m["reason"]


def test_sharded_model_healthy(cache):
    cache.add("mlx-community/sharded", _sharded())
    assert obj("mlx-community/sharded")["health"] == "healthy"


def test_first_problem_wins(cache):
    files = {k: v for k, v in mlx_chat_files().items() if k not in ("config.json", "model.safetensors")}
    assert _corrupt(cache, "org/two-problems", files)["reason"] == "config.json missing"


def test_workspace_model_object(tmp_path, monkeypatch):
    ws = tmp_path / "ws"
    ws.mkdir()
    for name, content in mlx_chat_files().items():
        (ws / name).write_bytes(content)
    monkeypatch.chdir(tmp_path)
    m = obj("./ws")
    assert (m["name"], m["hash"], m["cached"], m["health"], m["framework"]) == (str(ws), None, False, "healthy", "MLX")


def test_gguf_without_readable_header_is_unhealthy(cache):
    cache.add("org/bad-GGUF", {"bad.gguf": b"NOTGGUF" + b"\0" * 64})
    m = obj("org/bad-GGUF")
    assert m["health"] == "unhealthy" and "no readable GGUF header" in m["reason"]


def test_repo_without_snapshot(cache, hub_cache):
    (hub_cache / "models--org--never" / "blobs").mkdir(parents=True)
    (hub_cache / "models--org--never" / "blobs" / "abc.incomplete").write_bytes(b"1")
    m = obj("org/never")
    assert (m["health"], m["hash"]) == ("unhealthy", None)
    assert m["reason"].startswith("No snapshot in cache")


# --- what users have in their caches (issue 12) ------------------------------------------

def test_legacy_weights_only_are_not_runnable(cache):
    files = mlx_chat_files()
    files["weights.00.safetensors"] = files.pop("model.safetensors")
    cache.add("mlx-community/old-style", files)
    m = obj("mlx-community/old-style")
    assert (m["framework"], m["health"], m["runtime_compatible"]) == ("MLX", "healthy", False)
    assert m["reason"].startswith("Legacy weight files only (weights.00.safetensors): mlx-lm "), m["reason"]
    assert "loads model*.safetensors" in m["reason"]


@pytest.mark.parametrize("name", ["tokenizer_config.json", "tokenizer.json", "special_tokens_map.json",
                                  "preprocessor_config.json"])
def test_invalid_json_makes_the_model_unhealthy(cache, name):
    files = mlx_chat_files()
    files[name] = b'{"truncated": [1, 2'
    m = _corrupt(cache, "org/bad-json", files)
    assert (m["health"], m["runtime_compatible"], m["reason"]) == ("unhealthy", False, f"{name} is not valid JSON")


def test_large_json_is_checked_for_truncation(cache):
    """Above the parse limit, a JSON file that does not end its document is still caught."""
    from mlxk.inspection.files import JSON_PARSE_LIMIT

    whole = json.dumps({"model": {"vocab": {f"t{i}": i for i in range(JSON_PARSE_LIMIT // 8)}}}).encode()
    assert len(whole) > JSON_PARSE_LIMIT
    files = mlx_chat_files()
    files["tokenizer.json"] = whole
    cache.add("org/big-tok", files)
    assert obj("org/big-tok")["health"] == "healthy"
    files["tokenizer.json"] = whole[: len(whole) // 2]
    cache.add("org/cut-tok", files)
    assert obj("org/cut-tok")["reason"] == "tokenizer.json is not valid JSON (truncated)"


def test_snapshot_not_named_by_a_commit_has_no_hash(cache, hub_cache):
    commit = cache.add("org/branch-named", mlx_chat_files())
    repo = cache.repo_path("org/branch-named")
    (repo / "snapshots" / commit).rename(repo / "snapshots" / "main")
    (repo / "refs" / "main").write_text("main")
    m = obj("org/branch-named")
    assert (m["hash"], m["health"]) == (None, "healthy")
    from tests.schema import upstream_validate

    upstream_validate({"status": "success", "command": "list", "data": {"models": [m], "count": 1}, "error": None})


@pytest.mark.parametrize("extra,reason", [
    ({}, "Vision model (llava) without preprocessor_config.json: images cannot be prepared for it"),
    ({"processor_config.json": b"{}"}, None),
    ({"preprocessor_config.json": b"{}"}, None),
])
def test_vision_model_needs_its_preprocessor(cache, extra, reason):
    files = mlx_chat_files(model_type="llava")
    files.update(extra)
    m = _corrupt(cache, "mlx-community/llava-test", files)
    assert "vision" in m["capabilities"]
    assert (m["health"], m["reason"] if reason else None) == ("unhealthy" if reason else "healthy", reason)


def test_vision_tower_outside_the_known_families_counts_too(cache):
    cache.add("mlx-community/new-vl", mlx_chat_files(model_type="qwen3_5", vision_config={"depth": 2}))
    m = obj("mlx-community/new-vl")
    assert m["reason"] == "Vision model (qwen3_5) without preprocessor_config.json: images cannot be prepared for it"


def test_health_and_list_agree(cache):
    """`health` checks from the folders alone; its verdicts are list's, model for model."""
    from mlxk.ops.listing import health, list_models

    cache.add("org/ok", mlx_chat_files())
    cache.add("org/vl", mlx_chat_files(model_type="llava"))
    files = mlx_chat_files()
    files["special_tokens_map.json"] = b"{"
    cache.add("org/badjson", files)
    cache.add("org/gguf", {"x.gguf": b"GGUF" + b"\0" * 40})
    commit = cache.add("org/broken", mlx_chat_files(hidden_size=8))
    (cache.snapshot("org/broken", commit) / "tokenizer.json").resolve().unlink()
    listed = {m["name"]: (m["health"], m["reason"]) for m in list_models()[0].data["models"]}
    data = health().data
    checked = {e["name"]: (e["status"], e["reason"]) for e in data["healthy"] + data["unhealthy"]}
    assert checked.keys() == listed.keys() and len(checked) == 5
    for name, (status, reason) in checked.items():
        assert status == listed[name][0], name
        if status == "unhealthy":
            assert reason == listed[name][1], name
    assert data["summary"] == {"total": 5, "healthy_count": 1, "unhealthy_count": 4}


@pytest.mark.parametrize("leftover", ["model.safetensors.partial", "weights/model.safetensors.tmp"])
def test_unfinished_files_make_a_workspace_unhealthy(tmp_path, leftover):
    ws = tmp_path / "ws"
    ws.mkdir()
    for name, content in mlx_chat_files().items():
        (ws / name).write_bytes(content)
    assert obj(str(ws))["health"] == "healthy"
    (ws / leftover).parent.mkdir(exist_ok=True)
    (ws / leftover).write_bytes(b"\0" * 10)
    m = obj(str(ws))
    assert (m["health"], m["runtime_compatible"]) == ("unhealthy", False)
    assert m["reason"] == f"Interrupted download: unfinished file(s) {leftover} (download the model again)"
