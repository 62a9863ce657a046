"""The commands as a user runs them: list, show, health, rm, --version, schema, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cachebuilder import gguf_bytes, mlx_base_files, mlx_chat_files
from tests.conftest import REPO_ROOT, run_cli, run_json
from tests.schema import upstream_validate


@pytest.fixture
def populated(cache):
    cache.add("mlx-community/Llama-3.2-1B-Instruct-4bit", mlx_chat_files())
    cache.add("mlx-community/Llama-3.2-3B-Instruct-4bit", mlx_chat_files(hidden_size=96))
    cache.add("mlx-community/base-model", mlx_base_files())
    cache.add("TheBloke/TinyLlama-GGUF", {"tiny.Q4_0.gguf": gguf_bytes()})
    commit = cache.add("corrupted/incomplete-download", mlx_chat_files(hidden_size=80))
    (cache.snapshot("corrupted/incomplete-download", commit) / "config.json").unlink()
    return cache


def test_version_json_and_human():
    payload, rc = run_json("--version")
    assert rc == 0
    data = payload["data"]
    assert data["json_api_spec_version"] == "0.1.7"
    assert data["system"]["memory_total_bytes"] > 0
    upstream_validate(payload)
    human = run_cli("--version")
    assert human.returncode == 0
    assert human.stdout.splitlines()[0] == f"mlxk {data['cli_version']} (JSON API 0.1.7)"


def test_list_json_lists_everything(populated):
    payload, rc = run_json("list")
    assert rc == 0
    names = [m["name"] for m in payload["data"]["models"]]
    assert names == sorted(names, key=str.lower)
    assert payload["data"]["count"] == 5
    by_name = {m["name"]: m for m in payload["data"]["models"]}
    assert by_name["corrupted/incomplete-download"]["reason"] == "config.json missing"
    assert by_name["TheBloke/TinyLlama-GGUF"]["framework"] == "GGUF"
    upstream_validate(payload)


def test_list_pattern_and_empty_cache(populated):
    payload, _ = run_json("list", "llama-3.2")
    assert [m["name"] for m in payload["data"]["models"]] == [
        "mlx-community/Llama-3.2-1B-Instruct-4bit", "mlx-community/Llama-3.2-3B-Instruct-4bit"]
    assert payload["data"]["count"] == 2


def test_list_empty_cache_without_cache_dir():
    payload, rc = run_json("list")
    assert (rc, payload["data"]) == (0, {"models": [], "count": 0})


def test_list_human_filters(populated):
    default = run_cli("list").stdout
    assert "Llama-3.2-1B-Instruct-4bit" in default and "mlx-community/" not in default
    assert "base-model" not in default and "TinyLlama" not in default and "incomplete" not in default
    verbose = run_cli("list", "--verbose").stdout
    assert "mlx-community/base-model" in verbose and "TinyLlama" not in verbose
    everything = run_cli("list", "--all").stdout
    assert "TinyLlama-GGUF" in everything and "config.json missing" in everything


def test_human_output_in_a_pipe_has_no_colour_or_boxes(populated):
    out = run_cli("list", "--all", "--health").stdout
    assert "\x1b[" not in out
    assert not any(ch in out for ch in "─│┃━┏┓╭╮")


def test_show_metadata_files_config(populated):
    payload, rc = run_json("show", "Llama-3.2-1B-Instruct-4bit")
    assert rc == 0
    meta = payload["data"]["metadata"]
    assert meta["quantization"] == "4bit" and meta["context_length"] == 2048 and meta["num_hidden_layers"] == 2
    upstream_validate(payload)
    payload, _ = run_json("show", "Llama-3.2-1B-Instruct-4bit", "--files", "--config")
    types = {f["name"]: f["type"] for f in payload["data"]["files"]}
    assert types["model.safetensors"] == "weights" and types["tokenizer.json"] == "tokenizer"
    assert types["config.json"] == "config"
    assert payload["data"]["config"]["model_type"] == "llama"
    upstream_validate(payload)
    assert payload["data"]["metadata"] is None  # the spec's --files/--config examples carry none
    payload, _ = run_json("show", "Llama-3.2-1B-Instruct-4bit", "--config")
    assert payload["data"]["metadata"] is None and payload["data"]["config"]["hidden_size"] == 64
    upstream_validate(payload)
    human = run_cli("show", "Llama-3.2-1B-Instruct-4bit", "--files")
    lines = human.stdout.splitlines()
    assert "Framework:    MLX" in lines and "Runnable:     yes" in lines, human.stdout
    assert any(line.split() == ["model.safetensors", "224B", "weights"] for line in lines), human.stdout


def test_show_gpt2_style_config(cache):
    """GPT-2's names (n_positions, n_embd, n_layer, n_head) give the context length and sizes."""
    cfg = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_positions": 1024, "n_ctx": 1024,
           "n_embd": 768, "n_layer": 12, "n_head": 12, "vocab_size": 50257}
    files = mlx_chat_files()
    files["config.json"] = json.dumps({**cfg, "quantization": {"group_size": 64, "bits": 4}}).encode()
    cache.add("mlx-community/gpt2-4bit", files)
    payload, rc = run_json("show", "gpt2-4bit")
    assert rc == 0
    meta = payload["data"]["metadata"]
    assert (meta["context_length"], meta["hidden_size"], meta["num_hidden_layers"], meta["num_attention_heads"]) == (
        1024, 768, 12, 12)
    assert meta["model_type"] == "gpt2" and meta["vocab_size"] == 50257
    upstream_validate(payload)


def test_show_errors(populated):
    payload, rc = run_json("show", "Llama-3.2")
    assert (rc, payload["error"]["type"]) == (1, "ambiguous_match")
    assert payload["error"]["matches"] == [
        "mlx-community/Llama-3.2-1B-Instruct-4bit", "mlx-community/Llama-3.2-3B-Instruct-4bit"]
    payload, rc = run_json("show", "nonexistent-model")
    assert (rc, payload["error"]["type"], payload["data"]) == (1, "model_not_found", None)
    payload, rc = run_json("show", "x" * 97)
    assert (rc, payload["error"]["type"]) == (1, "ValidationError")
    human = run_cli("show", "llama")
    assert human.returncode == 1 and "Multiple models match" in human.stderr and human.stdout == ""


def test_show_never_exposes_cache_paths(populated, hub_cache):
    payload, _ = run_json("show", "base-model", "--files", "--config")
    assert str(hub_cache) not in json.dumps(payload)


def test_health_all_one_and_ambiguous(populated):
    payload, rc = run_json("health")
    assert rc == 0
    s = payload["data"]["summary"]
    assert (s["total"], s["healthy_count"], s["unhealthy_count"]) == (5, 4, 1)
    assert payload["data"]["unhealthy"] == [
        {"name": "corrupted/incomplete-download", "status": "unhealthy", "reason": "config.json missing"}]
    upstream_validate(payload)
    payload, _ = run_json("health", "base-model")
    assert payload["data"]["healthy"][0]["reason"] == "Model is healthy"
    payload, rc = run_json("health", "Llama-3.2")
    assert (rc, payload["error"]["type"]) == (1, "ambiguous_match")
    human = run_cli("health")
    assert "FAIL corrupted/incomplete-download: config.json missing" in human.stdout


def test_health_with_hash(cache):
    commit = cache.add("org/pinned", mlx_chat_files())
    payload, _ = run_json("health", f"pinned@{commit[:6]}")
    assert payload["data"]["healthy"][0]["name"] == "org/pinned"


def test_rm_whole_model(populated, hub_cache):
    payload, rc = run_json("rm", "base-model")
    assert rc == 0 and payload["data"]["action"] == "deleted"
    assert not (hub_cache / "models--mlx-community--base-model").exists()
    assert (hub_cache / "models--mlx-community--Llama-3.2-1B-Instruct-4bit").exists()
    upstream_validate(payload)


def test_rm_one_revision_keeps_the_other(cache, hub_cache):
    old = cache.add("org/m", mlx_chat_files(hidden_size=32), commit="a" * 40, ref=None)
    new = cache.add("org/m", mlx_chat_files(), commit="b" * 40)
    payload, rc = run_json("rm", "org/m@aaaa")
    assert rc == 0 and payload["data"]["revisions_deleted"] == [old]
    repo = hub_cache / "models--org--m"
    assert not (repo / "snapshots" / old).exists()
    assert (repo / "snapshots" / new / "config.json").read_bytes()  # shared blobs survive
    payload, _ = run_json("health", "org/m")
    assert payload["data"]["summary"]["healthy_count"] == 1


def test_rm_refuses_locks_unless_forced(cache, hub_cache):
    cache.add("org/locked", mlx_chat_files())
    lock = cache.add_lock("org/locked")
    payload, rc = run_json("rm", "org/locked")
    assert (rc, payload["error"]["type"]) == (1, "locks_present")
    assert payload["data"]["lock_files"] == [".locks/models--org--locked/abc123.lock"]
    assert (hub_cache / "models--org--locked").exists()
    payload, rc = run_json("rm", "org/locked", "--force")
    assert rc == 0
    assert not (hub_cache / "models--org--locked").exists() and not lock.exists()


def test_rm_corrupted_repo(populated, hub_cache):
    payload, rc = run_json("rm", "corrupted/incomplete-download")
    assert rc == 0 and not (hub_cache / "models--corrupted--incomplete-download").exists()


def test_rm_refuses_workspace_and_reports_ambiguity(populated, tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "config.json").write_text("{}")
    for typed in (str(ws), "./ws", "ws/"):
        payload, rc = run_json("rm", typed, cwd=tmp_path)
        assert (rc, payload["error"]["type"], payload["data"]) == (1, "workspace_model", {"model": str(ws)})
        assert payload["error"]["message"].startswith(f"'{ws}' is a workspace")
        upstream_validate(payload)
    human = run_cli("rm", "--force", "./ws", cwd=tmp_path)
    assert human.returncode == 1 and "is a workspace" in human.stderr
    assert (ws / "config.json").exists()
    payload, rc = run_json("rm", "Llama-3.2")
    assert payload["error"]["type"] == "ambiguous_match"
    assert payload["data"]["matches"] == [
        "mlx-community/Llama-3.2-1B-Instruct-4bit", "mlx-community/Llama-3.2-3B-Instruct-4bit"]
    payload, rc = run_json("rm", "nonexistent-model")
    assert (rc, payload["data"], payload["error"]) == (
        1, None, {"type": "model_not_found", "message": "No models found matching 'nonexistent-model'"})
    upstream_validate(payload)


def test_rm_human_confirmation_on_a_terminal(populated, hub_cache):
    """A real pseudo-terminal: 'n' keeps the model, 'y' deletes it."""
    import os
    import pty

    def answer(text: str) -> int:
        pid, fd = pty.fork()
        if pid == 0:  # child
            os.execv(sys.executable, [sys.executable, "-m", "mlxk", "rm", "base-model"])
        out = b""
        while b"[y/N]" not in out:
            out += os.read(fd, 1024)
        os.write(fd, text.encode() + b"\n")
        try:
            while os.read(fd, 1024):
                pass
        except OSError:
            pass
        return os.waitpid(pid, 0)[1]

    answer("n")
    assert (hub_cache / "models--mlx-community--base-model").exists()
    answer("y")
    assert not (hub_cache / "models--mlx-community--base-model").exists()


def test_argument_errors_are_envelopes():
    payload, rc = run_json("show")
    assert (rc, payload["command"], payload["error"]["type"]) == (1, "show", "ValidationError")
    payload, rc = run_json("list", "--bogus-flag")
    assert (rc, payload["command"]) == (1, "list")


def test_schema_command_publishes_models():
    out = run_cli("schema")
    schema = json.loads(out.stdout)
    assert "ModelObject" in json.dumps(schema) and "list_data" in schema["data_by_command"]


def _imported_after(args: list[str], prefixes: tuple[str, ...]) -> list[str]:
    """The modules (of ``prefixes``) a real process has imported after running ``mlxk args``."""
    code = (
        "import sys, io, contextlib; from mlxk.cli.main import main\n"
        f"with contextlib.redirect_stdout(io.StringIO()): main({args!r})\n"
        f"print(sorted(m for m in sys.modules if m in {prefixes!r} or m.split('.')[0] in {prefixes!r}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().replace("'", '"'))


@pytest.mark.parametrize("args", [["--version", "--json"], ["--version"]])
def test_version_fast_path_imports_neither_rich_nor_metadata(args):
    assert _imported_after(args, ("rich", "importlib.metadata", "huggingface_hub", "pydantic")) == []


def test_health_reads_the_folders_without_huggingface_hub(populated):
    assert _imported_after(["health", "--json"], ("huggingface_hub", "yaml", "importlib.metadata")) == []


def test_version_is_the_packaged_one():
    """mlxk/_version.py is what --version says; pyproject.toml and the installed metadata must agree."""
    import importlib.metadata
    import tomllib

    from mlxk import __version__

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert __version__ == project["version"] == importlib.metadata.version("mlxk")
    payload, _ = run_json("--version")
    assert payload["data"]["cli_version"] == __version__


@pytest.mark.parametrize("args", [["--version"], ["list"], ["show", "base-model"], ["health"], ["rm", "nothing"]])
def test_read_only_commands_never_import_mlx(populated, args):
    code = (
        "import sys, io, contextlib; from mlxk.cli.main import main\n"
        f"with contextlib.redirect_stdout(io.StringIO()): main({args + ['--json']!r})\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('mlx', 'mlx_lm', 'transformers', 'torch'))\n"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_entry_points_are_installed():
    bindir = Path(sys.executable).parent
    for name in ("mlxk", "mlxk2", "mlxk-json"):
        proc = subprocess.run([str(bindir / name), "--version", "--json"], capture_output=True, text=True)
        assert json.loads(proc.stdout)["command"] == "version"


@pytest.fixture
def workspaces(tmp_path):
    """Model folders as users keep them beside their work: some by prefix, one a level deeper."""
    root = tmp_path / "work"
    for rel in ("models/gemma-b", "models/gemma-a", "models/qwen", "models/org/deep-model"):
        folder = root / rel
        folder.mkdir(parents=True)
        for name, content in mlx_chat_files().items():
            (folder / name).write_bytes(content)
    (root / "models" / "notes").mkdir()
    (root / "models" / "notes" / "todo.txt").write_text("x")
    (root / "models" / "gguf-only").mkdir()
    (root / "models" / "gguf-only" / "m.gguf").write_bytes(gguf_bytes())
    return root


@pytest.mark.parametrize("typed,names", [
    ("./models", ["models/gemma-a", "models/gemma-b", "models/gguf-only", "models/org/deep-model", "models/qwen"]),
    ("./models/", ["models/gemma-a", "models/gemma-b", "models/gguf-only", "models/org/deep-model", "models/qwen"]),
    ("models/", ["models/gemma-a", "models/gemma-b", "models/gguf-only", "models/org/deep-model", "models/qwen"]),
    ("./models/gemma-", ["models/gemma-a", "models/gemma-b"]),
    ("./models/qwen", ["models/qwen"]),
    ("models/qwen/", ["models/qwen"]),
    ("./models/../models/qwen", ["models/qwen"]),
    ("./models/o", ["models/org/deep-model"]),
    ("./models/zzz", []),
])
def test_list_path_names_workspaces_by_full_path(workspaces, typed, names):
    """Spec 0.1.7: a workspace model's name is its full path, whatever relative form was typed."""
    payload, rc = run_json("list", typed, cwd=workspaces)
    assert rc == 0, payload
    assert [m["name"] for m in payload["data"]["models"]] == [str(workspaces / n) for n in names]
    assert payload["data"]["count"] == len(names)
    assert all(m["cached"] is False and m["hash"] is None for m in payload["data"]["models"])
    upstream_validate(payload)


def test_list_absolute_path_and_cache_untouched(workspaces, populated):
    typed = str(workspaces / "models" / "gemma-")
    payload, _ = run_json("list", typed)
    assert [m["name"] for m in payload["data"]["models"]] == [typed + "a", typed + "b"]
    assert payload["data"]["models"][0]["health"] == "healthy" and payload["data"]["models"][0]["framework"] == "MLX"
    human = run_cli("list", "../gemma-", cwd=workspaces / "models" / "org")
    assert [line.split()[0] for line in human.stdout.splitlines()[1:]] == [typed + "a", typed + "b"]


@pytest.mark.parametrize("typed", ["./qwen", "qwen/", "../qwen", "../../models/qwen", "../org/../qwen/"])
def test_show_and_health_name_a_workspace_by_full_path(workspaces, typed):
    cwd = workspaces / "models" / ("org" if typed.startswith("..") else "")
    full = str(workspaces / "models" / "qwen")
    payload, rc = run_json("show", typed, cwd=cwd)
    assert (rc, payload["data"]["model"]["name"], payload["data"]["model"]["cached"]) == (0, full, False)
    upstream_validate(payload)
    payload, rc = run_json("health", typed, cwd=cwd)
    assert (rc, [e["name"] for e in payload["data"]["healthy"]]) == (0, [full])
    upstream_validate(payload)
    assert run_cli("show", typed, cwd=cwd).stdout.splitlines()[0].split()[-1] == full
    assert run_cli("health", typed, cwd=cwd).stdout.splitlines()[0] == f"ok   {full}"


def test_list_path_that_does_not_exist(workspaces):
    payload, rc = run_json("list", "./nowhere/x", cwd=workspaces)
    assert (rc, payload["error"]["type"], payload["error"]["message"]) == (
        1, "model_not_found", "Workspace path './nowhere/x' does not exist")


def test_unfinished_download_files_are_unhealthy_in_list_show_health(cache):
    """A download that stopped leaves ``*.partial`` / ``*.tmp``: every view names the file."""
    cache.add("org/ok", mlx_chat_files())
    cache.add("org/stopped", {**mlx_chat_files(), "model-00001-of-00002.safetensors.partial": b"\0" * 32})
    cache.add("org/stopped-tmp", {**mlx_chat_files(), "tokenizer.json.tmp": b"{"})
    expected = {"org/stopped": "model-00001-of-00002.safetensors.partial", "org/stopped-tmp": "tokenizer.json.tmp"}
    listed, rc = run_json("list")
    by_name = {m["name"]: m for m in listed["data"]["models"]}
    assert rc == 0 and by_name["org/ok"]["health"] == "healthy"
    for name, leftover in expected.items():
        assert (by_name[name]["health"], by_name[name]["runtime_compatible"]) == ("unhealthy", False)
        assert by_name[name]["reason"].startswith("Interrupted download") and leftover in by_name[name]["reason"]
        shown, _ = run_json("show", name)
        assert shown["data"]["model"]["reason"] == by_name[name]["reason"]
    checked, _ = run_json("health")
    assert {e["name"]: e["reason"] for e in checked["data"]["unhealthy"]} == {
        name: by_name[name]["reason"] for name in expected}
    upstream_validate(checked)
    human = run_cli("health", "org/stopped")
    assert "FAIL org/stopped: Interrupted download" in human.stdout and "safetensors.partial" in human.stdout
