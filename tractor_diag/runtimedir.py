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


def possible_dirs(app: str = APP) -> list[str]:
    """Every dir `default_dir` can answer, without asking platformdirs.

    platformdirs picks ``$XDG_RUNTIME_DIR`` (when absolute), else
    ``/run/user/<euid>``, else ``runtime-<euid>`` in the temporary dir, each
    after checks on owner and mode; the temporary dir is the first usable of
    ``$TMPDIR``, ``$TEMP``, ``$TMP``, ``/tmp``, ``/var/tmp``, ``/usr/tmp`` and
    the working dir. Importing it costs more than a whole `procfs.scan` of a
    small tree, so recognition looks in all of these and believes a socket
    file only where the kernel has it listening.
    """
    euid = os.geteuid()
    out = []
    xdg = os.environ.get("XDG_RUNTIME_DIR", "")
    if os.path.isabs(xdg):
        out.append(os.path.join(xdg, app))
    out.append(f"/run/user/{euid}/{app}")
    temps = [os.environ.get(name) for name in ("TMPDIR", "TEMP", "TMP")]
    temps = [os.path.abspath(t) for t in temps if t]
    temps += ["/tmp", "/var/tmp", "/usr/tmp"]
    try:
        temps.append(os.getcwd())
    except OSError:  # the working dir is gone
        pass
    for t in temps:
        path = os.path.join(t, f"runtime-{euid}", app)
        if path not in out:
            out.append(path)
    return out
