"""The fused kernel compiles once: a second process loads it from the disk cache and adds no files.

Each run is a fresh Python process with its own ``NUMBA_CACHE_DIR``. The first compiles the
generated kernel (a cache miss); the second must hit numba's cache for the kernel's ``run`` and
leave the cache directory as it found it. (A kernel that numba cannot cache, e.g. one that
reads the thread count inside the compiled code, would compile again in every process.)
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
import json, sys, warnings
import numpy as np
import torch
from brian2 import Hz, ms
from bioconv.ann import build_model
from bioconv.engines import torch as te
from bioconv.from_torch import from_torch
from bioconv.normalize import activation_stats, max_norm
from bioconv.simulation import SimConfig

torch.manual_seed(0)
graph = from_torch(build_model("4c3-p2-10FC", (1, 8, 8), 10).eval(), (1, 8, 8))
x = np.random.default_rng(0).uniform(0, 1, (3, 1, 8, 8))
graph = max_norm(graph, activation_stats(graph, x), target_rate=300 * Hz, input_rate=300 * Hz)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    res = te.simulate(graph, x, np.zeros(3, int), SimConfig(duration=20 * ms), progress=False, propagation="fused")
kernels = [m for name, m in sys.modules.items() if name.startswith("bioconv_fused_")]
stats = kernels[0].run.stats
print(json.dumps({"hits": sum(stats.cache_hits.values()), "misses": sum(stats.cache_misses.values()),
                  "uncacheable": [str(w.message) for w in caught if "cannot cache" in str(w.message).lower()],
                  "spikes": int(sum(c.sum() for c in res.counts.values()))}))
"""


def _run(cache: Path) -> dict:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_second_process_loads_the_kernel_from_disk(tmp_path):
    cache = tmp_path / "numba"
    first = _run(cache)
    files = sorted(p.relative_to(cache) for p in cache.rglob("*") if p.is_file())
    second = _run(cache)
    assert first["uncacheable"] == [] and second["uncacheable"] == []
    assert first["misses"] >= 1
    assert second["hits"] >= 1 and second["misses"] == 0
    assert sorted(p.relative_to(cache) for p in cache.rglob("*") if p.is_file()) == files  # no new files
    assert second["spikes"] == first["spikes"] > 0
