"""Atomic file writes: nothing half-written is ever left at the destination.

Every writer in bioconv (graph files, checkpoints, tables, figures, sweep metadata, downloads)
goes through :func:`atomic_path`: it yields a temporary path in the destination's folder, and on
success gives the file the usual permissions (``0666 & ~umask``) and renames it into place with
``os.replace``; on any error the temporary file is removed.

A process killed mid-write (SIGKILL, power loss) cannot remove its temporary file. Temporary
names therefore carry the writer's process id (``<name>.<random>.pid<PID>.tmp``), and
:func:`clean_stale_temps` removes those whose writer is no longer alive (the sweeps call it
on their folders at every start), never a file that a running process is still writing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)
_TEMP = re.compile(r"^(?P<name>.+)\.[^.]+\.pid(?P<pid>\d+)\.tmp$")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=f".pid{os.getpid()}{suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes owner-only files
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def clean_stale_temps(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Remove temporary files of :func:`atomic_path` whose writing process is gone; returns them."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in folder.rglob("*.tmp") if recursive else folder.glob("*.tmp"):
        match = _TEMP.match(path.name)
        if match and int(match["pid"]) != os.getpid() and not _alive(int(match["pid"])):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    if removed:
        log.info("removed %d temporary files of killed writes in %s", len(removed), folder)
    return removed
