"""Over HTTP a model is a cache name; folders only inside --model-dir; a failed load keeps the old model."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from tests.serve_fixture import ServerProc, link_model

httpx = pytest.importorskip("httpx2")

KEY = {"Authorization": "Bearer sk-test"}
ENV = {"MLXK_API_KEY": "sk-test"}


def _chat(base: str, model: str | None, max_tokens: int = 3, timeout: float = 120):
    body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": max_tokens, "temperature": 0}
    if model is not None:
        body["model"] = model
    return httpx.post(base + "/v1/chat/completions", json=body, headers=KEY, timeout=timeout)


@pytest.mark.parametrize("spec", ["/etc/passwd", "/root/.ssh", "~", "./models/x", "../../etc", "/nonexistent"])
def test_paths_are_refused_alike_without_touching_the_file_system(served, spec):
    r = _chat(served.base, spec)
    assert r.status_code == 404, r.text
    err = r.json()["error"]
    assert err["code"] == "model_not_found" and err["param"] == "model"
    # the same answer whatever the path: nothing about the file system leaks
    assert err["message"].replace(spec, "X") == (
        "The model 'X' does not exist on this server: paths are not accepted over HTTP (start the server with "
        "--model-dir DIR to serve the model folders inside DIR)")


def test_model_dir_serves_folders_inside_it_and_nothing_else(serve_model_dir, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    link_model(serve_model_dir, models / "second")
    (models / "loop").mkdir()
    os.symlink(models / "loop" / "a", models / "loop" / "b")
    os.symlink(models / "loop" / "b", models / "loop" / "a")
    os.symlink(models / "loop", models / "loop" / "self")  # a folder that contains itself
    os.symlink("/etc", models / "escape")
    srv = ServerProc(serve_model_dir, tmp_path, "--model-dir", str(models), env=ENV).wait_ready()
    try:
        ok = _chat(srv.base, str(models / "second"))
        assert ok.status_code == 200, ok.text
        assert ok.json()["model"] == "second"  # the folder's name, never its path
        for spec, why in [(str(models / "loop" / "a"), "link loop"), (str(models / "escape"), "--model-dir"),
                          ("/etc", "--model-dir"), (str(models / ".." / "models" / ".." / "x"), "--model-dir")]:
            r = _chat(srv.base, spec, timeout=60)
            assert r.status_code == 404, (spec, r.text)
            assert why in r.json()["error"]["message"], (spec, r.text)
        r = _chat(srv.base, str(models / "loop"), timeout=60)  # the walk ends: not a model, answered
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_runnable", r.text
        assert _chat(srv.base, None).status_code == 200
    finally:
        srv.stop()


def _broken_copy(src, dest, how: str):
    dest.mkdir()
    for f in src.iterdir():
        if f.name not in ("config.json", "model.safetensors"):
            (dest / f.name).symlink_to(f.resolve())
    cfg = json.loads((src / "config.json").read_text())
    if how == "shapes":  # a config the weights do not fit
        cfg["intermediate_size"] = cfg["intermediate_size"] * 2
        (dest / "model.safetensors").symlink_to((src / "model.safetensors").resolve())
    else:  # a header that promises more bytes than the file has
        data = (src / "model.safetensors").read_bytes()
        (dest / "model.safetensors").write_bytes(data[: len(data) // 3])
    (dest / "config.json").write_text(json.dumps(cfg))


def test_a_model_that_fails_to_load_leaves_the_previous_one_serving(serve_model_dir, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    _broken_copy(serve_model_dir, models / "wrong-shapes", "shapes")
    _broken_copy(serve_model_dir, models / "truncated", "truncated")
    srv = ServerProc(serve_model_dir, tmp_path, "--model-dir", str(models), env=ENV).wait_ready()
    try:
        assert _chat(srv.base, None).status_code == 200
        r = _chat(srv.base, str(models / "wrong-shapes"))
        assert r.status_code == 503 and r.json()["error"]["code"] == "model_load_failed", r.text
        assert "wrong-shapes" in r.json()["error"]["message"] and str(tmp_path) not in r.text
        again = _chat(srv.base, None)  # the preloaded model still answers
        assert again.status_code == 200, again.text
        health = httpx.get(srv.base + "/health").json()
        assert health["status"] == "ok", health
        assert "wrong-shapes" in health["load_errors"], health
        # the same broken folder fails at once, without unloading the working model again
        assert _chat(srv.base, str(models / "wrong-shapes")).json()["error"]["code"] == "model_load_failed"
        r = _chat(srv.base, str(models / "truncated"))
        assert r.status_code in (404, 503), r.text  # unhealthy (404) or failed to load (503)
        assert _chat(srv.base, None).status_code == 200
        # repaired: the folder's files changed, so it is tried again and now loads
        shutil.rmtree(models / "wrong-shapes")
        link_model(serve_model_dir, models / "wrong-shapes")
        fixed = _chat(srv.base, str(models / "wrong-shapes"))
        assert fixed.status_code == 200, fixed.text
    finally:
        srv.stop()
