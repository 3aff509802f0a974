"""Where dataset files live, and how missing ones are fetched.

Lookup order for a dataset folder: the explicit ``data_dir`` (``--data-dir``), then
the ``BIOCONV_DATA_DIR`` environment variable, then the user cache
``$XDG_CACHE_HOME/bioconv`` (default ``~/.cache/bioconv``). Each root is searched
as is and in a per-dataset sub-folder (``mnist/``, ``cifar10/``), so one root can
hold all datasets.

When the files are missing and ``BIOCONV_OFFLINE`` is not ``1``, they are
downloaded from the canonical mirrors into the first root (explicit folder,
environment folder or cache), checked against SHA-256 sums, and moved into place
atomically (temporary file in the same folder, then ``os.replace``). Offline, a
``FileNotFoundError`` says which files to put where.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bioconv.atomic import atomic_path

logger = logging.getLogger(__name__)

ENV_DATA_DIR = "BIOCONV_DATA_DIR"
ENV_OFFLINE = "BIOCONV_OFFLINE"


@dataclass(frozen=True)
class RemoteFile:
    """One downloadable file: its name, SHA-256 and the mirrors that serve it (tried in order)."""

    name: str
    sha256: str
    mirrors: tuple[str, ...]


_MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
MNIST_FILES = {
    "train-images-idx3-ubyte": RemoteFile(
        "train-images-idx3-ubyte.gz", "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", _MNIST_MIRRORS),
    "train-labels-idx1-ubyte": RemoteFile(
        "train-labels-idx1-ubyte.gz", "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", _MNIST_MIRRORS),
    "t10k-images-idx3-ubyte": RemoteFile(
        "t10k-images-idx3-ubyte.gz", "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", _MNIST_MIRRORS),
    "t10k-labels-idx1-ubyte": RemoteFile(
        "t10k-labels-idx1-ubyte.gz", "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", _MNIST_MIRRORS),
}
CIFAR10_ARCHIVE = RemoteFile(
    "cifar-10-python.tar.gz",
    "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
    ("https://www.cs.toronto.edu/~kriz/",),
)
CIFAR10_DIRNAME = "cifar-10-batches-py"
SUBDIRS = {"mnist": ("mnist", "MNIST/raw"), "cifar10": ("cifar10", "cifar-10", "CIFAR10")}


def cache_dir() -> Path:
    """The user cache folder for datasets: ``$XDG_CACHE_HOME/bioconv`` or ``~/.cache/bioconv``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "bioconv"


def roots(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Dataset roots in lookup order: ``data_dir``, ``$BIOCONV_DATA_DIR``, the user cache."""
    out = []
    for candidate in (data_dir, os.environ.get(ENV_DATA_DIR), cache_dir()):
        if candidate:
            path = Path(candidate).expanduser()
            if path not in out:
                out.append(path)
    return out


def candidate_dirs(dataset: str, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Every folder searched for ``dataset``: each root, then its dataset sub-folders."""
    dirs = []
    for root in roots(data_dir):
        dirs.append(root)
        dirs.extend(root / sub for sub in SUBDIRS.get(dataset, ()))
    return dirs


def offline() -> bool:
    """True when ``BIOCONV_OFFLINE=1`` (tests set it): never touch the network."""
    return os.environ.get(ENV_OFFLINE, "").strip().lower() in {"1", "true", "yes"}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(remote: RemoteFile, folder: Path) -> Path:
    """Fetch ``remote`` into ``folder`` (atomically), verifying its SHA-256; returns the path."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / remote.name
    errors = []
    for mirror in remote.mirrors:
        url = mirror + remote.name
        try:
            with atomic_path(target, suffix=".part") as tmp:
                logger.info("downloading %s", url)
                with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
                    shutil.copyfileobj(resp, out)
                got = sha256(tmp)
                if got != remote.sha256:
                    raise ValueError(f"checksum mismatch for {url}: sha256 {got}, expected {remote.sha256}")
            return target
        except (OSError, ValueError) as exc:  # URLError is an OSError
            errors.append(f"{url}: {exc}")
    raise FileNotFoundError(f"could not download {remote.name} into {folder}:\n  " + "\n  ".join(errors)
                            + f"\nDownload it by hand (sha256 {remote.sha256}) and put it into {folder}.")


def missing_error(dataset: str, names: list[str], data_dir=None, why: str = "") -> FileNotFoundError:
    where = "\n  ".join(str(d) for d in candidate_dirs(dataset, data_dir))
    return FileNotFoundError(
        f"{dataset} files not found{why}. Put {', '.join(names)} into one of these folders "
        f"(searched in this order):\n  {where}\nor point --data-dir / ${ENV_DATA_DIR} at the folder that "
        f"holds them (unset {ENV_OFFLINE} to download them automatically)."
    )


def find_mnist_file(stem: str, data_dir=None) -> Path:
    """Path of an MNIST IDX file (``stem`` + ``.gz`` or raw); downloads it if missing and online."""
    for folder in candidate_dirs("mnist", data_dir):
        for name in (stem + ".gz", stem, stem.replace("-idx", ".idx")):
            if (folder / name).is_file():
                return folder / name
    remote = MNIST_FILES[stem]
    if offline():
        raise missing_error("mnist", [f.name for f in MNIST_FILES.values()], data_dir, f" ({remote.name} is missing)")
    return download(remote, roots(data_dir)[0] / "mnist")


def find_cifar10_dir(data_dir=None) -> Path:
    """The ``cifar-10-batches-py`` folder; extracts or downloads the archive when needed."""
    dirs = candidate_dirs("cifar10", data_dir)
    for folder in dirs:
        for cand in (folder / CIFAR10_DIRNAME, folder):
            if (cand / "test_batch").is_file() and (cand / "data_batch_1").is_file():
                return cand
    for folder in dirs:
        if (folder / CIFAR10_ARCHIVE.name).is_file():
            return _extract_cifar(folder / CIFAR10_ARCHIVE.name)
    if offline():
        raise missing_error(
            "cifar10", [f"{CIFAR10_DIRNAME}/ (data_batch_1..5, test_batch)", f"or {CIFAR10_ARCHIVE.name}"], data_dir
        )
    return _extract_cifar(download(CIFAR10_ARCHIVE, roots(data_dir)[0] / "cifar10"))


def _extract_cifar(archive: Path) -> Path:
    """Extract the CIFAR-10 archive next to itself (into a temp folder, then rename)."""
    target = archive.parent / CIFAR10_DIRNAME
    if target.is_dir():
        return target
    tmp = Path(tempfile.mkdtemp(prefix="cifar10-", dir=archive.parent))
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(tmp, filter="data")
        os.replace(tmp / CIFAR10_DIRNAME, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target

