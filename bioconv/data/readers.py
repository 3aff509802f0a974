"""Raw readers for the three datasets (numpy only): MNIST IDX, CIFAR-10 pickles, sklearn digits.

Each reader returns ``(images uint8 or float, labels int64)`` in (N, C, H, W) layout
before preprocessing. Decoded arrays are cached per file (path, size, mtime), so
repeated loads in tests and studies cost one decompression.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import os
import pickle
from pathlib import Path

import numpy as np

# IDX type codes (the third byte of the magic number) -> numpy big-endian dtype.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzipped if its name ends in ``.gz``).

    Format: 2 zero bytes, a type code, the number of dimensions *d*, then *d*
    big-endian uint32 sizes and the row-major data.
    """
    path = Path(path)
    stat = path.stat()
    return _read_idx_cached(str(path.resolve()), stat.st_size, stat.st_mtime_ns).copy()


@functools.lru_cache(maxsize=8)
def _read_idx_cached(path: str, size: int, mtime: int) -> np.ndarray:
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:
        raise ValueError(f"{path} is not a readable IDX file ({exc}); delete it and fetch it again") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number {raw[:4]!r})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int(s) for s in np.frombuffer(raw[4:header], dtype=">u4"))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"{path} is truncated or corrupt: header says shape {shape} ({expected} bytes), "
            f"file holds {len(raw) - header} bytes; delete it and fetch it again"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    data = data.astype(dtype.newbyteorder("="))
    data.setflags(write=False)
    return data


def read_mnist(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """MNIST images (N, 1, 28, 28) uint8 and labels (N,) int64."""
    images = read_idx(images_path)
    labels = read_idx(labels_path).astype(np.int64)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(
            f"MNIST files disagree: images {images.shape} from {images_path}, labels {labels.shape} from {labels_path}"
        )
    return images[:, None, :, :], labels


def read_cifar_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch: a pickled dict with ``b'data'`` (N, 3072) uint8 and ``b'labels'``.

    Rows hold the 1024 red, then green, then blue values of a 32x32 image in
    row-major order, so ``data.reshape(N, 3, 32, 32)`` is (N, C, H, W).
    """
    path = Path(path)
    stat = path.stat()
    images, labels = _read_cifar_cached(str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    return images.copy(), labels.copy()


@functools.lru_cache(maxsize=8)
def _read_cifar_cached(path: str, size: int, mtime: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as fh:
            batch = pickle.load(fh, encoding="bytes")  # the official batches are trusted pickles
    except (pickle.UnpicklingError, EOFError, OSError, ValueError) as exc:
        raise ValueError(f"{path} is not a readable CIFAR-10 batch ({exc}); delete it and fetch it again") from exc
    if not isinstance(batch, dict):
        raise ValueError(f"{path} is not a CIFAR-10 batch (a pickled dict with b'data' and b'labels')")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if data is None or labels is None:
        raise ValueError(f"{path} lacks b'data' or b'labels'; keys are {sorted(map(str, batch))}")
    data = np.asarray(data, dtype=np.uint8)
    labels = np.asarray(labels, dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise ValueError(f"{path}: data {data.shape} / labels {labels.shape} are not CIFAR-10 shaped (N, 3072) / (N,)")
    images = data.reshape(-1, 3, 32, 32)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def read_cifar10(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 train (``data_batch_1`` .. ``data_batch_5``) or test (``test_batch``) as uint8."""
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(f"CIFAR-10 folder {folder} lacks {missing}; re-extract cifar-10-python.tar.gz there")
    parts = [read_cifar_batch(folder / n) for n in names]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _digits_table() -> np.ndarray:
    """scikit-learn's ``digits.csv.gz`` (1797 rows: 64 pixel values 0..16, then the label).

    Read straight from the installed sklearn package with numpy: importing sklearn
    itself takes seconds.
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the digits dataset comes with scikit-learn; pip install scikit-learn")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "digits.csv.gz"
    if not path.is_file():  # layout changed: fall back to the public API
        from sklearn.datasets import load_digits

        d = load_digits()
        return np.column_stack([d.data, d.target])
    return np.loadtxt(path, delimiter=",", dtype=np.float64)


def stratified_split(labels: np.ndarray, test_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    r"""Seeded stratified (train, test) index split with exactly ``test_size`` test examples.

    Class *c* with :math:`n_c` examples gets :math:`\lfloor t n_c / N \rfloor` test
    examples, the rest handed out by largest remainder; within a class the examples
    are taken in the order of ``default_rng(seed).permutation``.
    """
    classes, counts = np.unique(labels, return_counts=True)
    quota = test_size * counts / len(labels)
    n_test = np.floor(quota).astype(int)
    extra = test_size - n_test.sum()
    n_test[np.argsort(-(quota - n_test), kind="stable")[:extra]] += 1
    rng = np.random.default_rng(seed)
    test = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, n_test)])
    mask = np.zeros(len(labels), bool)
    mask[test] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def read_digits(split: str, test_size: int = 360, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits (1797 images, values 0..16), split deterministically.

    The split is :func:`stratified_split` with ``seed``: ``test_size`` images for
    "test", the remaining 1437 for "train", each in the original order.
    """
    table = _digits_table()
    images, labels = table[:, :64].reshape(-1, 1, 8, 8), table[:, 64].astype(np.int64)
    train_idx, test_idx = stratified_split(labels, test_size, seed)
    pick = train_idx if split == "train" else test_idx
    return images[pick], labels[pick]
