"""``/proc/<pid>/stat`` read with the stdlib, for the suite's helpers and
the canary: what a test checks must not share the library's bugs.

Stdlib only: the canary, the programs the helpers start (some as another
uid) and the inner pytest runs import it too.
"""
from __future__ import annotations


def stat_fields(pid: int) -> list[bytes] | None:
    """The fields after the command name, split: ``[state, ppid, ...]``
    (``[19]``: the start time in clock ticks); None when the pid is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rindex(b")") + 2:].split()
