"""`rm` deletes exactly what it names, and what it says agrees with the disk (issue 11).

Two cache folders that share commit hashes (a copied or renamed repo, duplicate Hub
repos) must not make `rm` of one delete the other; an interrupt during `rm` must never
leave a success message over a half-deleted repo, or an error over a deleted one.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.cachebuilder import mlx_chat_files
from tests.conftest import run_json
from tests.schema import upstream_validate

ORIGINAL = "models--mlx-community--Orig-4bit"
COPY = "models--probe--copy"


def _tree(path: Path) -> dict[str, str]:
    """Every entry under ``path`` with its link target or content digest: 'intact' means equal."""
    import hashlib

    out = {}
    for p in sorted(path.rglob("*")):
        rel = p.relative_to(path).as_posix()
        if p.is_symlink():
            out[rel] = "-> " + os.readlink(p)
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[rel] = "dir"
    return out


def _two_repos_sharing_hashes(cache, hub_cache: Path) -> tuple[str, str]:
    """The original with two revisions and a byte-for-byte copy of its folder under another name."""
    old = cache.add("mlx-community/Orig-4bit", mlx_chat_files(hidden_size=32), commit="a" * 40, ref=None)
    new = cache.add("mlx-community/Orig-4bit", mlx_chat_files(), commit="b" * 40)
    shutil.copytree(hub_cache / ORIGINAL, hub_cache / COPY, symlinks=True)
    return old, new


def test_rm_of_a_copied_repo_keeps_the_original(cache, hub_cache):
    _two_repos_sharing_hashes(cache, hub_cache)
    before = _tree(hub_cache / ORIGINAL)
    payload, rc = run_json("rm", "probe/copy", "--force")
    assert rc == 0, payload
    assert payload["data"]["model"] == "probe/copy" and payload["data"]["scope"] == "model"
    assert sorted(payload["data"]["revisions_deleted"]) == ["a" * 40, "b" * 40]
    upstream_validate(payload)
    assert not (hub_cache / COPY).exists()
    assert _tree(hub_cache / ORIGINAL) == before
    health, _ = run_json("health", "mlx-community/Orig-4bit")
    assert health["data"]["summary"]["healthy_count"] == 1


def test_rm_of_the_original_keeps_the_copy(cache, hub_cache):
    """The other direction: the copy sorts after the original in any scan order."""
    _two_repos_sharing_hashes(cache, hub_cache)
    before = _tree(hub_cache / COPY)
    payload, rc = run_json("rm", "mlx-community/Orig-4bit", "--force")
    assert rc == 0 and payload["data"]["model"] == "mlx-community/Orig-4bit"
    assert not (hub_cache / ORIGINAL).exists()
    assert _tree(hub_cache / COPY) == before


def test_rm_one_revision_of_a_copy_touches_only_the_copy(cache, hub_cache):
    old, new = _two_repos_sharing_hashes(cache, hub_cache)
    before = _tree(hub_cache / ORIGINAL)
    payload, rc = run_json("rm", f"probe/copy@{old[:8]}", "--force")
    assert rc == 0, payload
    assert payload["data"]["scope"] == "revision" and payload["data"]["revisions_deleted"] == [old]
    assert payload["data"]["message"] == f"Successfully deleted probe/copy@{old[:8]}"
    upstream_validate(payload)
    assert not (hub_cache / COPY / "snapshots" / old).exists()
    assert (hub_cache / COPY / "snapshots" / new / "config.json").read_bytes()
    assert _tree(hub_cache / ORIGINAL) == before
    for name in ("probe/copy", "mlx-community/Orig-4bit"):
        health, _ = run_json("health", name)
        assert health["data"]["summary"]["healthy_count"] == 1, (name, health)


def _undeletable(folder: Path):
    """Make ``folder``'s entries impossible to unlink: chmod for a user, the immutable flag for root."""
    import contextlib

    @contextlib.contextmanager
    def held():
        if os.geteuid() == 0:
            subprocess.run(["chattr", "+i", str(folder)], check=True)
            try:
                yield
            finally:
                subprocess.run(["chattr", "-i", str(folder)], check=True)
        else:
            folder.chmod(0o555)
            try:
                yield
            finally:
                folder.chmod(0o755)

    return held()


def test_rm_reports_files_it_could_not_delete(cache, hub_cache):
    """huggingface_hub logs a permission error and goes on; mlxk must not call that a success."""
    old, new = _two_repos_sharing_hashes(cache, hub_cache)
    snap = hub_cache / COPY / "snapshots" / old
    with _undeletable(snap):
        payload, rc = run_json("rm", f"probe/copy@{old[:8]}", "--force")
    assert (rc, payload["status"], payload["error"]["type"]) == (3, "error", "PermissionError"), payload
    assert f"probe/copy@{old[:8]}" in payload["error"]["message"]
    assert (snap / "config.json").exists()


# --- interrupts ----------------------------------------------------------------

def _big_repo(cache, files: int = 6000) -> Path:
    """A repo whose deletion takes long enough to be interrupted in the middle."""
    content = mlx_chat_files()
    content.update({f"extra/f{i:05d}.txt": f"{i}\n".encode() for i in range(files)})
    cache.add("org/big", content, tree=False)
    return cache.repo_path("org/big")


def _rm_interrupted(repo: Path, when: str) -> tuple[int, str, str]:
    """Start `mlxk rm org/big --force --json`; send SIGINT as deletion starts ('during') or ends ('after')."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlxk", "rm", "org/big", "--force", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    sentinels = [repo / "refs" / "main", *sorted((repo / "blobs").iterdir())[:50]]
    sent = False
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        started = not all(os.path.lexists(p) for p in sentinels)
        if (when == "during" and started) or (when == "after" and not repo.exists()):
            proc.send_signal(signal.SIGINT)
            sent = True
            break
        time.sleep(0.0005)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err if sent else "signal not sent: " + err


def _assert_agrees_with_disk(rc: int, out: str, err: str, repo: Path) -> None:
    if rc == 0:
        payload = json.loads(out)
        assert payload["status"] == "success" and payload["data"]["action"] == "deleted", out
        assert not repo.exists(), "success reported, but the repo is still (partly) there"
    else:
        assert not repo.exists() or (repo / "refs" / "main").exists(), "failed, yet half the repo is gone"
        if out.strip():
            assert json.loads(out)["status"] == "error", (rc, out, err)


def test_sigint_during_deletion_finishes_it_and_says_so(cache):
    repo = _big_repo(cache)
    rc, out, err = _rm_interrupted(repo, "during")
    assert "signal not sent" not in err
    _assert_agrees_with_disk(rc, out, err, repo)
    assert rc == 0 and not repo.exists(), (rc, out, err)
    # the note says so when the signal came before the end (on a loaded machine it may come after)
    assert json.loads(out)["data"]["message"].startswith("Successfully deleted org/big")


def test_sigint_after_deletion_keeps_the_success_exit_code(cache):
    for _ in range(3):
        repo = _big_repo(cache, files=3000)
        rc, out, err = _rm_interrupted(repo, "after")
        _assert_agrees_with_disk(rc, out, err, repo)
        assert rc == 0, (rc, out, err)


def test_held_signals_wait_for_the_block_and_are_reported():
    """A real SIGINT inside the block: no KeyboardInterrupt there, the signal is returned instead."""
    from mlxk.ops.remove import held_signals

    previous = signal.getsignal(signal.SIGINT)
    with held_signals() as came:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # let the handler run inside the block
    assert came == [signal.SIGINT]
    assert signal.getsignal(signal.SIGINT) is previous
