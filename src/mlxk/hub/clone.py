"""``clone``: a workspace copy of a cached model (copy-on-write where the filesystem offers it).

The cache is only read. The copy is built in a hidden sibling folder and renamed into
place, so an interrupted clone never leaves a half-filled target behind.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from mlxk.contract import Envelope, MlxkError

SENTINEL = ".mlxk-clone.json"
_FICLONE = 0x40049409


def _data(model, status, target, message="", expanded=None, **extra):
    return {"model": model, "clone_status": status, "message": message, "target_dir": target,
            "expanded_name": expanded, **extra}


def _fail(err: MlxkError, model, status, target, expanded=None) -> MlxkError:
    err.data = _data(model, status, target, "", expanded)
    return err


def _clonefile_darwin(src: Path, dst: Path) -> bool:
    import ctypes

    try:
        libc = ctypes.CDLL("libSystem.dylib", use_errno=True)
        return libc.clonefile(os.fsencode(src), os.fsencode(dst), 0) == 0
    except (OSError, AttributeError):
        return False


def copy_file(src: Path, dst: Path) -> str:
    """Copy one file; returns "reflink" when the filesystem shared the blocks, else "copy"."""
    if sys.platform == "darwin" and _clonefile_darwin(src, dst):
        return "reflink"
    if sys.platform.startswith("linux"):
        import fcntl

        with open(src, "rb") as fs, open(dst, "wb") as fd:
            try:
                fcntl.ioctl(fd.fileno(), _FICLONE, fs.fileno())
                return "reflink"
            except OSError:
                shutil.copyfileobj(fs, fd, 1024 * 1024)
        shutil.copystat(src, dst, follow_symlinks=True)
        return "copy"
    shutil.copy2(src, dst, follow_symlinks=True)
    return "copy"


def _check_target(target: str) -> Path:
    path = Path(target).expanduser()
    if path.exists() and not path.is_dir():
        raise MlxkError("ValidationError", f"Target '{target}' exists and is not a directory")
    if path.is_dir() and any(path.iterdir()):
        raise MlxkError("ValidationError", f"Target directory '{target}' already exists and is not empty")
    return path


def _resolve_or_pull(spec: str, target: str):
    from mlxk.store.names import resolve

    try:
        return resolve(spec), None
    except MlxkError as err:
        if err.type != "model_not_found":
            raise _fail(err, None, "error", target)
    # Not in the cache: pull it (any revision form pull accepts), then take what it fetched.
    from mlxk.hub.pull import pull

    try:
        env = pull(spec)
    except MlxkError as err:
        status = {"access_denied": "access_denied", "ValidationError": "error"}.get(err.type, "failed")
        etype = "clone_failed" if err.type == "download_failed" else err.type
        model = (err.data or {}).get("model")
        raise _fail(MlxkError(etype, err.message, **err.extra), model, status, target)
    return resolve(f"{env.data['model']}@{env.data['commit']}"), env.data.get("expanded_name")


def clone(spec: str, target: str) -> Envelope:
    path = None
    try:
        path = _check_target(target)
    except MlxkError as err:
        raise _fail(err, None, "error", target)

    ref, expanded = _resolve_or_pull(spec, target)
    if not ref.cached:
        raise _fail(MlxkError("ValidationError", "clone copies a cached model; the source is already a workspace"),
                    None, "error", target)
    if ref.path is None or ref.snapshot is None:
        raise _fail(MlxkError("unhealthy", f"{ref.name} has no complete snapshot; run 'mlxk pull {ref.name} --force'"),
                    ref.name, "failed", target, expanded)
    from mlxk.inspection.model_object import inspect

    source = inspect(ref)
    if not source.healthy:
        raise _fail(MlxkError("unhealthy", f"{ref.name} is unhealthy in the cache ({source.health_reason}); "
                                           f"run 'mlxk pull {ref.name} --force' first"), ref.name, "failed", target, expanded)

    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.clone-", dir=parent))
    except OSError as exc:
        raise _fail(MlxkError("FilesystemError", f"Cannot create '{target}': {exc.strerror or exc}"),
                    ref.name, "filesystem_error", target, expanded)
    methods: set[str] = set()
    try:
        for src in sorted(ref.path.rglob("*")):
            rel = src.relative_to(ref.path)
            if src.is_dir():
                continue
            dst = staging / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            methods.add(copy_file(src.resolve(), dst))
        sentinel = {
            "source_repo": ref.name,
            "source_commit": ref.commit,
            "cloned_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "tool": "mlxk clone",
        }
        (staging / SENTINEL).write_text(json.dumps(sentinel, indent=2) + "\n", encoding="utf-8")
        if path.is_dir():
            path.rmdir()  # empty (checked above)
        os.replace(staging, path)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise _fail(MlxkError("FilesystemError", f"Clone into '{target}' failed: {exc.strerror or exc}"),
                    ref.name, "filesystem_error", target, expanded)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

    from mlxk.store.names import workspace_ref

    result = inspect(workspace_ref(str(path)))
    method = "reflink" if methods == {"reflink"} else "copy"
    health = "healthy" if result.healthy else "unhealthy"
    return Envelope.success("clone", _data(
        ref.name, "success", target,
        f"Cloned {ref.name}@{(ref.commit or '')[:8]} to {target} ({method}; {health})", expanded,
        commit=ref.commit, method=method, health_check=True, health=health,
        **({"health_reason": result.health_reason} if result.health_reason else {}),
    ))
