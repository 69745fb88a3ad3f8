"""Where a station keeps its tools, and how files are written so a power cut never corrupts them."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

APP_ROOT = Path(__file__).resolve().parents[2]  # core/store/workspace.py -> the app folder


def workspace_root() -> Path:
    """The station's workspace: ``$INSPECTOR_HOME`` or ``models/`` beside the app."""
    home = os.environ.get("INSPECTOR_HOME")
    return Path(home).expanduser().resolve() if home else APP_ROOT / "models"


def atomic_write_bytes(path: Path, data: bytes, make_parents: bool = True) -> None:
    """Write to a temporary file, flush it to disk, then rename over the target.

    A rename is atomic on POSIX and Windows, so a reader (or a power cut) sees either the old
    file or the new one, never half of one. ``make_parents=False``: a missing folder is an
    OSError, not created (a writer that must never bring back a folder deleted meanwhile).
    """
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_json(path: Path, payload: Any, make_parents: bool = True) -> None:
    atomic_write_bytes(path, (json.dumps(payload, indent=2, sort_keys=False) + "\n").encode(),
                       make_parents)


def fsync_dir(folder: Path) -> None:
    if os.name == "posix":
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
