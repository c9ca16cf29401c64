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


def age(pid: int) -> float | None:
    """Seconds since ``pid`` started (the kernel's clock), None when gone."""
    import os

    fields = stat_fields(pid)
    if fields is None:
        return None
    hz = os.sysconf("SC_CLK_TCK")
    with open("/proc/uptime", "rb") as f:
        up = float(f.read().split()[0])
    return up - int(fields[19]) / hz


def wait_past_boot(pid: int, grace: float) -> None:
    """Sleep until ``pid`` is older than ``grace`` seconds: the runaway rule
    does not judge a process that may still be importing."""
    import time

    left = grace - (age(pid) or grace)
    if left > 0:
        time.sleep(left + 0.1)
