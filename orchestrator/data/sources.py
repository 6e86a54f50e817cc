"""Where a data set's files are: local copies first, a download only as the last resort.

Resolution order for the torchvision data sets (`resolve_dataset_root`):
1. `data.dir`, if it holds the data: torchvision's layout (ROOT/FashionMNIST/raw/...,
   ROOT/cifar-10-batches-py/...) or, for the idx data sets, a folder that directly holds the four
   idx files (.gz or not);
2. the system copy `SYSTEM_DATA_ROOT/<name>/` (Debian's `dataset-fashion-mnist` package puts the
   four .gz files in /usr/share/datasets/fashion-mnist/; mnist is handled the same way);
3. the user cache `cache_root()` (a previous download or staging);
4. torchvision's download into `data.dir` (or the cache) when `data.download` is true.
Nothing found: `DataNotFoundError` listing where it looked and how to get the data.

Idx files that torchvision cannot read in place (.gz, or not under ROOT/<Class>/raw/) are
"staged": decompressed (or symlinked) once into a root in torchvision's layout under the cache.
Staging writes a temp file and `os.replace`s it, so concurrent members on one node never read a
half-written file; downloads hold a file lock.

Pitfall: the returned root is what `torchvision.datasets.<Class>(root, download=False)` expects,
which is not always `data.dir` itself.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import shutil
import socket
import struct
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from orchestrator.data.errors import DataNotFoundError, DataSpecError

if TYPE_CHECKING:
    from orchestrator.config import DataSpec

# Module-level so tests (and unusual installs) can point them elsewhere.
SYSTEM_DATA_ROOT = Path("/usr/share/datasets")
CACHE_ENV = "ENSEMBLE_DATA_DIR"
DOWNLOAD_TIMEOUT_S = 60.0

IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def cache_root() -> Path:
    """The user data cache: $ENSEMBLE_DATA_DIR or ~/.cache/ensemble-orchestrator/data."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "ensemble-orchestrator" / "data"


@dataclass(frozen=True)
class TorchvisionSource:
    name: str  # data.name
    class_name: str  # torchvision.datasets.<class_name>; also its folder for the idx sets
    kind: Literal["idx", "cifar"]
    debian_package: str | None = None

    def dataset_class(self) -> type:
        import torchvision.datasets  # lazy: importing torchvision costs ~0.5 s

        return getattr(torchvision.datasets, self.class_name)


SOURCES: dict[str, TorchvisionSource] = {
    "fashion-mnist": TorchvisionSource(
        "fashion-mnist", "FashionMNIST", "idx", "dataset-fashion-mnist"
    ),
    "mnist": TorchvisionSource("mnist", "MNIST", "idx"),
    "cifar10": TorchvisionSource("cifar10", "CIFAR10", "cifar"),
    "cifar100": TorchvisionSource("cifar100", "CIFAR100", "cifar"),
}


def system_dir(name: str) -> Path:
    return SYSTEM_DATA_ROOT / name


# Public entry point ---------------------------------------------------------------------
def resolve_dataset_root(spec: DataSpec) -> Path:
    """The root to read `spec.name` from (see the module docstring for the order).

    imagefolder: `data.dir` itself (checked to exist). synthetic has no files: DataSpecError.
    Raises DataNotFoundError when the data is nowhere and cannot be downloaded.
    """
    if spec.name == "synthetic":
        raise DataSpecError("data.name=synthetic is generated in memory and has no files")
    if spec.name == "imagefolder":
        return _resolve_imagefolder(spec)
    source = SOURCES[spec.name]
    looked: list[str] = []

    if spec.dir:
        user_dir = Path(spec.dir).expanduser()
        root = _find(source, user_dir, staging=cache_root() / "staged" / _path_key(user_dir))
        if root is not None:
            return root
        looked.append(f"data.dir={user_dir}: {_missing(source, user_dir)}")

    sys_dir = system_dir(source.name)
    root = _find(source, sys_dir, staging=cache_root())
    if root is not None:
        return root
    looked.append(f"system copy {sys_dir}: {_missing(source, sys_dir)}")

    cache = cache_root()
    root = _find(source, cache, staging=cache)
    if root is not None:
        return root
    looked.append(f"cache {cache}: {_missing(source, cache)}")

    if not spec.download:
        looked.append("download: not attempted (data.download=false)")
        raise DataNotFoundError(_not_found_message(source, looked))
    target = Path(spec.dir).expanduser() if spec.dir else cache
    try:
        _download(source, target)
    except Exception as exc:  # no network, a bad mirror, a read-only target ...
        looked.append(f"download into {target}: failed: {_first_line(exc)}")
        raise DataNotFoundError(_not_found_message(source, looked)) from exc
    root = _find(source, target, staging=target)
    if root is None:  # pragma: no cover - torchvision reported success but left no files
        looked.append(f"download into {target}: finished but the files are missing")
        raise DataNotFoundError(_not_found_message(source, looked))
    return root


def _resolve_imagefolder(spec: DataSpec) -> Path:
    if not spec.dir:
        raise DataNotFoundError(
            "data.name=imagefolder needs data.dir: a folder with one subfolder per class "
            "(optionally split into train/ and test/)"
        )
    root = Path(spec.dir).expanduser()
    if not root.is_dir():
        raise DataNotFoundError(f"data.dir={root} (imagefolder) is not a directory")
    return root


# Finding --------------------------------------------------------------------------------
def _find(source: TorchvisionSource, folder: Path, staging: Path) -> Path | None:
    if not folder.is_dir():
        return None
    if source.kind == "cifar":
        return _find_cifar(source, folder)
    return _find_idx(source, folder, staging)


def _find_idx(source: TorchvisionSource, folder: Path, staging: Path) -> Path | None:
    """A torchvision root for an idx data set (MNIST, FashionMNIST), staging files if needed."""
    layout = folder / source.class_name / "raw"
    for candidate in (layout, folder):
        files = _idx_files(candidate)
        if files is None:
            continue
        if candidate == layout and all(f.suffix != ".gz" for f in files.values()):
            return folder  # torchvision reads these in place
        raw = staging / source.class_name / "raw"
        for base, src in files.items():
            stage_file(src, raw / base)
        return staging
    return None


def _idx_files(folder: Path) -> dict[str, Path] | None:
    """The four idx files in `folder` (uncompressed preferred, else .gz), or None if any is missing."""
    if not folder.is_dir():
        return None
    found: dict[str, Path] = {}
    for base in IDX_FILES:
        for name in (base, base + ".gz"):
            path = folder / name
            if path.is_file() and path.stat().st_size > 0:
                found[base] = path
                break
        else:
            return None
    return found


def _find_cifar(source: TorchvisionSource, folder: Path) -> Path | None:
    cls = source.dataset_class()
    names = [n for n, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    # Either ROOT/cifar-10-batches-py/... or the batches folder itself.
    roots = [folder, folder.parent] if folder.name == cls.base_folder else [folder]
    for root in roots:
        if all((root / cls.base_folder / n).is_file() for n in names):
            return root
    return None


def _missing(source: TorchvisionSource, folder: Path) -> str:
    if not folder.exists():
        return "does not exist"
    if source.kind == "cifar":
        return f"no {_cifar_folder(source)}/ with the python batches"
    return (
        f"no {source.class_name}/raw/ with the four idx files and none directly in it "
        f"({', '.join(IDX_FILES)}, .gz or not)"
    )


def _cifar_folder(source: TorchvisionSource) -> str:
    return "cifar-10-batches-py" if source.name == "cifar10" else "cifar-100-python"


def _not_found_message(source: TorchvisionSource, looked: list[str]) -> str:
    lines = [f"{source.name} data not found. Looked in:"]
    lines += [f"  - {item}" for item in looked]
    lines.append("Get the data in one of these ways:")
    if source.debian_package:
        lines.append(
            f"  - sudo apt-get install {source.debian_package}   "
            f"(installs {system_dir(source.name)})"
        )
    if source.kind == "idx":
        what = f"the four idx files ({', '.join(IDX_FILES)}, .gz or not)"
    else:
        what = f"{_cifar_folder(source)}/ (the extracted python version)"
    lines.append(f"  - set data.dir to a folder holding {what}")
    lines.append(
        "  - set data.download=true on a machine with internet access (downloads into data.dir, "
        f"else ${CACHE_ENV} or ~/.cache/ensemble-orchestrator/data)"
    )
    return "\n".join(lines)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {' '.join(t.strip() for t in text[:3])}" if text else repr(exc)


def _path_key(path: Path) -> str:
    return hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]


# Staging --------------------------------------------------------------------------------
def stage_file(src: Path, dst: Path) -> Path:
    """Make `dst` an uncompressed copy of `src` (.gz is decompressed, else a symlink); idempotent.

    Up to date when `dst` is at least as new as `src` and has the expected size. Safe when several
    processes stage at once: each writes its own temp file and atomically `os.replace`s it.
    """
    if _is_current(src, dst):
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        if src.suffix == ".gz":
            with gzip.open(src, "rb") as fin, open(tmp, "wb") as fout:
                shutil.copyfileobj(fin, fout, 1 << 20)
        else:
            os.symlink(src.resolve(), tmp)
        os.replace(tmp, dst)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return dst


def _is_current(src: Path, dst: Path) -> bool:
    try:
        dst_stat = dst.stat()  # follows a symlink
    except OSError:
        return False
    src_stat = src.stat()
    if dst_stat.st_mtime < src_stat.st_mtime:
        return False
    expected = _gzip_size(src) if src.suffix == ".gz" else src_stat.st_size
    return expected is None or dst_stat.st_size % (1 << 32) == expected % (1 << 32)


def _gzip_size(path: Path) -> int | None:
    """gzip's ISIZE trailer: the uncompressed size modulo 2**32 (None if unreadable)."""
    try:
        with open(path, "rb") as f:
            f.seek(-4, os.SEEK_END)
            return struct.unpack("<I", f.read(4))[0]
    except OSError:
        return None


# Downloading ----------------------------------------------------------------------------
def _download(source: TorchvisionSource, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    with _file_lock(target / f".{source.name}.download.lock"), _socket_timeout(DOWNLOAD_TIMEOUT_S):
        # The constructor downloads (and verifies md5s) only what is missing.
        source.dataset_class()(root=str(target), train=True, download=True)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (POSIX); a no-op where fcntl does not exist."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    # urllib has no timeout by default: a black-holed network would hang a member forever.
    previous = socket.getdefaulttimeout()
    if previous is None:
        socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        if previous is None:
            socket.setdefaulttimeout(None)
