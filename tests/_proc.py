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


def blank_own_cmdline() -> None:
    """Make this process's ``/proc/<pid>/cmdline`` empty, as a kernel
    thread's is (``PR_SET_MM_MAP`` with an empty argument area: no
    capability needed, unlike the single-field ``PR_SET_MM`` calls)."""
    import ctypes
    import os

    libc = ctypes.CDLL(None, use_errno=True)
    names = ("start_code", "end_code", "start_data", "end_data", "start_brk", "brk",
             "start_stack", "arg_start", "arg_end", "env_start", "env_end")

    class MmMap(ctypes.Structure):
        _fields_ = [*((n, ctypes.c_uint64) for n in names),
                    ("auxv", ctypes.c_void_p), ("auxv_size", ctypes.c_uint32),
                    ("exe_fd", ctypes.c_uint32)]

    f = stat_fields(os.getpid())
    field = lambda n: int(f[n - 3])  # noqa: E731 - stat(5) numbers its fields from 1
    libc.sbrk.restype = ctypes.c_void_p
    mm = MmMap(field(26), field(27), field(45), field(46), field(47), libc.sbrk(0),
               field(28), field(48), field(48), field(50), field(51), None, 0, 0xFFFFFFFF)
    if libc.prctl(35, 14, ctypes.byref(mm), ctypes.sizeof(mm), 0) != 0:  # PR_SET_MM, PR_SET_MM_MAP
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_MM_MAP)")
    with open("/proc/self/cmdline", "rb") as cmdline:
        assert cmdline.read() == b"", "the command line is still there"


def open_proc_files(pids: set[int] | None = None) -> list[str]:
    """The ``/proc/<pid>/<file>`` paths this process holds open (of
    ``pids`` only, when given)."""
    import os

    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        parts = target.split("/")
        if (len(parts) == 4 and parts[1] == "proc" and parts[2].isdigit()
                and (pids is None or int(parts[2]) in pids)):
            out.append(target)
    return out
