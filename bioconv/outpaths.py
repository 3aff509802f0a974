"""Check an output path before the slow work, so a bad ``--out`` fails at once and loses nothing."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence


def check_output_path(path: str | os.PathLike, option: str = "--out",
                      suffixes: Optional[Sequence[str]] = None) -> Path:
    """``path`` if a file can be written there (atomically, by the caller), else ``ValueError``.

    Refused: an existing directory, a path below a file, a folder without write
    permission, and (with ``suffixes``) another file extension. Missing parent folders are
    fine (they are created when the file is written) if the nearest existing one is writable.
    """
    path = Path(path)
    if str(path) in ("", "."):
        raise ValueError(f"{option} is empty; give a file name")
    if path.is_dir():
        raise ValueError(f"{option} {path} is an existing directory; give a file name inside it")
    if suffixes is not None and path.suffix.lower() not in suffixes:
        raise ValueError(f"{option} {path} must end in {' or '.join(suffixes)}")
    parent = path.parent.absolute()
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{option} {path} lies below {parent}, which is a file, not a folder")
    missing = path.parent.absolute() != parent
    if not os.access(parent, os.W_OK | os.X_OK):
        what = "create folders in" if missing else "write to"
        raise ValueError(f"{option} {path}: cannot {what} {parent} (no permission); choose another place")
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"{option} {path} exists and is not writable; choose another file")
    return path
