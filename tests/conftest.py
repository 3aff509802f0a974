"""Shared test fixtures. Tests read MNIST from ../shared/datasets/mnist and never download."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_MNIST = REPO.parent / "shared" / "datasets" / "mnist"

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("BRIAN_CACHE_DIR", str(REPO / ".cache" / "brian"))
if "BIOCONV_DATA_DIR" not in os.environ and SHARED_MNIST.exists():
    os.environ["BIOCONV_DATA_DIR"] = str(SHARED_MNIST)
os.environ["BIOCONV_OFFLINE"] = "1"  # tests never touch the network


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    path = Path(os.environ.get("BIOCONV_DATA_DIR", SHARED_MNIST))
    if not (path / "t10k-images-idx3-ubyte.gz").exists():
        pytest.fail(f"MNIST not found in {path}; set BIOCONV_DATA_DIR to ../shared/datasets/mnist")
    return path


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
