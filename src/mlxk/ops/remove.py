"""``rm``: plan the deletion, check it is safe, then execute it.

Deletion goes through huggingface_hub's DeleteCacheStrategy (which drops blobs no
other revision uses and refs that pointed at the revision). Repos huggingface_hub
refuses to scan are removed folder-whole, after checking the folder is inside the cache.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from mlxk.contract import Envelope, MlxkError
from mlxk.store.cache import CachedRepo, hub_cache_dir, lock_files
from mlxk.store.names import is_path_spec, resolve, split_hash


@dataclass(frozen=True)
class RemovalPlan:
    repo: CachedRepo
    commits: tuple[str, ...]  # what goes; all of them means the whole repo
    whole_repo: bool
    locks: tuple[Path, ...]

    @property
    def label(self) -> str:
        if self.whole_repo:
            return self.repo.repo_id
        return f"{self.repo.repo_id}@{self.commits[0][:8]}"


def plan(spec: str) -> RemovalPlan:
    if is_path_spec(spec):
        raise MlxkError(
            "ValidationError",
            f"'{spec}' is a workspace (a folder you manage); rm only deletes models from the Hugging Face cache. "
            "Delete the folder yourself if you no longer need it.",
        )
    try:
        ref = resolve(spec)
    except MlxkError as err:
        if err.type == "ambiguous_match":
            err.data = {"matches": err.extra.get("matches", [])}
            err.message += ". Please specify which model to delete."
        raise
    repo = ref.repo
    assert repo is not None
    _, pin = split_hash(spec)
    if pin and ref.snapshot is not None and len(repo.snapshots) > 1:
        commits, whole = (ref.snapshot.commit,), False
    else:
        commits, whole = tuple(s.commit for s in repo.snapshots), True
    return RemovalPlan(repo, commits, whole, tuple(lock_files(repo)))


def _inside_cache(path: Path) -> bool:
    cache = hub_cache_dir().resolve()
    target = path.resolve()
    return target != cache and cache in target.parents


def execute(p: RemovalPlan, force: bool) -> None:
    cache = hub_cache_dir()
    if not _inside_cache(p.repo.path):
        raise MlxkError("PermissionError", f"Refusing to delete outside the cache: {p.repo.repo_id}")
    try:
        if p.repo.scan_problem is None and p.commits:
            from huggingface_hub import scan_cache_dir

            strategy = scan_cache_dir(cache).delete_revisions(*p.commits)
            targets = [*strategy.repos, *strategy.snapshots, *strategy.refs, *strategy.blobs]
            if not all(_inside_cache(t) for t in targets):
                raise MlxkError("PermissionError", f"Refusing to delete outside the cache: {p.repo.repo_id}")
            strategy.execute()
            if p.whole_repo and p.repo.path.exists():
                shutil.rmtree(p.repo.path)
        elif p.whole_repo:
            shutil.rmtree(p.repo.path)
        else:
            shutil.rmtree(p.repo.path / "snapshots" / p.commits[0])
        if force and p.whole_repo:
            lock_dir = cache / ".locks" / p.repo.path.name
            if lock_dir.is_dir() and _inside_cache(lock_dir):
                shutil.rmtree(lock_dir)
    except PermissionError as exc:
        raise MlxkError(
            "PermissionError",
            f"Permission denied: cannot delete {exc.filename and Path(exc.filename).name or 'files'} of {p.label}",
            data={"model": p.repo.repo_id},
        ) from exc
    except OSError as exc:
        raise MlxkError("OperationError", f"Deleting {p.label} failed: {exc.strerror}", data={"model": p.repo.repo_id}) from exc


def remove(spec: str, force: bool = False, confirm: Callable[[RemovalPlan], bool] | None = None) -> Envelope:
    p = plan(spec)
    if p.locks and not force:
        raise MlxkError(
            "locks_present",
            "Model has active locks. Use --force to override.",
            data={
                "model": p.repo.repo_id,
                "locks_detected": True,
                "lock_files": [str(lock.relative_to(hub_cache_dir())) for lock in p.locks],
            },
        )
    if confirm is not None and not force and not confirm(p):
        return Envelope.success("rm", {"model": p.repo.repo_id, "action": "cancelled", "message": "Deletion cancelled"})
    execute(p, force)
    what = "revision" if not p.whole_repo else "model"
    return Envelope.success(
        "rm",
        {
            "model": p.repo.repo_id,
            "action": "deleted",
            "message": f"Successfully deleted {p.label}",
            "scope": what,
            "revisions_deleted": [c for c in p.commits],
            "locks_removed": len(p.locks) if force else 0,
        },
    )
