"""``push``: upload a workspace folder to a (private) Hub repo.

The workspace is the source of truth for the target branch: new and changed files are
uploaded, files the branch has but the workspace lacks are deleted (``.gitattributes``
is kept), and nothing is committed when nothing differs. The diff is computed from the
remote tree listing (git blob ids, LFS sha256), so ``--dry-run`` and the real push report
the same ``added``/``modified``/``deleted``.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
from pathlib import Path

from mlxk.contract import Envelope, MlxkError
from mlxk.hub.common import hf_api, map_hub_error, network_errors
from mlxk.store.hashing import file_sha256

DEFAULT_EXCLUDES = (".git/", ".DS_Store", "__pycache__/", ".venv/", "venv/", "*.pyc", ".mlxk-clone.json")
IGNORE_FILE = ".hfignore"
DISCLAIMER = "Experimental feature: review the upload on the Hub."
KEEP_REMOTE = (".gitattributes",)


# --- file selection ------------------------------------------------------------

def _parse_ignore(lines: list[str]) -> list[tuple[str, bool, bool, bool]]:
    """(pattern, negated, dir_only, anchored) per gitignore-like line."""
    rules = []
    for raw in lines:
        line = raw.rstrip("\n").rstrip()
        if not line or line.startswith("#"):
            continue
        neg = line.startswith("!")
        if neg:
            line = line[1:]
        dir_only = line.endswith("/")
        line = line.strip("/") if dir_only else line
        anchored = "/" in line.lstrip("/") or line.startswith("/")
        rules.append((line.lstrip("/"), neg, dir_only, anchored))
    return rules


def _matches(rule: tuple[str, bool, bool, bool], rel: str) -> bool:
    pattern, _, dir_only, anchored = rule
    parts = rel.split("/")
    # a directory pattern matches any parent directory; a file pattern the path or a parent
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts) - (1 if dir_only else 0))]
    for cand in candidates:
        if anchored:
            if fnmatch.fnmatchcase(cand, pattern):
                return True
        elif fnmatch.fnmatchcase(cand.rsplit("/", 1)[-1], pattern):
            return True
    return False


def workspace_files(root: Path) -> dict[str, Path]:
    """The files push would upload: default excludes, then ``.hfignore`` (last match wins)."""
    rules = _parse_ignore(list(DEFAULT_EXCLUDES))
    ignore = root / IGNORE_FILE
    if ignore.is_file():
        rules += _parse_ignore(ignore.read_text(encoding="utf-8").splitlines())
    out: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for fn in sorted(filenames):
            p = Path(dirpath) / fn
            rel = p.relative_to(root).as_posix()
            excluded = False
            for rule in rules:
                if _matches(rule, rel):
                    excluded = not rule[1]
            if not excluded and p.is_file():
                out[rel] = p
    return out


def _git_blob_sha1(path: Path) -> str:
    h = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def diff(local: dict[str, Path], remote: dict) -> tuple[list[str], list[str], list[str]]:
    """(added, modified, deleted) of the workspace against a remote {path: RepoFile}."""
    added, modified = [], []
    for rel, path in local.items():
        entry = remote.get(rel)
        if entry is None:
            added.append(rel)
            continue
        if entry.size != path.stat().st_size:
            modified.append(rel)
        elif entry.lfs is not None:
            if entry.lfs.sha256 != file_sha256(path):
                modified.append(rel)
        elif entry.blob_id != _git_blob_sha1(path):
            modified.append(rel)
    deleted = sorted(r for r in remote if r not in local and r not in KEEP_REMOTE)
    return sorted(added), sorted(modified), deleted


# --- check-only -------------------------------------------------------------------

def workspace_health(root: Path, files: dict[str, Path]) -> dict:
    """Local, content-oriented validation (the same checks as ``health``, all of them)."""
    import json

    from mlxk.inspection import health
    from mlxk.inspection.files import ModelFiles
    from mlxk.inspection.model_object import is_gguf

    mf = ModelFiles.read(root)
    mf.files = {k: v for k, v in mf.files.items() if k in files}
    anomalies = health.file_problems(mf, is_gguf(mf, None))
    valid_json = False
    if "config.json" in files:
        try:
            json.loads(files["config.json"].read_text(encoding="utf-8"))
            valid_json = True
        except (OSError, ValueError):
            pass
    weights = [n for n in files if n.endswith((".safetensors", ".bin", ".gguf", ".npz"))]
    index_name = next((n for n in ("model.safetensors.index.json", "pytorch_model.bin.index.json") if n in files), None)
    missing: list[str] = []
    if index_name:
        idx = mf.load_json(index_name) or {}
        wm = idx.get("weight_map") if isinstance(idx, dict) else None
        missing = sorted({s for s in (wm or {}).values() if s not in files})
    return {
        "files_count": len(files),
        "total_bytes": sum(p.stat().st_size for p in files.values()),
        "config": {"exists": "config.json" in files, "valid_json": valid_json, "path": "config.json" if "config.json" in files else None},
        "weights": {
            "count": len(weights),
            "formats": sorted({n.rsplit(".", 1)[-1] for n in weights}),
            "index": {"has_index": index_name is not None, "missing": missing},
            "pattern_complete": health.check_shards(mf) is None,
        },
        "anomalies": anomalies,
        "healthy": not anomalies,
    }


# --- push -------------------------------------------------------------------------

def push(local_dir: str, repo_id: str, *, private: bool = False, create: bool = False, branch: str = "main",
         message: str | None = None, check_only: bool = False, dry_run: bool = False) -> Envelope:
    from mlxk.store.names import validate_name

    endpoint = (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
    data = {
        "repo_id": repo_id, "branch": branch, "repo_url": f"{endpoint}/{repo_id}",
        "commit_sha": None, "commit_url": None, "uploaded_files_count": None, "local_files_count": None,
        "no_changes": None, "created_repo": False, "experimental": True, "disclaimer": DISCLAIMER,
    }

    def fail(type_: str, msg: str) -> MlxkError:
        return MlxkError(type_, msg, data=dict(data))

    try:
        validate_name(repo_id)
    except MlxkError as err:
        raise fail("ValidationError", err.message)
    if "/" not in repo_id:
        raise fail("ValidationError", f"Push needs a full 'org/model' repo id, got '{repo_id}'")
    root = Path(local_dir).expanduser()
    if not root.is_dir():
        raise fail("ValidationError", f"Workspace '{local_dir}' is not a directory")
    files = workspace_files(root)
    data["local_files_count"] = len(files)

    if check_only:
        data["workspace_health"] = workspace_health(root, files)
        data["message"] = "Check-only: no upload performed."
        return Envelope.success("push", data)

    if not private:
        raise fail("ValidationError", "Refusing to push without --private (no accidental public uploads)")
    if not files:
        raise fail("ValidationError", f"Workspace '{local_dir}' has no files to upload")
    from huggingface_hub import get_token

    if not get_token():  # as huggingface_hub finds it: HF_TOKEN, then the file `hf auth login` wrote
        raise fail("auth_error", "No Hugging Face token: set HF_TOKEN or run `hf auth login`")

    from huggingface_hub import CommitOperationAdd, CommitOperationDelete
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError
    from huggingface_hub.hf_api import RepoFile

    api = hf_api()
    try:
        try:
            api.repo_info(repo_id)
            exists = True
        except RepositoryNotFoundError:
            exists = False
        if not exists and not create:
            raise fail("push_failed", f"Repository '{repo_id}' not found (or no access); use --create to create it")
        if not exists and not dry_run:
            api.create_repo(repo_id, private=True, exist_ok=True)
            data["created_repo"] = True
        base_rev = branch
        branch_exists = exists or data["created_repo"]
        if branch_exists and branch != "main":
            try:
                api.repo_info(repo_id, revision=branch)
            except RevisionNotFoundError:
                branch_exists = False
                base_rev = "main"
        remote: dict = {}
        if exists or data["created_repo"]:
            remote = {f.path: f for f in api.list_repo_tree(repo_id, revision=base_rev, recursive=True)
                      if isinstance(f, RepoFile)}
        added, modified, deleted = diff(files, remote)
        data["change_summary"] = {"added": len(added), "modified": len(modified), "deleted": len(deleted)}
        data.update(added=added, modified=modified, deleted=deleted)
        changed = bool(added or modified or deleted)
        if dry_run:
            data["no_changes"] = not changed
            data["uploaded_files_count"] = 0
            what = "would create the repo and " if not exists else ""
            data["message"] = (f"Dry run: {what}upload {len(added) + len(modified)} file(s), delete {len(deleted)}; "
                               "nothing was uploaded.")
            return Envelope.success("push", data)
        if not branch_exists and branch != "main":
            api.create_branch(repo_id, branch=branch, exist_ok=True)
        if not changed:
            data.update(no_changes=True, uploaded_files_count=0,
                        message="No files changed; skipped empty commit.")
            return Envelope.success("push", data)
        ops = [CommitOperationAdd(path_in_repo=r, path_or_fileobj=str(files[r])) for r in added + modified]
        ops += [CommitOperationDelete(path_in_repo=r) for r in deleted]
        info = api.create_commit(repo_id, operations=ops, revision=branch,
                                 commit_message=message or f"Upload {len(added) + len(modified)} file(s) with mlxk")
    except MlxkError:
        raise
    except network_errors() as exc:
        err = map_hub_error(exc, repo_id, branch, fail_type="push_failed")
        raise fail(err.type, err.message)
    except Exception as exc:
        err = map_hub_error(exc, repo_id, branch, fail_type="push_failed")
        raise fail(err.type, err.message)
    data.update(commit_sha=info.oid, commit_url=info.commit_url, uploaded_files_count=len(added) + len(modified),
                no_changes=False, message=f"Pushed {len(added) + len(modified)} file(s) to {repo_id}@{branch}.")
    return Envelope.success("push", data)
