"""Datasets as frozen arrays: MNIST, CIFAR-10 and scikit-learn's 8x8 digits.

``load_dataset(name, split, data_dir=None)`` returns a :class:`Dataset` with
``images`` float32 (N, C, H, W), already preprocessed as in the seed papers, and
``labels`` int64 (N,):

- ``mnist``: pixel / 255, in [0, 1] (the MCR-Norm paper §11).
- ``cifar10``: per channel :math:`x_c = (p/255 - \\mu_c) / \\sigma_c` with the
  CIFAR-10 training-set statistics (values in about [-2.0, 2.1]); the inputs
  are signed, so the spiking input layer needs signed spikes.
- ``digits``: value / 16, in [0, 1]; a fixed stratified split (1437 train / 360 test).

Where the files are looked for, and how they are fetched, is in
:mod:`bioconv.data.files`. :func:`subset` and :func:`batches` give a
deterministic, seedable choice and order of examples.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any, Iterator, Literal, Mapping

import numpy as np

from bioconv.data import files, readers

DatasetName = Literal["mnist", "cifar10", "digits"]
Split = Literal["train", "test"]
DATASETS: tuple[str, ...] = ("mnist", "cifar10", "digits")

# Per-channel mean and std of the CIFAR-10 training set (pixels scaled to [0, 1]).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CLASS_NAMES = {
    "mnist": tuple(str(d) for d in range(10)),
    "digits": tuple(str(d) for d in range(10)),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
}


@dataclass(frozen=True, eq=False)
class Dataset:
    """Preprocessed images (N, C, H, W) float32 and labels (N,) int64 of one split."""

    images: np.ndarray
    labels: np.ndarray
    name: str
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.labels.ndim != 1 or len(self.images) != len(self.labels):
            raise ValueError(
                f"dataset {self.name!r}: images must be (N, C, H, W) and labels (N,), got "
                f"{self.images.shape} and {self.labels.shape}"
            )

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.images.shape[1:])

    @property
    def n_classes(self) -> int:
        return len(CLASS_NAMES.get(self.name, ())) or int(self.labels.max()) + 1

    def take(self, index: np.ndarray | slice) -> "Dataset":
        """A new Dataset with the examples at ``index`` (any numpy index)."""
        return replace(self, images=self.images[index], labels=self.labels[index])


def preprocessing(name: str) -> dict[str, Any]:
    """JSON-serializable description of the preprocessing of dataset ``name``."""
    if name == "mnist":
        return {"scale": "pixel/255", "range": [0.0, 1.0]}
    if name == "digits":
        return {"scale": "value/16", "range": [0.0, 1.0], "split": "stratified_split(test_size=360, seed=0)"}
    if name == "cifar10":
        return {"scale": "pixel/255", "normalize": "per-channel (x-mean)/std",
                "mean": list(CIFAR10_MEAN), "std": list(CIFAR10_STD)}
    raise ValueError(f"unknown dataset {name!r}; choose one of {DATASETS}")


def normalize_cifar10(pixels: np.ndarray) -> np.ndarray:
    """uint8 (N, 3, H, W) pixels -> float32 per-channel standardized values."""
    mean = np.asarray(CIFAR10_MEAN, dtype=np.float32)[None, :, None, None]
    std = np.asarray(CIFAR10_STD, dtype=np.float32)[None, :, None, None]
    return ((pixels.astype(np.float32) / np.float32(255.0)) - mean) / std


def load_dataset(name: DatasetName, split: Split = "test", data_dir: str | os.PathLike | None = None) -> Dataset:
    """Load one split of a dataset, preprocessed; see the module docstring for the scaling.

    Raises ``FileNotFoundError`` (offline, files missing) naming the folders searched.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {DATASETS}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if name == "mnist":
        prefix = "train" if split == "train" else "t10k"
        img_path = files.find_mnist_file(f"{prefix}-images-idx3-ubyte", data_dir)
        lab_path = files.find_mnist_file(f"{prefix}-labels-idx1-ubyte", data_dir)
        pixels, labels = readers.read_mnist(img_path, lab_path)
        images = pixels.astype(np.float32) / np.float32(255.0)
        source = str(img_path.parent)
    elif name == "cifar10":
        folder = files.find_cifar10_dir(data_dir)
        pixels, labels = readers.read_cifar10(folder, split)
        images = normalize_cifar10(pixels)
        source = str(folder)
    else:
        raw, labels = readers.read_digits(split)
        images = (raw / 16.0).astype(np.float32)
        source = "scikit-learn digits.csv.gz"
    meta = {"split": split, "source": source, "preprocessing": preprocessing(name),
            "classes": list(CLASS_NAMES[name])}
    return Dataset(images=np.ascontiguousarray(images), labels=labels.astype(np.int64), name=name, meta=meta)


def subset(ds: Dataset, n: int | None, seed: int | None = None) -> Dataset:
    """The first ``n`` examples (``seed=None``) or ``n`` examples drawn without replacement.

    With a seed the choice is ``np.random.default_rng(seed).permutation(N)[:n]``,
    kept in ascending index order, so it does not depend on anything but (N, n, seed).
    ``n=None`` or ``n >= N`` returns the whole dataset.
    """
    if n is None or n >= len(ds):
        return ds
    if n <= 0:
        raise ValueError(f"subset size must be > 0, got {n}")
    if seed is None:
        return ds.take(slice(0, n))
    return ds.take(np.sort(np.random.default_rng(seed).permutation(len(ds))[:n]))


def split_validation(ds: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Seeded (train, validation) split of a training set; ``fraction`` goes to validation."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation fraction must be in (0, 1), got {fraction}")
    perm = np.random.default_rng([seed, 1]).permutation(len(ds))
    n_val = max(1, int(round(fraction * len(ds))))
    return ds.take(np.sort(perm[n_val:])), ds.take(np.sort(perm[:n_val]))


def batches(ds: Dataset, batch_size: int, seed: int | None = None, epoch: int = 0,
            drop_last: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (images, labels) batches; shuffled by ``default_rng([seed, epoch])`` if ``seed`` is set.

    The order depends only on (N, seed, epoch), so a run is reproducible and each
    epoch gets its own permutation.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be > 0, got {batch_size}")
    order = np.arange(len(ds)) if seed is None else np.random.default_rng([seed, epoch]).permutation(len(ds))
    stop = len(ds) - (len(ds) % batch_size if drop_last else 0)
    for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size]
        yield ds.images[idx], ds.labels[idx]


__all__ = ["Dataset", "DATASETS", "load_dataset", "subset", "batches", "split_validation", "preprocessing",
           "normalize_cifar10", "CIFAR10_MEAN", "CIFAR10_STD"]
