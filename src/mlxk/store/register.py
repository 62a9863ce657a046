"""Put a model folder into the Hugging Face cache as a real snapshot.

Layout as huggingface_hub writes it: ``blobs/<sha256>``, ``snapshots/<commit>/<file>``
as relative symlinks, ``refs/main``. There is no Hub commit for a local import, so the
commit is the SHA-1 of the file list and content hashes: the same content gives the same
snapshot, which makes a repeated import a no-op. Every step is temp + rename, so an
interrupted registration leaves no half snapshot behind.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from mlxk.store.cache import hub_cache_dir, repo_folder_name
from mlxk.store.hashing import file_sha256


def atomic_write(path: Path, text: str) -> None:
    """Readers see the old text or the new, never half of it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def register_folder(folder: Path, repo_id: str, move: bool = False) -> str:
    """Add ``folder``'s files as a snapshot of ``repo_id`` and point refs/main at it; returns the commit."""
    repo = hub_cache_dir() / repo_folder_name(repo_id)
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    (repo / "snapshots").mkdir(exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    digests = {f.relative_to(folder).as_posix(): file_sha256(f) for f in files}
    commit = hashlib.sha1("\n".join(f"{n} {d}" for n, d in sorted(digests.items())).encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    if not snapshot.is_dir():
        for f in files:
            blob = repo / "blobs" / digests[f.relative_to(folder).as_posix()]
            if not blob.exists():
                tmp = blob.with_name(blob.name + ".mlxk-tmp")
                (shutil.move if move else shutil.copyfile)(str(f), str(tmp))
                os.replace(tmp, blob)
        staging = Path(tempfile.mkdtemp(dir=repo / "snapshots", prefix=".staging-"))
        for name, digest in digests.items():
            link = staging / name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(repo / "blobs" / digest, link.parent))
        os.replace(staging, snapshot)
    atomic_write(repo / "refs" / "main", commit)
    return commit
