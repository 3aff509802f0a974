"""Sweeps die cleanly: process-pool workers exit with a SIGKILLed parent; killed writes leave no temp files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd

from bioconv.atomic import atomic_path, clean_stale_temps
from bioconv.sweep import config_hash, run_sweep

REPO = Path(__file__).resolve().parents[1]


def _alive(pid: int) -> bool:
    """A process exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def _python(script: str, tmp_path: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_for(condition, timeout_s: float) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_pool_workers_exit_when_the_parent_is_killed(tmp_path):
    pids = tmp_path / "pids"
    pids.mkdir()
    parent = _python(f"""
        import os, time
        import pandas as pd
        from bioconv.sweep import run_sweep

        def sleepy(cfg):
            open(os.path.join({str(pids)!r}, str(os.getpid())), "w").close()
            time.sleep(120)
            return pd.DataFrame({{"x": [cfg["x"]]}})

        if __name__ == "__main__":
            run_sweep("sleepy", [{{"x": i}} for i in range(4)], sleepy, "out", workers=2, progress=False)
        """, tmp_path)
    try:
        assert _wait_for(lambda: len(list(pids.iterdir())) >= 2, 60), "the workers never started"
        workers = [int(p.name) for p in pids.iterdir()]
        assert all(_alive(pid) for pid in workers)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        assert _wait_for(lambda: not any(_alive(pid) for pid in workers), 3.0), \
            f"workers {[p for p in workers if _alive(p)]} still alive 3 s after SIGKILL of their parent"
    finally:
        if parent.poll() is None:
            parent.kill()
        for p in pids.iterdir():
            if _alive(int(p.name)):
                os.kill(int(p.name), signal.SIGKILL)


def test_killed_write_leaves_a_temp_file_that_the_next_sweep_removes(tmp_path):
    folder = tmp_path / "out" / "toy"
    folder.mkdir(parents=True)
    writer = _python(f"""
        import time
        from bioconv.atomic import atomic_path
        with atomic_path({str(folder / "result.parquet")!r}) as tmp:
            tmp.write_bytes(b"half a table")
            open({str(tmp_path / "ready")!r}, "w").close()
            time.sleep(120)
        """, tmp_path)
    assert _wait_for(lambda: (tmp_path / "ready").exists(), 60)
    writer.send_signal(signal.SIGKILL)
    writer.wait(10)
    stale = list(folder.glob("*.tmp"))
    assert len(stale) == 1 and f"pid{writer.pid}" in stale[0].name
    # a temp file of a live writer (this process's parent) must survive the cleanup
    live = folder / f"other.parquet.abc.pid{os.getppid()}.tmp"
    live.write_bytes(b"being written")
    table = run_sweep("toy", [{"x": 1}], _one_row, tmp_path / "out", progress=False)
    assert len(table) == 1
    assert not stale[0].exists() and live.exists()
    assert not (folder / "result.parquet").exists()


def test_clean_stale_temps_only_touches_atomic_temp_names(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    (tmp_path / f"a.csv.x1.pid{pid}.tmp").write_text("x")
    (tmp_path / "notes.tmp").write_text("not ours")
    with atomic_path(tmp_path / "b.csv") as tmp:
        tmp.write_text("1")
        assert f"pid{os.getpid()}" in tmp.name
        assert clean_stale_temps(tmp_path) == [tmp_path / f"a.csv.x1.pid{pid}.tmp"]
        assert tmp.exists()  # our own write in progress is kept
    assert (tmp_path / "notes.tmp").exists() and (tmp_path / "b.csv").read_text() == "1"


def test_runtime_keys_are_not_hashed_nor_columns(tmp_path):
    assert config_hash({"a": 1, "_cache_dir": "/x"}) == config_hash({"a": 1})
    table = run_sweep("toy", [{"x": 2, "_threads": 4}], _one_row, tmp_path / "out", progress=False)
    assert "_threads" not in table.columns and table.x.tolist() == [2]


def _one_row(cfg: dict) -> pd.DataFrame:
    return pd.DataFrame({"value": [cfg["x"]]})
