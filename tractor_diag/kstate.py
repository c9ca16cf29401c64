"""Kernel state of a process beyond one `/proc` pass: signal dispositions,
tracer, context switches, scheduler time and when it last ran.

Two samples some time apart tell a runaway from a busy process the way the
kernel sees it: a runaway spends the whole window on a CPU or queued for
one and never gives the CPU up voluntarily; CPU% alone halves when another
spinner shares the core. Everything is the main thread's (the thread group
leader's ``/proc/<pid>/...`` files), which is where trio runs.

A process that vanishes between reads yields ``None``; a file a kernel does
not have leaves its fields ``None``.
"""
from __future__ import annotations

import os
import time

from .procfs import status_field as _field
from .whymodel import KernelSample

_O_DIR = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)


def _read(name: str, dfd: int) -> bytes:
    fd = os.open(name, os.O_RDONLY, dir_fd=dfd)
    try:
        return os.read(fd, 65536)
    finally:
        os.close(fd)


def _hex(v: bytes | None) -> int | None:
    try:
        return None if v is None else int(v, 16)
    except ValueError:
        return None


def _int(v: bytes | None) -> int | None:
    try:
        return None if v is None else int(v)
    except ValueError:
        return None


def sample(pid: int, create_time: float | None = None, *, last_ran: bool = False) -> KernelSample | None:
    """One read of ``pid``'s kernel state; ``None`` when it is gone (or, with
    ``create_time``, when the pid now belongs to another process).
    ``last_ran`` also reads ``/proc/<pid>/sched`` (when it last ran)."""
    from .procfs import parse_stat

    try:
        dfd = os.open(f"/proc/{pid}", _O_DIR)
    except OSError:
        return None
    try:
        try:
            stat = _read("stat", dfd)
            status = b"\n" + _read("status", dfd)
        except OSError:
            return None
        at = time.monotonic()
        st = parse_stat(stat)
        if st is None:
            return None
        start = st.create_time
        if create_time is not None and abs(start - create_time) > 0.05:
            return None
        s = KernelSample(
            pid=pid, create_time=start, at=at, state=st.state,
            sig_ignored=_hex(_field(status, b"SigIgn")),
            sig_blocked=_hex(_field(status, b"SigBlk")),
            sig_caught=_hex(_field(status, b"SigCgt")),
            tracer_pid=_int(_field(status, b"TracerPid")),
            vol_ctx=_int(_field(status, b"voluntary_ctxt_switches")),
            invol_ctx=_int(_field(status, b"nonvoluntary_ctxt_switches")),
        )
        try:
            w = _read("wchan", dfd).decode("ascii", "replace").strip()
            s.wchan = "" if w == "0" else w
        except OSError:
            pass
        try:
            parts = _read("schedstat", dfd).split()
            s.run_ns, s.wait_ns = int(parts[0]), int(parts[1])
        except (OSError, ValueError, IndexError):
            pass
        if last_ran:
            s.last_ran = _last_ran(dfd)
        if s.tracer_pid:
            s.tracer_comm = _comm(s.tracer_pid)
        if any(w in (s.wchan or "") for w in ("do_wait", "wait4", "waitid")):
            s.wait_pid = _waited_pid(dfd)
        return s
    finally:
        os.close(dfd)


def _exec_start(text: bytes) -> float | None:
    """``se.exec_start`` of a ``sched`` file, in seconds of the scheduler
    clock."""
    i = text.find(b"se.exec_start")
    if i < 0:
        return None
    try:
        return float(text[i:].split(b"\n", 1)[0].split(b":", 1)[1]) / 1000.0
    except (ValueError, IndexError):
        return None


# (scheduler clock -> time.monotonic() offset, when it was measured)
_SCHED_OFFSET: list[float] = []


def _sched_offset() -> float:
    """What to add to the scheduler clock to read it as ``time.monotonic()``.
    Both count from boot, but not from the same instant: on a VM the
    scheduler clock can run seconds behind, which read as seconds more of
    "not run since". Measured on this thread, which is running now (its
    exec_start is at most a tick old: durations come out that much short,
    never long); again every few seconds, as the two clocks drift."""
    now = time.monotonic()
    if _SCHED_OFFSET and now - _SCHED_OFFSET[1] < 5.0:
        return _SCHED_OFFSET[0]
    try:
        with open("/proc/thread-self/sched", "rb") as f:
            mine = _exec_start(f.read())
    except OSError:
        mine = None
    offset = now - mine if mine is not None else 0.0
    _SCHED_OFFSET[:] = [offset, now]
    return offset


def _last_ran(dfd: int) -> float | None:
    """When the process's main thread last ran (``se.exec_start``), as a
    ``time.monotonic()`` value."""
    try:
        text = _read("sched", dfd)
    except OSError:
        return None
    start = _exec_start(text)
    return None if start is None else start + _sched_offset()


# wait4 / waitid syscall numbers, by machine
_WAIT_SYSCALLS = {"x86_64": {61: "wait4", 247: "waitid"},
                  "aarch64": {260: "wait4", 95: "waitid"}}.get(os.uname().machine, {})


def _waited_pid(dfd: int) -> int | None:
    """The pid a thread blocked in wait4/waitid names (``syscall``: the
    number, then the arguments). None for "any child" or unknown."""
    try:
        parts = _read("syscall", dfd).split()
        nr = int(parts[0])
        if nr not in _WAIT_SYSCALLS:
            return None
        arg = int(parts[1], 16) if _WAIT_SYSCALLS[nr] == "wait4" else int(parts[2], 16)
    except (OSError, ValueError, IndexError):
        return None
    arg &= 0xFFFFFFFF
    return arg if 0 < arg < 0x80000000 else None


def _comm(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/comm", "rb") as f:
            return f.read().decode("utf-8", "replace").strip()
    except OSError:
        return None


def sample_many(procs, *, last_ran: bool = False) -> dict[int, KernelSample]:
    """``{pid: sample}`` for `Proc`-like records (``pid``, ``create_time``);
    vanished processes are left out."""
    out: dict[int, KernelSample] = {}
    for p in procs:
        s = sample(p.pid, p.create_time, last_ran=last_ran)
        if s is not None:
            out[p.pid] = s
    return out


def activity(pid: int) -> tuple | None:
    """What tells whether ``pid`` did anything between two readings: each
    thread's id, state, wchan and time spent on a CPU (nanoseconds, from
    ``schedstat``). Two equal readings: no thread of it ran in between, so
    nothing its stacks, task tree or signal masks show can have changed.
    None when it is gone or a file is missing (nothing can be told)."""
    from .procfs import parse_stat

    try:
        tids = sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))
        dfd = os.open(f"/proc/{pid}/task", _O_DIR)
    except (OSError, ValueError):
        return None
    out = []
    try:
        for tid in tids:
            try:
                tfd = os.open(str(tid), _O_DIR, dir_fd=dfd)
            except OSError:
                return None  # a thread ended meanwhile: it ran
            try:
                st = parse_stat(_read("stat", tfd))
                wchan = _read("wchan", tfd).strip()
                run_ns = int(_read("schedstat", tfd).split()[0])
            except (OSError, ValueError, IndexError):
                return None
            finally:
                os.close(tfd)
            if st is None:
                return None
            out.append((tid, st.state, wchan, run_ns))
    finally:
        os.close(dfd)
    return tuple(out)


def same_waits(a: tuple | None, b: tuple | None) -> bool:
    """Two `activity` readings show each thread that is in both where it
    was (state and wchan), whatever ran in between: a py-spy attach or a
    task-tree signal wakes a process, which then waits where it did (the
    dump may start a worker thread, or let an idle one end)."""
    if a is None or b is None:
        return False
    before = {t[0]: t[1:3] for t in a}
    common = [t for t in b if t[0] in before]
    return bool(common) and all(before[t[0]] == t[1:3] for t in common)


def idle_since(was: tuple | None, now: tuple | None) -> bool:
    """Between two `activity` readings no thread of the process ran: every
    thread of ``now`` reads as it did in ``was``. A thread of ``was`` that
    ended meanwhile is let go: an idle worker that times out (trio's thread
    cache, after a task-tree dump) wakes nobody, and a thread whose end
    mattered to another woke it, which then reads otherwise."""
    if was is None or now is None:
        return False
    before = {t[0]: t for t in was}
    return all(before.get(t[0]) == t for t in now)


def signal_set(mask: int | None) -> set[int]:
    if not mask:
        return set()
    return {n + 1 for n in range(64) if mask >> n & 1}


def on_cpu_share(a: KernelSample, b: KernelSample) -> float | None:
    """(on-CPU + run-queue time) / window between two samples of a process."""
    if None in (a.run_ns, a.wait_ns, b.run_ns, b.wait_ns) or b.at <= a.at:
        return None
    return ((b.run_ns - a.run_ns) + (b.wait_ns - a.wait_ns)) / 1e9 / (b.at - a.at)  # type: ignore[operator]


def is_runaway(a: KernelSample, b: KernelSample, allowed_switches: int = 0) -> bool | None:
    """Runaway by the kernel's account: on a CPU or queued for one for
    nearly the whole window, and no voluntary context switch (but the
    ``allowed_switches`` our own ptrace attach or signal caused). ``None``
    when the kernel does not say."""
    from .classify import kernel_runaway

    if on_cpu_share(a, b) is None or a.vol_ctx is None or b.vol_ctx is None:
        return None
    if a.state != "R":
        # Asleep when the window opened: whatever kept it busy since began
        # inside the window, maybe our own attach or task request waking
        # it on a loaded box (a sleeper woken and queued for most of a
        # short window read as a runaway).
        return False
    return kernel_runaway(b.run_ns - a.run_ns, b.wait_ns - a.wait_ns,  # type: ignore[operator]
                          b.vol_ctx - a.vol_ctx, b.at - a.at, allowed_switches)
