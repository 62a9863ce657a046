"""``mlxk deploy``: every bad config is refused before anything is installed, naming its field.

Real CLI in a subprocess (``run_json``); deployments in the test's own MLXK_DEPLOY_DIR.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_json


@pytest.fixture
def root(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "deploy"
    monkeypatch.setenv("MLXK_DEPLOY_DIR", str(path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))  # a service file would land here, never in ~
    return path


def write_config(root: Path, name: str, config: dict) -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


SEED = {  # the mlx-tools schema, field for field
    "name": "seed",
    "display_name": "Human Readable Name",
    "model_path": "./local-models/model-name",
    "parameters": {"temp": 0.6, "top_p": 0.95, "top_k": 20, "max_tokens": 100000},
    "kv_cache": {"bits": 6, "group_size": 64, "quantized_start": 0},
    "server": {"host": "0.0.0.0", "port": 8000, "model_id": "mlx-local", "trust_remote_code": True,
               "prompt_cache_size": 1},
}


def refused(root: Path, name: str, field: str, *words: str, extra: tuple[str, ...] = ()) -> dict:
    """install must fail with a ValidationError naming ``field``, and leave nothing installed."""
    payload, rc = run_json("deploy", "install", name, "--backend", "process", *extra)
    assert rc == 1, payload
    err = payload["error"]
    assert err["type"] == "ValidationError"
    assert err["field"] == field, err
    assert field in err["message"]
    for w in words:
        assert w in err["message"], err["message"]
    assert not (root / name / "install.json").exists()
    assert not (root / name / "run.json").exists()
    return err


def test_unknown_key_is_refused(root, demo_model_dir):
    cfg = {"name": "a", "model_path": str(demo_model_dir), "server": {"port": 8100, "prot": 1}}
    write_config(root, "a", cfg)
    refused(root, "a", "server.prot", "unknown key")


def test_unknown_top_level_key_is_refused(root, demo_model_dir):
    write_config(root, "a", {"name": "a", "model_path": str(demo_model_dir), "temperature": 0.5})
    refused(root, "a", "temperature", "unknown key")


@pytest.mark.parametrize("section, key, value", [
    ("server", "port", "8000"),          # a string where a number belongs
    ("server", "port", 70000),           # out of range
    ("server", "trust_remote_code", "no"),
    ("parameters", "top_k", 2.5),
    ("parameters", "temp", True),
    ("kv_cache", "bits", 7),             # not a width MLX quantizes to
])
def test_wrong_type_or_value_is_refused(root, demo_model_dir, section, key, value):
    cfg = {"name": "a", "model_path": str(demo_model_dir), "server": {"port": 8100}}
    cfg.setdefault(section, {})[key] = value
    if section == "kv_cache":
        cfg["kv_cache"].setdefault("group_size", 64)
    write_config(root, "a", cfg)
    refused(root, "a", f"{section}.{key}")


def test_port_of_another_deployment_is_refused(root, demo_model_dir):
    write_config(root, "one", {"name": "one", "model_path": str(demo_model_dir), "server": {"port": 8123}})
    write_config(root, "two", {"name": "two", "model_path": str(demo_model_dir), "server": {"port": 8123}})
    err = refused(root, "two", "server.port", "8123", "'one'")
    assert err["deployment"] == "one"


def test_create_refuses_the_port_of_another_deployment(root, demo_model_dir):
    payload, rc = run_json("deploy", "create", "one", "--model", str(demo_model_dir), "--port", "8124")
    assert rc == 0, payload
    payload, rc = run_json("deploy", "create", "two", "--model", str(demo_model_dir), "--port", "8124")
    assert rc == 1 and payload["error"]["field"] == "server.port"
    assert not (root / "two").exists()


def test_create_picks_a_port_no_other_deployment_uses(root, demo_model_dir):
    run_json("deploy", "create", "one", "--model", str(demo_model_dir), "--port", "8000")
    payload, rc = run_json("deploy", "create", "two", "--model", str(demo_model_dir))
    assert rc == 0 and payload["data"]["port"] == 8001


@pytest.mark.parametrize("model", ["no-such-model", "./missing-folder", "bad name!"])
def test_model_neither_cached_nor_hub_nor_folder_is_refused(root, model):
    write_config(root, "a", {"name": "a", "model_path": model, "server": {"port": 8100}})
    refused(root, "a", "model_path")


def test_folder_without_a_model_is_refused(root, tmp_path):
    (tmp_path / "empty").mkdir()
    write_config(root, "a", {"name": "a", "model_path": str(tmp_path / "empty"), "server": {"port": 8100}})
    refused(root, "a", "model_path", "holds no model")


def test_model_sources_accepted(root, demo_model_in_cache, demo_model_dir):
    """A cache name, an org/name from the Hub (pulled on first start) and a folder all pass."""
    for name, model, source in (("c", demo_model_in_cache, "cache"), ("h", "some-org/some-model", "hub"),
                                ("f", str(demo_model_dir), "folder")):
        payload, rc = run_json("deploy", "create", name, "--model", model)
        assert rc == 0, payload
        assert payload["data"]["model_source"] == source
        assert not Path(payload["data"]["model"]).is_absolute()  # no absolute paths in JSON


def test_relative_folder_is_relative_to_the_project(root, demo_model_dir):
    """As in mlx-tools, ./local-models/x in deploy/<name>/config.json means <project>/local-models/x."""
    (root.parent / "local-models").mkdir(parents=True)
    (root.parent / "local-models" / "m").symlink_to(demo_model_dir)
    write_config(root, "a", {"name": "a", "model_path": "./local-models/m", "server": {"port": 8100}})
    payload, rc = run_json("deploy", "show", "a")
    assert rc == 0 and payload["data"]["valid"], payload


def test_non_loopback_host_needs_an_api_key(root, demo_model_dir):
    write_config(root, "a", {"name": "a", "model_path": str(demo_model_dir),
                             "server": {"host": "0.0.0.0", "port": 8100}})
    refused(root, "a", "server.host", "api_key_env")
    payload, rc = run_json("deploy", "create", "b", "--model", str(demo_model_dir), "--host", "0.0.0.0")
    assert rc == 1 and payload["error"]["field"] == "server.host"
    payload, rc = run_json("deploy", "create", "b", "--model", str(demo_model_dir), "--host", "0.0.0.0",
                           "--api-key-env", "MY_KEY")
    assert rc == 0, payload


def test_api_key_env_must_name_a_variable(root, demo_model_dir):
    write_config(root, "a", {"name": "a", "model_path": str(demo_model_dir),
                             "server": {"host": "0.0.0.0", "port": 8100, "api_key_env": "not a name"}})
    refused(root, "a", "server.api_key_env")


def test_process_start_needs_the_key_variable_set(root, demo_model_dir, monkeypatch):
    monkeypatch.delenv("DEPLOY_TEST_KEY", raising=False)
    write_config(root, "a", {"name": "a", "model_path": str(demo_model_dir),
                             "server": {"host": "0.0.0.0", "port": 8100, "api_key_env": "DEPLOY_TEST_KEY"}})
    payload, rc = run_json("deploy", "install", "a", "--backend", "process")
    assert rc == 0, payload
    payload, rc = run_json("deploy", "start", "a")
    assert rc == 1 and payload["error"]["field"] == "server.api_key_env"
    assert "DEPLOY_TEST_KEY" in payload["error"]["message"]
    assert not (root / "a" / "run.json").exists()  # nothing was started


def test_trust_remote_code_needs_an_explicit_opt_in(root, demo_model_dir):
    cfg = {**SEED, "name": "a", "model_path": str(demo_model_dir), "server": {**SEED["server"], "port": 8100,
                                                                              "api_key_env": "K"}}
    write_config(root, "a", cfg)
    refused(root, "a", "server.trust_remote_code", "--trust-remote-code")
    payload, rc = run_json("deploy", "install", "a", "--backend", "process", "--trust-remote-code")
    assert rc == 0, payload
    assert json.loads((root / "a" / "install.json").read_text())["trust_remote_code"] is True


def test_seed_config_schema_is_accepted_unchanged(root, demo_model_dir):
    """Every field of the mlx-tools config.json parses (with a model here and the two opt-ins it needs)."""
    (root.parent / "local-models").mkdir(parents=True)
    (root.parent / "local-models" / "model-name").symlink_to(demo_model_dir)
    cfg = json.loads(json.dumps(SEED))
    cfg["server"]["api_key_env"] = "SEED_KEY"
    write_config(root, "seed", cfg)
    payload, rc = run_json("deploy", "install", "seed", "--backend", "process", "--trust-remote-code")
    assert rc == 0, payload


def test_name_must_match_its_folder(root, demo_model_dir):
    write_config(root, "a", {"name": "b", "model_path": str(demo_model_dir), "server": {"port": 8100}})
    refused(root, "a", "name", "'b'")


def test_broken_json_is_refused_naming_the_file(root):
    (root / "a").mkdir(parents=True)
    (root / "a" / "config.json").write_text('{"name": "a",')
    payload, rc = run_json("deploy", "install", "a", "--backend", "process")
    assert rc == 1 and "a/config.json is not valid JSON" in payload["error"]["message"]
    assert not (root / "a" / "install.json").exists()


def test_install_all_installs_nothing_when_one_config_is_bad(root, demo_model_dir):
    write_config(root, "good", {"name": "good", "model_path": str(demo_model_dir), "server": {"port": 8100}})
    write_config(root, "bad", {"name": "bad", "model_path": str(demo_model_dir), "server": {"port": "x"}})
    payload, rc = run_json("deploy", "install-all", "--backend", "process")
    assert rc == 1 and payload["error"]["field"] == "server.port"
    assert not (root / "good" / "install.json").exists()


def test_list_shows_a_bad_config_without_failing(root, demo_model_dir):
    write_config(root, "good", {"name": "good", "model_path": str(demo_model_dir), "server": {"port": 8100}})
    write_config(root, "bad", {"name": "bad", "model_path": str(demo_model_dir), "server": {"port": "x"}})
    payload, rc = run_json("deploy", "list")
    assert rc == 0
    by_name = {d["name"]: d for d in payload["data"]["deployments"]}
    assert by_name["good"]["config_error"] is None and by_name["good"]["state"] == "not_installed"
    assert "server.port" in by_name["bad"]["config_error"]


def test_unknown_deployment_and_bad_names(root):
    payload, rc = run_json("deploy", "status", "nope")
    assert rc == 1 and "No deployment named 'nope'" in payload["error"]["message"]
    payload, rc = run_json("deploy", "create", "../escape", "--model", "org/x")
    assert rc == 1 and payload["error"]["field"] == "name"
    assert not (root.parent / "escape").exists()


def test_dir_points_at_a_project_folder(root, tmp_path, demo_model_dir):
    project = tmp_path / "project" / "deploy"
    payload, rc = run_json("deploy", "create", "a", "--model", str(demo_model_dir), "--dir", str(project))
    assert rc == 0, payload
    assert (project / "a" / "config.json").is_file() and not root.exists()
    payload, rc = run_json("deploy", "list", "--dir", str(project))
    assert [d["name"] for d in payload["data"]["deployments"]] == ["a"]
    assert run_json("deploy", "list")[0]["data"]["deployments"] == []
