"""The one way this package signals a process: pinned by a pidfd, after its
identity is proven.

A pid is only a number the kernel hands out again once its process has been
reaped. A pidfd (``pidfd_open``) refers to one process for as long as it is
open: a signal sent through it (``pidfd_send_signal``) reaches that process
or nobody (``ESRCH`` once it has exited), never a newcomer with the same pid.

What is left to prove is that the pidfd refers to the process that was
*observed* (in a scan, on screen, in a plan). `Pin.open` does it in this
order:

1. ``pidfd_open(pid)``;
2. re-read ``/proc/<pid>/stat`` and ``cmdline``;
3. poll the pidfd: not exited yet means the pid still belonged to the pinned
   process when step 2 read it (a pid is reused only after its process has
   exited and been reaped), so what step 2 read describes the pinned process;
4. compare with what was observed: the start time in clock ticks, and the
   parent pid and the command line when given. A mismatch is `Replaced`.

The check is as exact as ``/proc`` allows: two processes with the same pid,
parent, command line and start tick (10 ms on most kernels) cannot be told
apart, so a replacement that matches all four in the moment between the
observation and step 1 passes. Everything after step 1 is exact.

Usage::

    pin = Pin.open(proc.pid, start_time=proc.create_time,
                   ppid=proc.ppid, cmdline=proc.cmdline)   # raises Gone / Replaced
    with pin:
        if pin.send(signal.SIGINT):        # False: it has exited
            pin.wait(5.0) or pin.send(signal.SIGKILL)

    pin = Pin.of_child(popen.pid)          # a child not yet waited for: no check needed

Without pidfds (Linux < 5.3) nothing is signalled: `NoPidfd`. There is no
fallback to ``kill(2)`` by pid.

Stdlib only at import time (the readers are imported when first needed).
"""
from __future__ import annotations

import os
import select
import signal

from .errors import DiagError, Unsupported

__all__ = ["Pin", "PinError", "Gone", "Replaced", "NoPidfd", "supported"]


class PinError(DiagError):
    """The process cannot be pinned; ``outcome`` says why in one word."""

    outcome = "error"


class Gone(PinError):
    """The observed process has exited (or its pid is free)."""

    outcome = "gone"


class Replaced(PinError):
    """The pid now belongs to another process than the observed one."""

    outcome = "replaced"


class NoPidfd(Unsupported):
    """This kernel or Python has no pidfds: nothing may be signalled."""

    outcome = "unsupported"


_SUPPORTED: bool | None = None


def supported() -> bool:
    """Can this process open pidfds and signal through them?"""
    global _SUPPORTED
    if _SUPPORTED is None:
        ok = hasattr(os, "pidfd_open") and hasattr(signal, "pidfd_send_signal")
        if ok:
            try:
                os.close(os.pidfd_open(os.getpid()))
            except OSError:
                ok = False
        _SUPPORTED = ok
    return _SUPPORTED


def _require() -> None:
    if not supported():
        raise NoPidfd("signalling needs pidfds (Linux 5.3 or newer): "
                      "refusing to signal a process by its pid alone")


def _pidfd(pid: int) -> int:
    _require()
    if pid <= 0:
        raise Gone(f"pid {pid} is not a process")
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        raise Gone(f"pid {pid} has exited") from None
    except OSError as exc:
        raise PinError(f"pid {pid}: pidfd_open: {exc.strerror}") from None


def _polled(fd: int, timeout: float) -> bool:
    p = select.poll()
    p.register(fd, select.POLLIN)
    return bool(p.poll(max(0, int(timeout * 1000))))


class Pin:
    """One process, held by a pidfd. Build it with `open` or `of_child`."""

    __slots__ = ("pid", "start_ticks", "ppid", "cmdline", "_fd")

    def __init__(self, pid: int, fd: int, start_ticks: int | None,
                 ppid: int | None, cmdline: list[str] | None):
        self.pid = pid
        self.start_ticks = start_ticks  # as read when pinned
        self.ppid = ppid  # as read when pinned (it changes when orphaned)
        self.cmdline = cmdline  # as read when pinned
        self._fd: int | None = fd

    # --- making one --------------------------------------------------------

    @classmethod
    def open(cls, pid: int, *, start_time: float, ppid: int | None = None,
             cmdline: list[str] | None = None) -> "Pin":
        """Pin the process observed as ``pid`` started at ``start_time``
        (`Proc.create_time`: seconds since the epoch, from ``/proc``), and
        with parent ``ppid`` and argv ``cmdline`` when given.

        Raises `Gone` (exited), `Replaced` (the pid is another process now),
        `NoPidfd`, or `PinError` (e.g. the kernel refused the pidfd)."""
        from . import procfs

        fd = _pidfd(pid)
        try:
            now = _observe(pid)
            if now is None or _polled(fd, 0):
                raise Gone(f"pid {pid} has exited")
            st, argv = now
            want = procfs.ticks_of(start_time)
            if st.start_ticks != want:
                raise Replaced(f"pid {pid} now belongs to another process (started "
                               f"{(st.start_ticks - want) / _clk_tck():+.2f}s from the observed one)")
            if ppid is not None and st.ppid != ppid:
                raise Replaced(f"pid {pid} now has parent {st.ppid}, not {ppid}: another process")
            if cmdline is not None and _norm(argv) != _norm(cmdline):
                raise Replaced(f"pid {pid} now runs another command line "
                               "(another process, or it retitled itself)")
        except BaseException:
            os.close(fd)
            raise
        return cls(pid, fd, st.start_ticks, st.ppid, argv)

    @classmethod
    def of_child(cls, pid: int) -> "Pin":
        """Pin a child of the calling process that has not been waited for:
        its pid cannot be reused before we reap it, so no identity check is
        needed. Pin it before anything may wait for it."""
        fd = _pidfd(pid)
        now = _observe(pid)
        st = now[0] if now is not None else None
        return cls(pid, fd, st.start_ticks if st else None, st.ppid if st else None,
                   now[1] if now else None)

    # --- using it ------------------------------------------------------------

    @property
    def fd(self) -> int:
        if self._fd is None:
            raise ValueError(f"the pin of pid {self.pid} is closed")
        return self._fd

    def send(self, sig: int) -> bool:
        """Signal the pinned process. -> ``False`` when it has already exited
        (nothing was sent). A refusal by the kernel (``EPERM``) raises
        `PinError`."""
        try:
            signal.pidfd_send_signal(self.fd, sig)
        except ProcessLookupError:
            return False
        except OSError as exc:
            raise self._refused(sig, exc) from None
        return True

    def _refused(self, sig: int, exc: OSError) -> PinError:
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return PinError(f"pid {self.pid}: {name}: {exc.strerror}")

    def send_main_thread(self, sig: int) -> bool:
        """Signal the pinned process's main thread (the thread group leader),
        where Python runs its handlers: a main thread blocked in a sync call
        is woken only by a signal delivered to it. -> ``False`` when it has
        exited.

        Through a thread pidfd (Linux 6.9+) opened after the pin and checked
        against it: the pin still running after the open proves the thread
        pidfd is of its leader. Older kernels get a process-directed signal
        through the pin (the kernel offers it to the leader first). Never by
        pid (``tgkill``): a pid reused meanwhile would get it."""
        try:
            tfd = os.pidfd_open(self.pid, _PIDFD_THREAD)
        except ProcessLookupError:
            return self.send(sig)  # the leader has exited; other threads may run
        except OSError:
            return self.send(sig)  # no thread pidfds here
        try:
            if self.exited():
                return False
            signal.pidfd_send_signal(tfd, sig, None, _PIDFD_SIGNAL_THREAD)
        except ProcessLookupError:
            return self.send(sig)
        except OSError as exc:
            raise self._refused(sig, exc) from None
        finally:
            os.close(tfd)
        return True

    def exited(self) -> bool:
        """Has it exited? (A zombie has: it runs no more code. A thread-group
        leader that exited while other threads run has not.)"""
        return _polled(self.fd, 0)

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for it to exit. -> exited."""
        return _polled(self.fd, timeout)

    def proc(self):
        """The pinned process as a `model.Proc` read now (no detail files), or
        ``None`` once it has exited."""
        from . import procfs

        proc = procfs.read_proc(self.pid, detail=False)
        if proc is None or self.exited():
            return None
        if self.start_ticks is not None and procfs.ticks_of(proc.create_time) != self.start_ticks:
            return None
        return proc

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @property
    def closed(self) -> bool:
        return self._fd is None

    def __enter__(self) -> "Pin":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def __repr__(self) -> str:
        state = "closed" if self._fd is None else f"fd {self._fd}"
        return f"<Pin pid={self.pid} start={self.start_ticks} {state}>"


# pidfd_open(2) flag for a pidfd of one thread, and pidfd_send_signal(2)'s
# flag to signal that thread (both Linux 6.9)
_PIDFD_THREAD = os.O_EXCL
_PIDFD_SIGNAL_THREAD = 1


def _observe(pid: int):
    """(stat, argv) of ``pid`` now, or ``None`` when it is gone. Through
    `procfs`, so a main thread that exited while others run still reads as
    the live process it is."""
    from . import procfs

    # stat and cmdline only: what a pin compares is the process's own, and
    # recognition (its parent's and children's reads) would add nothing.
    proc = procfs.scan(only=[pid], detail_actors=False, recognise=False).get(pid)
    if proc is None:
        return None
    return _Seen(proc.ppid, procfs.ticks_of(proc.create_time)), proc.cmdline


class _Seen:
    __slots__ = ("ppid", "start_ticks")

    def __init__(self, ppid: int, start_ticks: int):
        self.ppid = ppid
        self.start_ticks = start_ticks


def same_cmdline(a: list[str], b: list[str]) -> bool:
    """The same command line, ignoring a retitle's padding."""
    return _norm(a) == _norm(b)


def _norm(argv: list[str]) -> list[str]:
    # a retitled process pads its title with spaces or NULs
    out = list(argv)
    while out and not out[-1].strip(" \0"):
        out.pop()
    if out:
        out[-1] = out[-1].rstrip(" \0")
    return out


def _clk_tck() -> int:
    return os.sysconf("SC_CLK_TCK")
