"""The fused kernel runs on the caller's thread count and leaves it as it was.

The kernel runs its chunks of a batch in plain threads. numba's OpenMP threading layer (which
an earlier kernel used) sets the process-wide OpenMP thread count to its pool size when it starts,
and torch reads its count from the same runtime: a user who asked torch for one thread (say, to
run two study workers side by side) found torch, and every later fused batch, on the whole pool
after the first fused run. The check runs in a fresh process with a pool of two threads, so that
nothing has started before the code under test.
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
original = fused._in_threads
fused._in_threads = lambda run, args, n_chunks: used.append(n_chunks) or original(run, args, n_chunks)
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


def test_every_chunk_runs_once_and_errors_reach_the_caller():
    from bioconv.engines.fused import _in_threads

    calls = []
    _in_threads(lambda a, chunk, n: calls.append((a, chunk, n)), ("x",), 3)
    assert sorted(calls) == [("x", 0, 3), ("x", 1, 3), ("x", 2, 3)]

    def fails(chunk, n):
        if chunk == 1:
            raise ValueError("chunk 1 failed")

    with pytest.raises(ValueError, match="chunk 1 failed"):
        _in_threads(fails, (), 2)
