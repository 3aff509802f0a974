"""The fused kernel keeps the caller's thread count.

numba's OpenMP threading layer sets the process-wide OpenMP thread count to its pool size when it
starts, and torch reads its count from the same runtime. Without care, a user who asked torch for
one thread (say, to run two study workers side by side) would find torch, and every later fused
batch, on the whole pool after the first fused run. Each check runs in a fresh process with a pool
of two threads, so that the layer starts inside the code under test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

SCRIPT = r"""
import json
import numpy as np
import torch
torch.set_num_threads(1)
from brian2 import Hz, ms
from bioconv.ann import build_model
from bioconv.engines import fused
from bioconv.engines import torch as te
from bioconv.from_torch import from_torch
from bioconv.normalize import activation_stats, max_norm
from bioconv.simulation import SimConfig

used = []
original = fused.use_threads
fused.use_threads = lambda k: used.append(original(k)) or used[-1]
torch.manual_seed(0)
graph = from_torch(build_model("4c3-p2-10FC", (1, 8, 8), 10).eval(), (1, 8, 8))
x = np.random.default_rng(0).uniform(0, 1, (4, 1, 8, 8))
graph = max_norm(graph, activation_stats(graph, x), target_rate=300 * Hz, input_rate=300 * Hz)
for _ in range(2):
    te.simulate(graph, x, np.zeros(4, int), SimConfig(duration=20 * ms), batch_size=2, progress=False,
                propagation="fused")
print(json.dumps({"torch": torch.get_num_threads(), "kernel": used}))
"""


def test_one_torch_thread_stays_one_thread_in_torch_and_in_the_kernel():
    env = {**os.environ, "NUMBA_NUM_THREADS": "2", "OMP_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["torch"] == 1
    assert got["kernel"] == [1, 1, 1, 1]  # every batch of both runs on one thread


def test_use_threads_is_capped_by_the_pool():
    from bioconv.engines.fused import use_threads
    import numba

    assert use_threads(10 ** 6) == numba.config.NUMBA_NUM_THREADS
    assert use_threads(1) == 1
