"""Generate, and optionally compile with nvcc, the brian2cuda project of a small network.

Runs in the Python 3.12 env ``.venv-cuda`` (brian2 == 2.10.1, brian2cuda == 1.0b1, no torch;
``make cuda-env``). Without a GPU it sets ``detect_gpus=False``, ``gpu_id=0``, a
``compute_capability`` (``$BIOCONV_CUDA_CC``, default 8.0) and ``cuda_path``, takes cuRAND
from the ``nvidia-curand`` wheel and compiles with ``-std=c++17`` (see :mod:`bioconv.devices`).

usage::

    python -m bioconv.engines.cuda_build                 # generate + full nvcc build (minutes)
    python -m bioconv.engines.cuda_build --codegen-only  # generate the CUDA code only (seconds)
    python -m bioconv.engines.cuda_build --run           # on a GPU machine: also run 4 images

On a machine with a GPU, ``bioconv simulate NET.bcv --device cuda`` (in ``.venv-cuda``) builds
once and runs whole datasets the same way as ``--device cpp``; with ``nvidia-smi`` present
brian2cuda detects the GPU and its compute capability itself.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np


def small_graph(seed: int = 0):
    """conv(4, 3x3, pad 1) - avgpool 2 - flatten - dense(10) on 1x8x8, IF (subtract) + delta."""
    from bioconv import ir
    from bioconv.neurons import IF
    from bioconv.synapses import Delta

    rng = np.random.default_rng(seed)
    conv = ir.Conv2d("conv1", (1, 8, 8), rng.normal(0, 0.5, (4, 1, 3, 3)), np.full(4, 0.02), padding=(1, 1))
    pool = ir.AvgPool2d("pool1", (4, 8, 8))
    flat = ir.Flatten("flat", (4, 4, 4))
    fc = ir.Dense("fc", rng.normal(0, 0.3, (10, 64)), np.zeros(10))
    return ir.Graph(ir.Input((1, 8, 8), rate_scale=200.0), (conv, pool, flat, fc), IF(reset="subtract"), Delta())


def generate(directory: Optional[Path] = None, compile: bool = False, batch_size: int = 4,
             conv: str = "procedural"):
    """Generate (and with ``compile`` build) the cuda_standalone project; returns the Simulator.

    ``conv="procedural"`` (default) builds the convolution with bioconv's weight-shared CUDA
    template (``bioconv_cuda_standalone``, :mod:`bioconv.engines.convsyn`); ``"explicit"``
    unrolls it into brian2cuda ``Synapses``.
    """
    from brian2 import ms

    from bioconv.engines.brian2 import Simulator
    from bioconv.simulation import SimConfig

    config = SimConfig(duration=20 * ms, dt=1 * ms, bin=5 * ms)
    sim = Simulator(small_graph(), config, device="cuda", build_dir=directory, batch_size=batch_size, conv=conv)
    sim.build(signed=False, compile=compile)
    return sim


def kernels(directory: Path) -> list[str]:
    """Names of the ``__global__`` CUDA kernels in the generated project."""
    names = set()
    for path in Path(directory).rglob("*.cu"):
        names.update(re.findall(r"__global__\s+void\s+(\w+)", path.read_text(errors="replace")))
    return sorted(names)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bioconv.engines.cuda_build", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--codegen-only", action="store_true", help="generate the code, skip nvcc")
    parser.add_argument("--run", action="store_true", help="run 4 images after the build (needs a GPU)")
    parser.add_argument("--dir", type=Path, help="project directory (default .cache/brian/cuda/<key>)")
    parser.add_argument("--conv", choices=["procedural", "explicit"], default="procedural",
                        help="convolution synapses: weight-shared template (default) or unrolled")
    args = parser.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("brian2").setLevel(logging.WARNING)
    start = time.perf_counter()
    sim = generate(args.dir, compile=not args.codegen_only, conv=args.conv)
    total = time.perf_counter() - start
    found = kernels(sim.directory)
    print(f"project: {sim.directory} (convolution synapses: {args.conv})")
    print(f"{len(found)} CUDA kernels, e.g. " + ", ".join(found[:8]))
    t = sim.build_timings
    if args.codegen_only:
        print(f"code generation: {t['build_s']:.1f} s (no nvcc)")
    else:
        binary = sim.directory / "main"
        ok = binary.exists()
        print(f"nvcc build: {'OK' if ok else 'FAILED'}; code generation {t['build_s']:.1f} s, "
              f"compile {t['compile_s']:.1f} s, total {total:.1f} s; binary {binary}")
        if not ok:
            return 1
    if args.run:
        rng = np.random.default_rng(0)
        res = sim.run(rng.random((4, 1, 8, 8)), np.arange(4))
        print("spikes per layer:", {k: int(v.sum()) for k, v in res.counts.items()},
              f"binary {res.timings.get('binary_s', 0):.2f} s")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
