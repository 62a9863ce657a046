"""``rm``: plan the deletion inside the named repo only, execute it whole, report what went.

The plan is huggingface_hub's DeleteCacheStrategy (it drops blobs no other revision
uses, refs that pointed at the revision, and handles its shared blob store), computed
from a cache view that holds the named repo and nothing else: ``delete_revisions`` on
the full scan picks the first repo holding a commit anywhere in the cache, so a copied
or renamed repo folder (same commits) would take the wrong one with it. Every path the
plan touches must lie inside the repo folder. Repos huggingface_hub refuses to scan
are removed folder-whole (or snapshot-wise) after the same check.

Once the deletion starts it runs to its end: SIGINT/SIGTERM are held until it is done,
so the answer (success, or the precise error) always agrees with what is on disk.
huggingface_hub logs and skips paths it cannot delete; the result is checked
afterwards and anything left is an error that names it.
"""

from __future__ import annotations

import shutil
import signal
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from mlxk.contract import Envelope, MlxkError
from mlxk.store.cache import CachedRepo, hub_cache_dir, lock_files
from mlxk.store.names import full_path, is_path_spec, resolve, split_hash

HELD_SIGNALS = (signal.SIGINT, signal.SIGTERM)


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
        where = str(full_path(spec))
        raise MlxkError(
            "workspace_model",
            f"'{where}' is a workspace (a folder you manage), not a model in the cache: rm only deletes models "
            "from the Hugging Face cache. Delete the folder yourself if you no longer need it.",
            data={"model": where},
        )
    try:
        ref = resolve(spec)
    except MlxkError as err:
        if err.type == "ambiguous_match":
            err.data = {"matches": err.extra.get("matches", [])}
            err.message += ". Please specify which model to delete."
        elif err.type == "model_not_found" and not err.extra.get("available_hashes"):
            err.message = f"No models found matching '{spec}'"
        raise
    repo = ref.repo
    assert repo is not None
    _, pin = split_hash(spec)
    if pin and ref.snapshot is not None and len(repo.snapshots) > 1:
        commits, whole = (ref.snapshot.commit,), False
    else:
        commits, whole = tuple(s.commit for s in repo.snapshots), True
    return RemovalPlan(repo, commits, whole, tuple(lock_files(repo)))


def _inside(folder: Path, path: Path) -> bool:
    """``path`` is ``folder`` or below it (no symlink of the path itself is followed)."""
    root = folder.resolve()
    target = path.parent.resolve() / path.name
    return target == root or root in target.parents


@dataclass(frozen=True)
class Stage:
    """One step of a deletion: huggingface_hub's strategy for it (None: plain deletes) and its paths."""

    strategy: Any
    paths: tuple[Path, ...]


def stages(p: RemovalPlan) -> list[Stage]:
    """What to delete, in order: folders, snapshots and refs first; blobs only once nothing links to them.

    Built from a cache view that holds only this repo. huggingface_hub's own execute()
    goes on after a failed step, which would delete blobs that a surviving snapshot still
    links to; running it in two stages, each checked, stops there instead.
    """
    if p.repo.scan_problem is not None or not p.commits:
        path = p.repo.path if p.whole_repo else p.repo.path / "snapshots" / p.commits[0]
        return [Stage(None, (path,))]
    from dataclasses import replace

    from huggingface_hub import HFCacheInfo, scan_cache_dir

    cache = hub_cache_dir()
    mine = [r for r in scan_cache_dir(cache).repos if r.repo_path.resolve() == p.repo.path.resolve()]
    if len(mine) != 1:
        raise MlxkError("OperationError", f"{p.label} changed in the cache while planning its deletion; nothing deleted")
    view = HFCacheInfo(
        size_on_disk=mine[0].size_on_disk, repos=frozenset(mine), incomplete_files=frozenset(), warnings=[],
        cache_dir=cache,
    )
    plan_ = view.delete_revisions(*p.commits)
    links = replace(plan_, blobs=frozenset())
    blobs = replace(plan_, repos=frozenset(), snapshots=frozenset(), refs=frozenset(), files=frozenset())
    first = (*plan_.repos, *plan_.snapshots, *plan_.refs, *plan_.files) + ((p.repo.path,) if p.whole_repo else ())
    return [Stage(links, first), Stage(blobs, tuple(plan_.blobs))]


@contextmanager
def held_signals(for_good: bool = False) -> Iterator[list[int]]:
    """SIGINT/SIGTERM wait until the block ends (main thread only); yields the ones that came.

    ``for_good``: afterwards they stay ignored, for a CLI whose remaining work is to print
    the answer about what was deleted (an interrupt there would leave success unreported).
    """
    import threading

    came: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield came
        return
    previous = {sig: signal.signal(sig, lambda signum, frame: came.append(signum)) for sig in HELD_SIGNALS}
    try:
        yield came
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_IGN if for_good else handler)


@contextmanager
def _quiet_hub_logger() -> Iterator[None]:
    import logging

    hub_logger = logging.getLogger("huggingface_hub.utils._cache_manager")
    was = hub_logger.disabled
    hub_logger.disabled = True
    try:
        yield
    finally:
        hub_logger.disabled = was


def _delete(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def execute(p: RemovalPlan, force: bool, hold_signals_after: bool = False) -> list[int]:
    """Delete what the plan names, whole; returns the signals that arrived (and waited) meanwhile."""
    cache = hub_cache_dir()
    if not _inside(cache, p.repo.path) or p.repo.path.resolve() == cache.resolve():
        raise MlxkError("PermissionError", f"Refusing to delete outside the cache: {p.repo.repo_id}")
    steps = stages(p)
    stray = [t for step in steps for t in step.paths if not _inside(p.repo.path, t)]
    if stray:
        raise MlxkError("PermissionError", f"Refusing to delete outside {p.repo.path.name}: {stray[0].name}")
    lock_dir = cache / ".locks" / p.repo.path.name
    with held_signals(for_good=hold_signals_after) as came:
        try:
            for step in steps:
                if step.strategy is not None:
                    with _quiet_hub_logger():  # it logs and skips what it cannot delete: retried below
                        step.strategy.execute()
                for target in step.paths:  # raises the real error for anything left
                    if target.is_symlink() or target.exists():
                        _delete(target)
            if force and p.whole_repo and lock_dir.is_dir() and _inside(cache / ".locks", lock_dir):
                shutil.rmtree(lock_dir)
        except PermissionError as exc:
            _raise_partial(p, exc.filename, "Permission denied", "PermissionError")
        except OSError as exc:
            _raise_partial(p, exc.filename, exc.strerror or str(exc), "OperationError")
    return came


def _raise_partial(p: RemovalPlan, filename: str | None, why: str, kind: str) -> None:
    """A deletion that stopped half-way: say which model, what is left, and that the model is now partial."""
    name = Path(filename).name if filename else "files"
    raise MlxkError(
        kind,
        f"{why}: cannot delete {name} of {p.label}; the deletion stopped there and part of it is gone. "
        f"Run `mlxk health {p.repo.repo_id}` to see what remains, fix the permissions and run rm again.",
        data={"model": p.repo.repo_id},
    )


def remove(
    spec: str,
    force: bool = False,
    confirm: Callable[[RemovalPlan], bool] | None = None,
    hold_signals_after: bool = False,
) -> Envelope:
    """Delete ``spec``'s repo (or its pinned revision) from the cache.

    ``hold_signals_after`` is for the CLI: once deletion starts, interrupts stay ignored
    until the process has printed its answer and exited.
    """
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
    came = execute(p, force, hold_signals_after)
    message = f"Successfully deleted {p.label}"
    if came:
        message += " (interrupted during the deletion: it was completed so the cache stays consistent)"
    return Envelope.success(
        "rm",
        {
            "model": p.repo.repo_id,
            "action": "deleted",
            "message": message,
            "scope": "revision" if not p.whole_repo else "model",
            "revisions_deleted": list(p.commits),
            "locks_removed": len(p.locks) if force else 0,
        },
    )
