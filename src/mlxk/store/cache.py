"""Where the Hugging Face cache is and what model repos it holds.

The scan itself is ``huggingface_hub.scan_cache_dir``; we only add what it refuses to
report: repos it rejects as corrupted (a broken symlink, a dangling ref) are still
listed, by a shallow fallback scan, so that ``health`` can name them unhealthy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

MODEL_PREFIX = "models--"


def hub_cache_dir() -> Path:
    """The hub cache, resolved with huggingface_hub's own precedence, read at call time.

    ``huggingface_hub.constants`` freezes these at import; reading the environment
    here lets one process (a server, a test) follow changes to it.
    """
    home = os.path.expandvars(
        os.path.expanduser(
            os.getenv(
                "HF_HOME",
                os.path.join(os.getenv("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache")), "huggingface"),
            )
        )
    )
    legacy = os.getenv("HUGGINGFACE_HUB_CACHE", os.path.join(home, "hub"))
    return Path(os.path.expandvars(os.path.expanduser(os.getenv("HF_HUB_CACHE", legacy))))


def mlxk_cache_dir() -> Path:
    """mlxk's own cache (prefix-cache snapshots, CPU kernels): MLXK_CACHE_DIR, else under XDG_CACHE_HOME."""
    base = os.environ.get("MLXK_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "mlxk")
    return Path(base)


def repo_folder_name(repo_id: str) -> str:
    return MODEL_PREFIX + repo_id.replace("/", "--")


@dataclass(frozen=True)
class Snapshot:
    commit: str
    path: Path
    size_bytes: int
    last_modified: float
    refs: frozenset[str]


@dataclass(frozen=True)
class CachedRepo:
    """One ``models--org--name`` folder.

    ``scan_problem`` is huggingface_hub's complaint when it rejected the repo; the
    snapshots are then found by the fallback scan (sizes count only readable files).
    """

    repo_id: str
    path: Path
    snapshots: tuple[Snapshot, ...]
    scan_problem: str | None = None

    def selected(self, commit_prefix: str | None = None) -> Snapshot | None:
        """The snapshot a name means: the given prefix, else refs/main, else the newest."""
        if commit_prefix:
            hits = [s for s in self.snapshots if s.commit.startswith(commit_prefix.lower())]
            return hits[0] if len(hits) == 1 else None
        for snap in self.snapshots:  # the scan read the refs: no second read of refs/main
            if "main" in snap.refs:
                return snap
        return max(self.snapshots, key=lambda s: s.last_modified, default=None)


def scan(cache_dir: Path | None = None) -> list[CachedRepo]:
    """Every model repo in the cache, sorted by name."""
    cache_dir = cache_dir or hub_cache_dir()
    if not cache_dir.is_dir():
        return []
    from huggingface_hub import scan_cache_dir

    info = scan_cache_dir(cache_dir)
    repos: dict[str, CachedRepo] = {}
    for repo in info.repos:
        if repo.repo_type != "model":
            continue
        snaps = tuple(
            Snapshot(r.commit_hash, r.snapshot_path, r.size_on_disk, r.last_modified, r.refs) for r in repo.revisions
        )
        repos[repo.repo_path.name] = CachedRepo(repo.repo_id, repo.repo_path, snaps)
    problems = {_path_in(str(w), cache_dir): str(w) for w in info.warnings}
    for entry in cache_dir.iterdir():
        if entry.name.startswith(MODEL_PREFIX) and entry.name not in repos and entry.is_dir():
            problem = problems.get(entry.name) or "Cache entry could not be scanned"
            repos[entry.name] = fallback_repo(entry, problem)
    return sorted(repos.values(), key=lambda r: r.repo_id.lower())


def shallow_scan(cache_dir: Path | None = None) -> list[CachedRepo]:
    """Every model repo, read from the folders alone: no huggingface_hub import, no blob resolution.

    For ``health``, which needs each repo's snapshots and refs and then checks the files
    itself; ``scan`` (huggingface_hub's full scan) stays the source for sizes and ``rm``.
    """
    cache_dir = cache_dir or hub_cache_dir()
    if not cache_dir.is_dir():
        return []
    repos = [fallback_repo(entry, None, sizes=False) for entry in cache_dir.iterdir()
             if entry.name.startswith(MODEL_PREFIX) and entry.is_dir()]
    return sorted(repos, key=lambda r: r.repo_id.lower())


def _path_in(message: str, cache_dir: Path) -> str | None:
    """The ``models--*`` folder a CorruptedCacheException message talks about."""
    root = str(cache_dir.resolve()) + os.sep
    idx = message.find(root)
    if idx < 0:
        return None
    return message[idx + len(root):].split(os.sep, 1)[0].rstrip(").:'\"")


def fallback_repo(repo_path: Path, problem: str | None, sizes: bool = True) -> CachedRepo:
    """A shallow scan of one repo folder (broken symlinks tolerated).

    Used for repos huggingface_hub rejected, and (``sizes=False``) by ``shallow_scan``:
    then only a repo without a usable refs/main gets its snapshots' file times read,
    because ``CachedRepo.selected`` needs them to pick the newest.
    """
    repo_id = repo_path.name[len(MODEL_PREFIX):].replace("--", "/")
    refs: dict[str, set[str]] = {}
    for ref_name, ref_path in _files_under(repo_path / "refs"):
        try:
            refs.setdefault(ref_path.read_text().strip(), set()).add(ref_name)
        except OSError:
            pass
    try:
        with os.scandir(repo_path / "snapshots") as it:
            revs = sorted(Path(e.path) for e in it if e.is_dir())
    except OSError:
        revs = []
    measure = sizes or (len(revs) > 1 and not any("main" in refs.get(rev.name, ()) for rev in revs))
    snaps = []
    for rev in revs:
        size, newest = _measure(rev) if measure else (0, 0.0)
        snaps.append(Snapshot(rev.name, rev, size, newest or rev.stat().st_mtime, frozenset(refs.get(rev.name, ()))))
    return CachedRepo(repo_id, repo_path, tuple(snaps), problem)


def _files_under(folder: Path, prefix: str = "") -> list[tuple[str, Path]]:
    """(relative posix name, path) of the files below ``folder`` (refs/main, refs/pr/1)."""
    out: list[tuple[str, Path]] = []
    try:
        with os.scandir(folder) as it:
            for entry in it:
                if entry.is_dir(follow_symlinks=False):
                    out.extend(_files_under(Path(entry.path), f"{prefix}{entry.name}/"))
                elif entry.is_file():
                    out.append((prefix + entry.name, Path(entry.path)))
    except OSError:
        pass
    return out


def _measure(rev: Path) -> tuple[int, float]:
    """Bytes and newest mtime of a snapshot's readable files."""
    size, newest = 0, 0.0
    for f in rev.rglob("*"):
        try:
            st = f.stat()
        except OSError:
            continue  # broken symlink: health names it
        if not f.is_dir():
            size += st.st_size
            newest = max(newest, st.st_mtime)
    return size, newest


def find_repo(repo_id: str, cache_dir: Path | None = None) -> CachedRepo | None:
    """One repo without scanning the whole cache (used after pull, convert --into-cache)."""
    cache_dir = cache_dir or hub_cache_dir()
    path = cache_dir / repo_folder_name(repo_id)
    if not path.is_dir():
        return None
    from huggingface_hub.errors import CorruptedCacheException
    from huggingface_hub.utils._cache_manager import _scan_cached_repo

    try:
        repo = _scan_cached_repo(path)
    except CorruptedCacheException as exc:
        return fallback_repo(path, str(exc))
    snaps = tuple(Snapshot(r.commit_hash, r.snapshot_path, r.size_on_disk, r.last_modified, r.refs) for r in repo.revisions)
    return CachedRepo(repo.repo_id, repo.repo_path, snaps)


def lock_files(repo: CachedRepo, cache_dir: Path | None = None) -> list[Path]:
    """Lock files huggingface_hub holds for this repo (``<cache>/.locks/models--org--name``)."""
    cache_dir = cache_dir or hub_cache_dir()
    lock_dir = cache_dir / ".locks" / repo.path.name
    if not lock_dir.is_dir():
        return []
    return sorted(p for p in lock_dir.rglob("*.lock") if p.is_file())


def incomplete_blobs(repo: CachedRepo) -> list[Path]:
    try:
        with os.scandir(repo.path / "blobs") as it:
            return sorted(Path(e.path) for e in it if e.name.endswith(".incomplete"))
    except OSError:
        return []
