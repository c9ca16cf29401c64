"""Where a tractor runtime binds its Unix sockets: the bindspace dir.

Its own module so that actor recognition (`recognise`, run by every
`procfs.scan`) can find the dir without importing `bindspace`, which scans
through `procfs`: no import cycle.
"""
from __future__ import annotations

import os

from .errors import DiagError

APP = "tractor"


def default_dir(app: str = APP) -> tuple[str, list[str]]:
    """``platformdirs.user_runtime_dir(app)`` as the runtime computes it.

    -> (dir, notes). platformdirs warns (once per process) when it falls back
    because ``XDG_RUNTIME_DIR`` is unset; that fact goes into the notes instead.
    """
    import warnings

    import platformdirs

    notes: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            path = platformdirs.user_runtime_dir(app)
        except OSError as exc:  # the fallback dir is someone else's, etc.
            raise DiagError(f"cannot resolve the runtime dir: {exc}") from None
    if not os.environ.get("XDG_RUNTIME_DIR"):
        notes.append(f"XDG_RUNTIME_DIR is not set; platformdirs' fallback is {os.path.dirname(path)}")
    return path, notes
