"""Secrets of the line links (the MQTT password): from an environment variable or from a file
only its owner may read, never from ``station.json``, never logged, exported or sent to a
browser. A file that others may read is refused with the command that fixes it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from core.errors import InspectorError


def read_secret(env: str, file: str | None, what: str) -> str | None:
    """The secret in ``$env``, else in ``file`` (its first line), else None."""
    if os.environ.get(env):
        return os.environ[env]
    if not file:
        return None
    path = Path(file).expanduser()
    try:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise InspectorError(f"{what} file {path} may be read by other users: run "
                                 f"'chmod 600 {path}' (owner only), or set {env} instead")
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InspectorError(f"cannot read the {what} file {path} ({exc.strerror}): check the "
                             f"path, or set {env} instead") from exc
    if not lines or not lines[0]:
        raise InspectorError(f"{what} file {path} is empty: write the {what} on its first line")
    return lines[0]
