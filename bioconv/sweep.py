r"""Cached parameter sweeps: a config grid, ``run_one(cfg) -> DataFrame``, one parquet per config.

A study is a list of JSON-serializable config dicts and a pure function ``run_one`` that
turns one config into a tidy :class:`pandas.DataFrame`. :func:`run_sweep` stores each
result under ``out_dir/<study>/<hash>.parquet`` with a JSON beside it holding the config,
git commit, dirty flag, package versions and seed. The hash is

.. math:: h = \mathrm{sha256}(\mathrm{json}(\mathrm{cfg}, \text{sorted keys}))[:16]

so a config always maps to the same file. A config counts as done only when both files
exist; the parquet is written first and the JSON last, each atomically (temp file +
rename), so a sweep killed at any point leaves either a complete result or none, and a
re-run computes exactly the missing configs.

Config keys starting with ``_`` (:data:`RUNTIME_PREFIX`) are runtime settings that do not
change the result (cache folders, worker counts, threads): they reach ``run_one`` but are
left out of the hash, the stored config and the table columns.

Executors: ``"local"`` runs in this process (``workers=1``) or in a
:class:`concurrent.futures.ProcessPoolExecutor`; ``"dask"`` submits to a Dask
distributed scheduler (``scheduler="tcp://host:port"``) or, without an address, to a
:class:`distributed.LocalCluster` on loopback. Results always come back to this process,
which alone writes files (workers need no shared filesystem).

Dying cleanly: process-pool workers exit when the sweep's process dies, even by SIGKILL
(on Linux the kernel sends them SIGKILL, ``prctl(PR_SET_PDEATHSIG)``; everywhere a watchdog
thread in each worker exits once its parent process id changes). Temporary files of writes
that a kill interrupted are removed at the next start (:func:`bioconv.atomic.clean_stale_temps`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Mapping, Optional, Sequence

import pandas as pd
from tqdm.auto import tqdm

from bioconv.atomic import atomic_path, clean_stale_temps
from bioconv.simulation import write_table_atomic

log = logging.getLogger(__name__)

Executor = Literal["local", "dask"]
EXECUTORS: tuple[str, ...] = ("local", "dask")
PACKAGES = ("bioconv", "numpy", "pandas", "brian2", "torch", "matplotlib", "dask", "distributed")
REPO = Path(__file__).resolve().parents[1]
RUNTIME_PREFIX = "_"
WATCHDOG_INTERVAL_S = 0.2


def hashed_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The config without its runtime keys (those starting with :data:`RUNTIME_PREFIX`)."""
    return {k: v for k, v in cfg.items() if not str(k).startswith(RUNTIME_PREFIX)}


def config_hash(cfg: Mapping[str, Any]) -> str:
    """16 hex digits of the SHA-256 of the config (runtime keys left out) as canonical JSON (sorted keys)."""
    try:
        text = json.dumps(hashed_config(cfg), sort_keys=True, separators=(",", ":"))
    except TypeError as exc:
        raise ValueError(f"study configs must be JSON-serializable (numbers, strings, lists): {exc}") from exc
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def provenance() -> dict[str, Any]:
    """Git commit, dirty flag and package versions of the running code."""
    def git(*args: str) -> Optional[str]:
        try:
            out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": git("rev-parse", "HEAD"), "git_dirty": None if status is None else bool(status),
            "versions": versions}


def _write_json_atomic(data: Mapping[str, Any], path: Path) -> None:
    with atomic_path(path) as tmp, open(tmp, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=True, default=str)


class ResultCache:
    """The folder of one study: ``<hash>.parquet`` + ``<hash>.json`` per finished config."""

    def __init__(self, root: str | os.PathLike, study: str) -> None:
        self.dir = Path(root) / study
        self.study = study

    def paths(self, cfg: Mapping[str, Any]) -> tuple[Path, Path]:
        h = config_hash(cfg)
        return self.dir / f"{h}.parquet", self.dir / f"{h}.json"

    def has(self, cfg: Mapping[str, Any]) -> bool:
        table, meta = self.paths(cfg)
        return table.exists() and meta.exists()

    def load(self, cfg: Mapping[str, Any]) -> pd.DataFrame:
        return pd.read_parquet(self.paths(cfg)[0])

    def store(self, cfg: Mapping[str, Any], table: pd.DataFrame, prov: Mapping[str, Any], seconds: float) -> None:
        if not isinstance(table, pd.DataFrame):
            raise ValueError(f"run_one must return a pandas DataFrame, got {type(table).__name__}")
        self.dir.mkdir(parents=True, exist_ok=True)
        table_path, meta_path = self.paths(cfg)
        write_table_atomic(table, table_path)  # the JSON, written last, marks the config as done
        _write_json_atomic({"study": self.study, "config": hashed_config(cfg), "hash": config_hash(cfg),
                            "seed": cfg.get("seed"), "rows": int(len(table)), "seconds": seconds, **prov},
                           meta_path)


def _timed(run_one: Callable[[dict], pd.DataFrame], cfg: dict) -> tuple[pd.DataFrame, float]:
    import time

    t0 = time.perf_counter()
    table = run_one(cfg)
    return table, time.perf_counter() - t0


def _with_config_columns(table: pd.DataFrame, cfg: Mapping[str, Any]) -> pd.DataFrame:
    """Add scalar config entries as columns (existing columns win) and the config hash."""
    table = table.copy()
    for key, value in hashed_config(cfg).items():
        if key not in table.columns and (value is None or isinstance(value, (str, int, float, bool))):
            table[key] = value
    table["config_hash"] = config_hash(cfg)
    return table


def run_sweep(
    study: str,
    configs: Sequence[Mapping[str, Any]],
    run_one: Callable[[dict], pd.DataFrame],
    out_dir: str | os.PathLike = "results/studies",
    executor: Executor = "local",
    workers: int = 1,
    scheduler: Optional[str] = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Run every config not yet cached, store each result, return all results concatenated.

    Parameters
    ----------
    study : folder name under ``out_dir``.
    configs : JSON-serializable dicts; duplicates are run once.
    run_one : module-level function (picklable by reference for process pools and Dask).
    executor : ``"local"`` (in-process if ``workers == 1``, else a process pool) or ``"dask"``.
    scheduler : Dask scheduler address; ``None`` starts a LocalCluster on 127.0.0.1.

    Returns
    -------
    DataFrame of all configs in grid order, with the scalar config entries and
    ``config_hash`` added as columns.
    """
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}, got {executor!r}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    unique: dict[str, dict] = {}
    for cfg in configs:
        unique.setdefault(config_hash(cfg), dict(cfg))
    cache = ResultCache(out_dir, study)
    clean_stale_temps(cache.dir)
    todo = [cfg for cfg in unique.values() if not cache.has(cfg)]
    log.info("study %s: %d configs, %d cached, %d to run", study, len(unique), len(unique) - len(todo), len(todo))
    if todo:
        prov = provenance()
        bar = tqdm(total=len(todo), desc=study, disable=not progress, leave=False)
        try:
            for cfg, (table, seconds) in _execute(todo, run_one, executor, workers, scheduler):
                cache.store(cfg, table, prov, seconds)
                bar.update(1)
        finally:
            bar.close()
    tables = [_with_config_columns(cache.load(cfg), cfg) for cfg in unique.values()]
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def _execute(todo: list[dict], run_one: Callable, executor: str, workers: int,
             scheduler: Optional[str]) -> Iterable[tuple[dict, tuple[pd.DataFrame, float]]]:
    """Yield (config, (table, seconds)) as results finish."""
    if executor == "dask":
        yield from _execute_dask(todo, run_one, workers, scheduler)
    elif workers == 1:
        for cfg in todo:
            yield cfg, _timed(run_one, cfg)
    else:
        with ProcessPoolExecutor(max_workers=workers, initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
            futures = {pool.submit(_timed, run_one, cfg): cfg for cfg in todo}
            for fut in as_completed(futures):
                yield futures[fut], fut.result()


def die_with_parent(parent_pid: int) -> None:
    """Make this (worker) process exit when ``parent_pid`` dies, even by SIGKILL.

    Linux: ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` (the kernel kills us when the parent goes).
    Everywhere: a daemon thread polls :func:`os.getppid` every :data:`WATCHDOG_INTERVAL_S`
    and calls ``os._exit`` once it differs from ``parent_pid`` (we were re-parented).
    """
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):  # pragma: no cover - the watchdog still works
            log.debug("prctl(PR_SET_PDEATHSIG) unavailable; relying on the watchdog thread")
    if os.getppid() != parent_pid:  # the parent died before we got here
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(WATCHDOG_INTERVAL_S)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="bioconv-parent-watchdog", daemon=True).start()


def _execute_dask(todo: list[dict], run_one: Callable, workers: int,
                  scheduler: Optional[str]) -> Iterable[tuple[dict, tuple[pd.DataFrame, float]]]:
    try:
        from distributed import Client, LocalCluster, as_completed as dask_completed
    except ImportError as exc:  # pragma: no cover - dask is an optional dependency
        raise ValueError("executor 'dask' needs dask and distributed: pip install -e '.[dask]'") from exc
    cluster = None
    if scheduler is None:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, host="127.0.0.1", protocol="tcp://",
                               scheduler_port=0, dashboard_address=None, processes=workers > 1)
        client = Client(cluster)
    else:
        client = Client(scheduler)
    try:
        futures = {client.submit(_timed, run_one, cfg, pure=False): i for i, cfg in enumerate(todo)}
        for fut in dask_completed(list(futures)):
            yield todo[futures[fut]], fut.result()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
