"""Datasets: MNIST (gz and raw IDX), CIFAR-10 pickle batches, sklearn digits, lookup, download, order."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from bioconv import data
from bioconv.data import batches, files, load_dataset, readers, split_validation, subset


def write_idx(path: Path, array: np.ndarray, gz: bool = True) -> None:
    """Write ``array`` (uint8) in the IDX format (magic 0x0000 08 ndim, big-endian sizes)."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if gz else payload)


def fake_mnist(folder: Path, n: int = 5, gz: bool = True, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    suffix = ".gz" if gz else ""
    for prefix in ("train", "t10k"):
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images, gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels, gz)
    return images, labels


def write_cifar_batch(path: Path, pixels: np.ndarray, labels: np.ndarray) -> None:
    """A batch in the real CIFAR-10 python format: a pickled dict with bytes keys, rows R|G|B."""
    batch = {b"batch_label": path.name.encode(), b"labels": [int(l) for l in labels],
             b"data": pixels.reshape(len(pixels), -1).astype(np.uint8),
             b"filenames": [f"img{i}.png".encode() for i in range(len(labels))]}
    with open(path, "wb") as fh:
        pickle.dump(batch, fh, protocol=2)


def fake_cifar(folder: Path, n_per_batch: int = 2, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        pixels = rng.integers(0, 256, size=(n_per_batch, 3, 32, 32), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n_per_batch)
        write_cifar_batch(folder / name, pixels, labels)
        out[name] = (pixels, labels)
    return out


@pytest.fixture
def no_env(monkeypatch, tmp_path):
    """No BIOCONV_DATA_DIR and an empty cache dir under tmp_path."""
    monkeypatch.delenv("BIOCONV_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("BIOCONV_OFFLINE", "1")
    return tmp_path


# --- MNIST -----------------------------------------------------------------------------------

def test_mnist_test_split(mnist_dir):
    ds = load_dataset("mnist", "test")
    assert ds.images.shape == (10000, 1, 28, 28) and ds.images.dtype == np.float32
    assert ds.labels.dtype == np.int64 and ds.labels.shape == (10000,)
    assert ds.images.min() == 0.0 and ds.images.max() == 1.0
    assert list(ds.labels[:10]) == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]  # the well-known first t10k labels
    assert np.bincount(ds.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert ds.meta["preprocessing"]["range"] == [0.0, 1.0]
    assert ds.input_shape == (1, 28, 28) and ds.n_classes == 10 and len(ds) == 10000


def test_mnist_train_split(mnist_dir):
    ds = load_dataset("mnist", "train")
    assert ds.images.shape == (60000, 1, 28, 28)
    assert list(ds.labels[:5]) == [5, 0, 4, 1, 9]


def test_mnist_raw_idx_equals_gz(mnist_dir, tmp_path):
    for stem in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (tmp_path / stem).write_bytes(gzip.decompress((mnist_dir / f"{stem}.gz").read_bytes()))
    raw = load_dataset("mnist", "test", data_dir=tmp_path)
    ref = load_dataset("mnist", "test")
    assert raw.meta["source"] == str(tmp_path)
    np.testing.assert_array_equal(raw.images, ref.images)
    np.testing.assert_array_equal(raw.labels, ref.labels)


def test_mnist_pixel_scaling(tmp_path):
    images, labels = fake_mnist(tmp_path, n=4)
    ds = load_dataset("mnist", "test", data_dir=tmp_path)
    np.testing.assert_array_equal(ds.images[:, 0], images.astype(np.float32) / 255)
    np.testing.assert_array_equal(ds.labels, labels)


def test_lookup_order(no_env, monkeypatch):
    explicit, env, cache = no_env / "explicit", no_env / "env", no_env / "cache" / "bioconv" / "mnist"
    fake_mnist(explicit, n=3)
    fake_mnist(env, n=4)
    fake_mnist(cache, n=5)
    monkeypatch.setenv("BIOCONV_DATA_DIR", str(env))
    assert len(load_dataset("mnist", "test", data_dir=explicit)) == 3
    assert len(load_dataset("mnist", "test")) == 4
    monkeypatch.delenv("BIOCONV_DATA_DIR")
    assert len(load_dataset("mnist", "test")) == 5  # user cache, in its mnist/ sub-folder
    assert files.roots(explicit) == [explicit, no_env / "cache" / "bioconv"]


def test_offline_missing_names_files_and_folders(no_env):
    with pytest.raises(FileNotFoundError) as err:
        load_dataset("mnist", "test", data_dir=no_env / "empty")
    msg = str(err.value)
    assert "t10k-images-idx3-ubyte.gz" in msg and str(no_env / "empty") in msg and "BIOCONV_DATA_DIR" in msg
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        load_dataset("cifar10", "test", data_dir=no_env / "empty")


def test_download_verifies_checksum_and_is_atomic(no_env, monkeypatch):
    """Online path with a fake mirror: a bad checksum leaves nothing behind, a good one installs the file."""
    monkeypatch.setenv("BIOCONV_OFFLINE", "0")
    fake_dir = no_env / "mirror"
    fake_mnist(fake_dir, n=6)
    served = {}

    def fake_urlopen(url, timeout=None):
        name = url.rsplit("/", 1)[-1]
        served[name] = served.get(name, 0) + 1
        return io.BytesIO((fake_dir / name).read_bytes())

    monkeypatch.setattr(files.urllib.request, "urlopen", fake_urlopen)
    target = no_env / "dl"
    with pytest.raises(FileNotFoundError, match="checksum mismatch"):
        load_dataset("mnist", "test", data_dir=target)
    assert not list((target / "mnist").glob("*")), "no partial or unverified file may remain"
    good = {stem: files.RemoteFile(r.name, hashlib.sha256((fake_dir / r.name).read_bytes()).hexdigest(), r.mirrors)
            for stem, r in files.MNIST_FILES.items()}
    monkeypatch.setattr(files, "MNIST_FILES", good)
    ds = load_dataset("mnist", "test", data_dir=target)
    assert len(ds) == 6 and (target / "mnist" / "t10k-images-idx3-ubyte.gz").is_file()
    assert not list((target / "mnist").glob("*.part"))


@pytest.mark.parametrize("payload, match", [
    (b"\x01\x02\x03\x04hello", "bad magic"),
    (bytes([0, 0, 8, 3]) + np.asarray([10, 28, 28], ">u4").tobytes() + b"\x00" * 100, "truncated"),
])
def test_corrupt_idx(tmp_path, payload, match):
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(payload)
    with pytest.raises(ValueError, match=match):
        readers.read_idx(path)


def test_corrupt_gzip(tmp_path):
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="not a readable IDX"):
        readers.read_idx(path)


# --- CIFAR-10 --------------------------------------------------------------------------------

def test_cifar10_loader_real_pickle_format(tmp_path):
    batches_ = fake_cifar(tmp_path / "cifar-10-batches-py")
    test = load_dataset("cifar10", "test", data_dir=tmp_path)
    train = load_dataset("cifar10", "train", data_dir=tmp_path)
    assert test.images.shape == (2, 3, 32, 32) and train.images.shape == (10, 3, 32, 32)
    pixels, labels = batches_["test_batch"]
    np.testing.assert_array_equal(test.labels, labels)
    mean = np.array(data.CIFAR10_MEAN)[:, None, None]
    std = np.array(data.CIFAR10_STD)[:, None, None]
    np.testing.assert_allclose(test.images[1], (pixels[1] / 255.0 - mean) / std, rtol=1e-6, atol=1e-6)
    # row layout: 1024 red values, then green, then blue, each row-major
    row = pixels[0].reshape(-1)
    c, y, x = 2, 5, 17
    assert row[c * 1024 + y * 32 + x] == pixels[0, c, y, x]
    np.testing.assert_array_equal(train.labels[:2], batches_["data_batch_1"][1])
    np.testing.assert_array_equal(train.labels[-2:], batches_["data_batch_5"][1])
    assert test.n_classes == 10 and test.meta["classes"][0] == "airplane"


def test_cifar10_range_is_about_2(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    fake_cifar(folder)
    pixels = np.zeros((2, 3, 32, 32), np.uint8)
    pixels[1] = 255
    write_cifar_batch(folder / "test_batch", pixels, np.array([0, 1]))
    ds = load_dataset("cifar10", "test", data_dir=tmp_path)
    assert -2.0 < ds.images.min() < -1.7 and 2.0 < ds.images.max() < 2.2


def test_cifar10_from_archive(tmp_path):
    src = tmp_path / "src" / "cifar-10-batches-py"
    ref = fake_cifar(src)
    root = tmp_path / "root"
    root.mkdir()
    with tarfile.open(root / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(src, arcname="cifar-10-batches-py")
    ds = load_dataset("cifar10", "test", data_dir=root)
    np.testing.assert_array_equal(ds.labels, ref["test_batch"][1])
    assert (root / "cifar-10-batches-py" / "test_batch").is_file()


def test_cifar10_bad_batch(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    fake_cifar(folder)
    with open(folder / "test_batch", "wb") as fh:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, fh)
    with pytest.raises(ValueError, match="not CIFAR-10 shaped"):
        load_dataset("cifar10", "test", data_dir=tmp_path)
    (folder / "test_batch").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a readable CIFAR-10 batch"):
        load_dataset("cifar10", "test", data_dir=tmp_path)
    os.unlink(folder / "data_batch_3")
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        readers.read_cifar10(folder, "train")


# --- digits ----------------------------------------------------------------------------------

def test_digits_split():
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert train.images.shape == (1437, 1, 8, 8) and test.images.shape == (360, 1, 8, 8)
    assert train.images.dtype == np.float32 and 0.0 == train.images.min() and train.images.max() == 1.0
    assert np.all(np.abs(np.bincount(test.labels, minlength=10) - 36) <= 1)  # stratified
    again = load_dataset("digits", "test")
    np.testing.assert_array_equal(again.images, test.images)
    from sklearn.datasets import load_digits  # the same data as sklearn's public loader

    ref = load_digits()
    rows = Counter((r.tobytes(), int(t)) for r, t in zip((ref.images / 16.0).astype(np.float32), ref.target))
    used = Counter((im[0].tobytes(), int(t)) for ds in (train, test) for im, t in zip(ds.images, ds.labels))
    assert used == rows  # every example exactly once across the two splits


def test_stratified_split():
    labels = np.repeat(np.arange(3), [10, 20, 31])
    tr, te = readers.stratified_split(labels, 12, seed=0)
    assert len(te) == 12 and len(tr) == 49 and not set(tr) & set(te)
    assert np.bincount(labels[te]).tolist() == [2, 4, 6]
    np.testing.assert_array_equal(te, readers.stratified_split(labels, 12, seed=0)[1])
    assert not np.array_equal(te, readers.stratified_split(labels, 12, seed=1)[1])


# --- order helpers and errors ----------------------------------------------------------------

def _toy(n=23):
    return data.Dataset(images=np.arange(n, dtype=np.float32).reshape(n, 1, 1, 1),
                        labels=np.arange(n, dtype=np.int64) % 10, name="toy")


def test_subset_deterministic():
    ds = _toy()
    assert subset(ds, 5).labels.tolist() == list(range(5))
    a, b, c = subset(ds, 7, seed=3), subset(ds, 7, seed=3), subset(ds, 7, seed=4)
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(a.images, c.images)
    assert np.all(np.diff(a.images.ravel()) > 0)
    assert subset(ds, None) is ds and subset(ds, 100) is ds
    with pytest.raises(ValueError, match="subset size"):
        subset(ds, 0)


def test_batches_cover_each_example_once():
    ds = _toy()
    got = np.concatenate([x.ravel() for x, _ in batches(ds, 5, seed=1)])
    assert sorted(got.tolist()) == list(range(23))
    again = np.concatenate([x.ravel() for x, _ in batches(ds, 5, seed=1)])
    np.testing.assert_array_equal(got, again)
    other_epoch = np.concatenate([x.ravel() for x, _ in batches(ds, 5, seed=1, epoch=1)])
    assert not np.array_equal(got, other_epoch)
    assert [len(y) for _, y in batches(ds, 5)] == [5, 5, 5, 5, 3]
    assert [len(y) for _, y in batches(ds, 5, drop_last=True)] == [5, 5, 5, 5]
    np.testing.assert_array_equal(np.concatenate([x.ravel() for x, _ in batches(ds, 10)]), np.arange(23))
    with pytest.raises(ValueError, match="batch_size"):
        next(batches(ds, 0))


def test_split_validation():
    train, val = split_validation(_toy(), 0.2, seed=0)
    assert len(val) == 5 and len(train) == 18
    assert set(train.images.ravel()) | set(val.images.ravel()) == set(range(23))
    assert not set(train.images.ravel()) & set(val.images.ravel())
    with pytest.raises(ValueError, match="fraction"):
        split_validation(_toy(), 1.5, seed=0)


def test_bad_names_and_shapes():
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("imagenet", "test")
    with pytest.raises(ValueError, match="split"):
        load_dataset("digits", "validation")
    with pytest.raises(ValueError, match="images must be"):
        data.Dataset(images=np.zeros((3, 4)), labels=np.zeros(3, np.int64), name="x")


def test_more_reader_errors(tmp_path, monkeypatch):
    write_idx(tmp_path / "img", np.zeros((3, 28, 28), np.uint8), gz=False)
    write_idx(tmp_path / "lab", np.zeros(4, np.uint8), gz=False)
    with pytest.raises(ValueError, match="MNIST files disagree"):
        readers.read_mnist(tmp_path / "img", tmp_path / "lab")
    with open(tmp_path / "list_batch", "wb") as fh:
        pickle.dump([1, 2, 3], fh)
    with pytest.raises(ValueError, match="pickled dict"):
        readers.read_cifar_batch(tmp_path / "list_batch")
    with open(tmp_path / "nokeys_batch", "wb") as fh:
        pickle.dump({b"pixels": 1}, fh)
    with pytest.raises(ValueError, match="lacks b'data'"):
        readers.read_cifar_batch(tmp_path / "nokeys_batch")
    with pytest.raises(ValueError, match="unknown dataset"):
        data.preprocessing("svhn")
    monkeypatch.setattr(readers.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="scikit-learn"):
        load_dataset("digits", "test")
