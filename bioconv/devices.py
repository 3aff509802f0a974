"""The only module that touches Brian2's global device and code-generation preferences.

Three ways to run a Brian2 network:

- ``runtime``: Python drives the simulation; ``target`` is ``"numpy"`` (no compiler) or
  ``"cython"`` (compiled, cached in ``$BRIAN_CACHE_DIR``).
- ``cpp``: ``cpp_standalone`` generates a C++ project in a build directory, compiles it
  once and the binary ``./main`` is then run many times with new inputs and parameters
  given on its command line (Brian2's ``run_args``: ``group.var=FILE``,
  ``timedarray.values=FILE``) without recompiling.
- ``cuda``: ``cuda_standalone`` from brian2cuda (Python 3.12 env ``.venv-cuda``, see
  ``make cuda-env``); same project layout, built with nvcc.

Compiler flags: Brian2's defaults contain ``-ffast-math`` (which allows reassociation) and
``-march=native`` (which lets GCC fuse multiply-adds). Both change float64 rounding, so
the standalone binary would not give bit-identical membrane potentials to the numpy
runtime or to the torch engine. :func:`begin_standalone` therefore compiles with
``-O3 -march=native -ffp-contract=off -std=c++17`` and no fast-math.

Build directories live under a project cache, ``.cache/brian/standalone/<key>`` (or
``$BIOCONV_CACHE/brian/standalone/<key>``), one per network structure.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Literal, Optional, Sequence

log = logging.getLogger(__name__)

Device = Literal["runtime", "cpp", "cuda"]
DEVICES: tuple[str, ...] = ("runtime", "cpp", "cuda")
RuntimeTarget = Literal["numpy", "cython"]
TARGETS: tuple[str, ...] = ("numpy", "cython")
_BRIAN_DEVICE = {"cpp": "cpp_standalone", "cuda": "cuda_standalone"}

#: Compiler flags for the C++ standalone build: exact IEEE float64 (no fast-math, no FMA).
GCC_FLAGS = ["-w", "-O3", "-march=native", "-ffp-contract=off", "-std=c++17"]
#: nvcc flags for brian2cuda with CUDA 13 (C++17 is required by its headers); no -use_fast_math.
NVCC_FLAGS = ["-w", "-std=c++17"]


def check_device(device: str) -> None:
    if device not in DEVICES:
        raise ValueError(f"unknown Brian2 device {device!r}; choose one of {DEVICES}")


def cache_root() -> Path:
    """Root of bioconv's build cache: ``$BIOCONV_CACHE`` or ``<repo>/.cache``."""
    env = os.environ.get("BIOCONV_CACHE")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1] / ".cache"


def standalone_dir(key: str, device: Device = "cpp") -> Path:
    """Build directory for a network structure identified by ``key``."""
    check_device(device)
    return cache_root() / "brian" / ("standalone" if device == "cpp" else "cuda") / key


def use_runtime(target: RuntimeTarget = "numpy") -> None:
    """Switch Brian2 to runtime mode with code-generation target ``target``."""
    from brian2 import prefs, set_device

    if target not in TARGETS:
        raise ValueError(f"runtime target must be one of {TARGETS}, got {target!r}")
    set_device("runtime")
    prefs.codegen.target = target


def configure_cuda(
    compute_capability: Optional[float] = None,
    cuda_path: Optional[str] = None,
    gpu_id: int = 0,
    detect_gpus: Optional[bool] = None,
) -> None:
    """brian2cuda preferences; without a GPU (``detect_gpus=False``) code generation and nvcc still work.

    ``compute_capability`` defaults to ``$BIOCONV_CUDA_CC`` or 8.0, ``cuda_path`` to
    ``$CUDA_PATH`` or ``/usr/local/cuda``. ``detect_gpus`` defaults to True only when
    ``nvidia-smi`` exists (on a real GPU machine brian2cuda then picks the right values).
    """
    import brian2cuda  # noqa: F401  (registers the cuda_standalone device and its prefs)
    from brian2 import prefs

    if detect_gpus is None:
        detect_gpus = shutil.which("nvidia-smi") is not None and os.environ.get("BIOCONV_CUDA_DETECT", "1") == "1"
    prefs.devices.cuda_standalone.cuda_backend.detect_gpus = bool(detect_gpus)
    if not detect_gpus:
        prefs.devices.cuda_standalone.cuda_backend.gpu_id = int(gpu_id)
        prefs.devices.cuda_standalone.cuda_backend.compute_capability = float(
            compute_capability or float(os.environ.get("BIOCONV_CUDA_CC", "8.0"))
        )
    prefs.devices.cuda_standalone.cuda_backend.cuda_path = cuda_path or os.environ.get("CUDA_PATH", "/usr/local/cuda")
    curand = curand_paths()
    if curand is not None:
        include, lib = curand
        prefs.codegen.cpp.include_dirs = list(prefs.codegen.cpp.include_dirs) + [include]
        prefs.codegen.cpp.library_dirs = list(prefs.codegen.cpp.library_dirs) + [lib]
        prefs.codegen.cpp.runtime_library_dirs = list(prefs.codegen.cpp.runtime_library_dirs) + [lib]
    nvcc = list(NVCC_FLAGS) + ([f"-I{curand[0]}"] if curand is not None else [])  # device pass needs it too
    prefs.devices.cuda_standalone.cuda_backend.extra_compile_args_nvcc = nvcc


def curand_paths() -> Optional[tuple[str, str]]:
    """(include dir, lib dir) of cuRAND from the ``nvidia-curand`` wheel, or None if absent.

    The wheel puts ``curand.h`` and ``libcurand.so.N`` under ``nvidia/<cuXX>/`` (or
    ``nvidia/curand/``); nvcc links ``-lcurand``, which needs the unversioned ``libcurand.so``.
    """
    try:
        import nvidia  # type: ignore[import-not-found]
    except ImportError:
        return None
    for root in map(Path, list(nvidia.__path__)):
        for header in sorted(root.glob("*/include/curand.h")):
            lib = header.parent.parent / "lib"
            versioned = sorted(lib.glob("libcurand.so.*"))
            if versioned and not (lib / "libcurand.so").exists():
                try:
                    (lib / "libcurand.so").symlink_to(versioned[-1].name)
                except OSError:
                    log.warning("could not create %s; linking -lcurand may fail", lib / "libcurand.so")
            return str(header.parent), str(lib)
    return None


def begin_standalone(device: Device, directory: Path, conv_synapses: bool = False) -> None:
    """Reset Brian2 and select a standalone device that builds into ``directory`` (no build on run).

    ``conv_synapses`` selects bioconv's extension of the device (``bioconv_cpp_standalone`` or
    ``bioconv_cuda_standalone``, :mod:`bioconv.engines.convsyn`), which adds weight-shared
    convolution synapses and is otherwise the same device.
    """
    from brian2 import device as brian_device
    from brian2 import prefs, set_device

    check_device(device)
    if device == "runtime":
        raise ValueError("begin_standalone needs device 'cpp' or 'cuda'")
    if device == "cuda":
        configure_cuda()
    name = _BRIAN_DEVICE[device]
    if conv_synapses:
        from bioconv.engines.convsyn import register

        name = register(cuda=device == "cuda")
    brian_device.reinit()
    set_device(name, directory=str(directory), build_on_run=False)
    prefs.codegen.cpp.extra_compile_args_gcc = list(GCC_FLAGS)
    prefs.devices.cpp_standalone.extra_make_args_unix = ["-j", str(os.cpu_count() or 1)]
    prefs.devices.cpp_standalone.openmp_threads = 0


def build_standalone(directory: Path, compile: bool = True) -> float:
    """Generate (and compile) the project of the current standalone device; returns seconds."""
    from brian2 import device as brian_device

    start = time.perf_counter()
    brian_device.build(directory=str(directory), compile=compile, run=False, with_output=False)
    return time.perf_counter() - start


def array_filename(var) -> str:
    """File name (inside a results directory) of a Brian2 array variable in the current standalone project."""
    from brian2 import device as brian_device

    return brian_device.get_array_filename(var)


def end_standalone() -> None:
    """Forget the standalone project and return to runtime mode (numpy target)."""
    from brian2 import device as brian_device

    brian_device.reinit()
    use_runtime("numpy")


def run_binary(directory: Path, results_dir: Path, args: Sequence[str]) -> dict:
    """Run ``./main`` of a built project with command-line ``args`` (``name=value``).

    Returns ``{"seconds": wall time, "cpu_seconds": user + system CPU time of the binary,
    "network_seconds": CPU time of the simulation loop alone (Brian2 measures it with std::clock), "max_rss_bytes": peak resident
    memory}`` (CPU time stays meaningful on a loaded machine). The binary
    reads static arrays relative to ``directory`` and writes results to ``results_dir``.
    """
    results_dir.mkdir(parents=True, exist_ok=True)
    cmd = ["./main", "--results_dir", os.path.join(str(results_dir.resolve()), "")] + list(args)
    start = time.perf_counter()
    peak = 0
    with open(results_dir / "stdout.txt", "wb") as out:
        proc = subprocess.Popen(cmd, cwd=directory, stdout=out, stderr=subprocess.STDOUT)
        status_file = Path(f"/proc/{proc.pid}/status")
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            try:  # VmHWM: peak resident memory of the binary itself
                for line in status_file.read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]) * 1024)
            except (OSError, ValueError, IndexError):
                pass
            time.sleep(0.02)
        proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        text = (results_dir / "stdout.txt").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"standalone binary in {directory} failed (exit {proc.returncode}):\n{text}")
    text = (results_dir / "stdout.txt").read_text(errors="replace")
    if "Error reading" in text or "Cannot set unknown variable" in text:
        raise RuntimeError(f"standalone binary in {directory} rejected a run argument:\n{text[-2000:]}")
    cpu = float(usage.ru_utime + usage.ru_stime)
    try:  # Brian2 writes the (CPU) time of the network loop alone, without setup, here
        network_s = float((results_dir / "last_run_info.txt").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        network_s = float("nan")
    return {"seconds": seconds, "cpu_seconds": cpu, "network_seconds": network_s, "max_rss_bytes": peak}
