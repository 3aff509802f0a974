"""Run a study: its config grid through the cached sweep, then its figure from the tables.

Studies (figure numbers follow the MCR-Norm paper): response_curves,
rate_degeneration, norm_comparison, rate_range, convergence, accuracy_table, neuron_models,
dt_fidelity, conversion_acceptance (MCR-Norm vs max/robust in Brian2 cpp_standalone) and
plausibility (rates, irregularity, rasters and latency in the biologically plausible regime). Results go to
``--out/<study>[-quick]/<hash>.parquet`` (+ JSON provenance); finished configs are skipped,
so an interrupted study resumes. Figures (PDF, PNG and the plotted data as CSV) go to
``--figures`` (default ``figures/`` for full runs, ``<out>/figures-quick`` with ``--quick``).

Examples::

    bioconv study response_curves --quick
    bioconv study rate_range --engine torch --workers 2
    bioconv study accuracy_table --executor dask --scheduler tcp://10.0.0.5:8786
"""

from __future__ import annotations

import argparse
import importlib
import os
import time
from pathlib import Path

STUDIES = ("response_curves", "rate_degeneration", "norm_comparison", "rate_range", "convergence",
           "accuracy_table", "neuron_models", "dt_fidelity", "conversion_acceptance", "plausibility",
           "model_fidelity", "dt_convergence", "lif_training")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", choices=STUDIES + ("all",), help="which study ('all' runs every one)")
    parser.add_argument("--quick", action="store_true", help="small sample counts (CI); figures go to <out>/figures-quick")
    parser.add_argument("--engine", choices=("brian2", "torch"), default=None,
                        help="simulator for network studies (default: each study's own, torch for sweeps)")
    parser.add_argument("--ckpt", default=None, help="trained ANN checkpoint (default: runs/ann/cnn7-mnist.pt, "
                        "or with --quick a tiny net trained on the fly if that is missing)")
    parser.add_argument("--executor", choices=("local", "dask"), default="local", help="local process pool or Dask")
    parser.add_argument("--scheduler", default=None, help="Dask scheduler address (default: a LocalCluster on 127.0.0.1)")
    parser.add_argument("--workers", type=int, default=1, help="configs run in parallel (default 1)")
    parser.add_argument("--brian2-workers", type=int, default=1,
                        help="Brian2 standalone binaries run in parallel per simulation (default 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per simulation (default 1)")
    parser.add_argument("--out", default="results/studies", help="result cache folder (default results/studies)")
    parser.add_argument("--figures", default=None, help="figure folder (default figures/, or <out>/figures-quick)")


def configs_for(module, quick: bool, engine: str | None = None, ckpt: str | None = None,
                runtime: dict | None = None) -> list[dict]:
    """The study's grid with the command-line overrides applied (only to configs that have the key).

    ``runtime`` holds settings that do not change results (keys starting with ``_``, not hashed).
    """
    from studies import common

    configs = []
    for cfg in module.grid(quick):
        cfg = {**dict(cfg), **(runtime or {})}
        if engine is not None and "engine" in cfg and not getattr(module, "FIXED_ENGINE", None):
            cfg["engine"] = engine
        if "ckpt" in cfg:  # a concrete file and its SHA-256 in the hashed config
            common.set_checkpoint(cfg, str(Path(ckpt).resolve()) if ckpt is not None else cfg["ckpt"])
        configs.append(cfg)
    return configs


def run_study(name: str, quick: bool = False, engine: str | None = None, ckpt: str | None = None,
              executor: str = "local", scheduler: str | None = None, workers: int = 1,
              out: str | os.PathLike = "results/studies", figures: str | os.PathLike | None = None,
              brian2_workers: int = 1, threads: int = 1) -> list[Path]:
    """Sweep one study (cached) and draw its figure; returns the written figure files."""
    from bioconv.simulation import write_table_atomic
    from bioconv.sweep import run_sweep

    if name not in STUDIES:
        raise ValueError(f"unknown study {name!r}; choose one of {STUDIES}")
    module = importlib.import_module(f"studies.{name}")
    out = Path(out)
    runtime = {"_cache_dir": str((out / "_cache").resolve()), "_brian2_workers": brian2_workers,
               "_torch_threads": threads}
    folder = f"{name}-quick" if quick else name
    table = run_sweep(folder, configs_for(module, quick, engine, ckpt, runtime), module.run_one, out,
                      executor=executor, workers=workers, scheduler=scheduler)
    write_table_atomic(table, out / f"{folder}.parquet")
    fig_dir = Path(figures) if figures is not None else (out / "figures-quick" if quick else Path("figures"))
    return list(module.plot(table, fig_dir))


def run(args: argparse.Namespace) -> int:
    names = STUDIES if args.name == "all" else (args.name,)
    for name in names:
        t0 = time.perf_counter()
        paths = run_study(name, args.quick, args.engine, args.ckpt, args.executor, args.scheduler,
                          args.workers, args.out, args.figures, args.brian2_workers, args.threads)
        print(f"{name}: {time.perf_counter() - t0:.1f} s")
        for path in paths:
            print(f"  wrote {path}")
    return 0
