"""``pull``: download a model into the standard Hugging Face cache with snapshot_download."""

from __future__ import annotations

import re
import shutil
import sys
import threading
from pathlib import Path
from typing import Callable

from mlxk.contract import Envelope, MlxkError
from mlxk.hub.common import expand_name, hf_api, map_hub_error, network_errors, split_revision
from mlxk.store.cache import find_repo, hub_cache_dir, incomplete_blobs

_HEX = re.compile(r"^[0-9a-f]{4,40}$")
_HEADROOM = 64 * 1024 * 1024


def _data(model, status, message="", expanded=None, **extra):
    return {"model": model, "download_status": status, "message": message, "expanded_name": expanded, **extra}


def _fail(err: MlxkError, model, status="failed", expanded=None) -> MlxkError:
    err.data = _data(model, status, "", expanded)
    return err


def check_disk(needed: int, where: Path) -> None:
    """Raise a FilesystemError before downloading when the disk cannot hold ``needed`` bytes."""
    probe = where
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if needed + _HEADROOM > free:
        raise MlxkError(
            "FilesystemError",
            f"Not enough disk space: the download needs {needed / 1e9:.2f} GB, {free / 1e9:.2f} GB free in the cache",
        )


def _cached_state(repo_id: str, commit: str) -> tuple[bool, str | None, bool]:
    """(snapshot present, health problem or None, partial blobs present) for one commit."""
    from mlxk.inspection.model_object import inspect
    from mlxk.store.names import ModelRef

    repo = find_repo(repo_id)
    if repo is None:
        return False, None, False
    partial = bool(incomplete_blobs(repo))
    snap = next((s for s in repo.snapshots if s.commit == commit), None)
    if snap is None:
        return False, None, partial
    result = inspect(ModelRef(name=repo_id, path=snap.path, cached=True, repo=repo, snapshot=snap))
    return True, result.health_reason, partial


def _download(repo_id: str, revision: str, force: bool, progress: bool) -> None:
    """snapshot_download in a worker thread, so Ctrl-C reaches the main thread at once."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

    (enable_progress_bars if progress else disable_progress_bars)()
    outcome: dict = {}

    def work() -> None:
        try:
            snapshot_download(repo_id, revision=revision, cache_dir=str(hub_cache_dir()), force_download=force)
        except BaseException as exc:  # handed to the main thread
            outcome["error"] = exc

    t = threading.Thread(target=work, name="mlxk-pull", daemon=True)
    t.start()
    while t.is_alive():
        t.join(0.2)
    if "error" in outcome:
        raise outcome["error"]


def pull(spec: str, *, force: bool = False, confirm_repair: Callable[[str], bool] | None = None,
         progress: bool = False) -> Envelope:
    try:
        name, rev = split_revision(spec)
        from mlxk.store.names import validate_name

        validate_name(name)
    except MlxkError as err:
        raise _fail(err, None, "error")

    import os

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise _fail(MlxkError("NetworkError", "Offline mode is enabled (HF_HUB_OFFLINE); unset it to pull"), name)

    api = hf_api()
    expanded = None
    repo_id = name
    try:
        repo_id, expanded = expand_name(api, name)
        info = api.model_info(repo_id, revision=rev, files_metadata=True)
    except network_errors() as exc:
        raise _fail(map_hub_error(exc, repo_id, rev), repo_id, expanded=expanded)
    except Exception as exc:
        err = map_hub_error(exc, repo_id, rev)
        raise _fail(err, repo_id, "access_denied" if err.type == "access_denied" else "failed", expanded)

    commit = info.sha
    siblings = info.siblings or []
    # Gated repos answer repo info to everyone; the files tell whether this token may read them.
    if getattr(info, "gated", False) and siblings:
        from huggingface_hub import get_hf_file_metadata, hf_hub_url

        try:
            get_hf_file_metadata(hf_hub_url(repo_id, siblings[0].rfilename, revision=commit, endpoint=api.endpoint))
        except Exception as exc:
            err = map_hub_error(exc, repo_id, rev)
            raise _fail(err, repo_id, "access_denied" if err.type == "access_denied" else "failed", expanded)

    present, problem, partial = _cached_state(repo_id, commit)
    label = f"{repo_id}@{rev}" if rev else repo_id
    if present and problem is None and not force:
        return Envelope.success("pull", _data(
            repo_id, "already_exists", f"Model {label} already exists in cache", expanded, commit=commit))
    if present and problem is not None and not force:
        if confirm_repair is None or not confirm_repair(problem):
            err = MlxkError("unhealthy", f"{label} is in the cache but unhealthy ({problem}); run 'mlxk pull {spec} --force' to repair it")
            raise _fail(err, repo_id, "failed", expanded)
        force = True

    needed = sum(int(s.size or 0) for s in siblings)
    try:
        check_disk(needed, hub_cache_dir())
    except MlxkError as err:
        raise _fail(err, repo_id, "failed", expanded)

    if force:
        repo = find_repo(repo_id)
        for blob in incomplete_blobs(repo) if repo else []:
            blob.unlink(missing_ok=True)

    # A branch or tag goes as given (so refs/<name> is written); a commit prefix as the full commit.
    revision = commit if (rev and _HEX.match(rev.lower()) and commit.startswith(rev.lower())) else (rev or "main")
    try:
        _download(repo_id, revision, force, progress)
    except KeyboardInterrupt:
        raise _fail(MlxkError(
            "cancelled",
            f"Download of {label} interrupted; the partial files stay in the cache. "
            f"Run 'mlxk pull {spec}' to resume or 'mlxk pull {spec} --force' to repair.",
        ), repo_id, "failed", expanded)
    except Exception as exc:
        err = map_hub_error(exc, repo_id, rev)
        raise _fail(err, repo_id, "access_denied" if err.type == "access_denied" else "failed", expanded)

    present, problem, partial = _cached_state(repo_id, commit)
    if not present or problem is not None:
        err = MlxkError("download_failed", f"Downloaded {label} but it is not healthy: {problem or 'snapshot missing'}")
        raise _fail(err, repo_id, "failed", expanded)
    from mlxk.store.names import resolve

    model = None
    try:
        from mlxk.inspection.model_object import inspect

        model = inspect(resolve(f"{repo_id}@{commit}")).model_object()
    except MlxkError:
        pass
    verb = "Repaired" if force else "Successfully downloaded"
    return Envelope.success("pull", _data(
        repo_id, "success", f"{verb} model {label}", expanded, commit=commit, model_info=model))


def interactive() -> bool:
    return sys.stdin.isatty() and sys.stderr.isatty()
