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


def _last_ran(dfd: int) -> float | None:
    """``se.exec_start`` (milliseconds of the scheduler clock, which counts
    from boot like CLOCK_MONOTONIC) as a ``time.monotonic()`` value."""
    try:
        text = _read("sched", dfd)
    except OSError:
        return None
    i = text.find(b"se.exec_start")
    if i < 0:
        return None
    try:
        ms = float(text[i:].split(b"\n", 1)[0].split(b":", 1)[1])
    except (ValueError, IndexError):
        return None
    return ms / 1000.0


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
