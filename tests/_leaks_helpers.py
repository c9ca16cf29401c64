"""Helpers for the leak-check / session-end-reap tests (stdlib only at import
time: the inner pytest runs of tests/test_pytest_leaks.py import this too).

Every process a test starts is recorded as ``LABEL PID START`` in a pid file
(START: the clock-tick start time from ``/proc/<pid>/stat``), so that the
outer test can find it afterwards and kill exactly it, even if it was
orphaned and even if the plugin under test misbehaved.

Program: ``python _leaks_helpers.py actor NAME SECONDS [new-session]`` sets
the process title ``_subactor[NAME@<pid>]`` (what the current tractor runtime
shows to /proc), prints ``READY <pid>`` and sleeps SECONDS; SIGINT ends it at
once. ``new-session``: first leave the caller's session (``setsid``), like a
program started from another terminal.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from _poll import poll
from _proc import stat_fields

THIS = os.path.abspath(__file__)

# Popen objects of processes left running on purpose: kept referenced so
# that their garbage collection does not warn or wait.
KEEP: list[subprocess.Popen] = []


def start_ticks(pid: int) -> int | None:
    """Start time in clock ticks since boot, or None when the pid is gone."""
    fields = stat_fields(pid)
    return None if fields is None else int(fields[19])


def state_of(pid: int) -> str | None:
    fields = stat_fields(pid)
    return None if fields is None else fields[0].decode()


def parent_of(pid: int) -> int | None:
    fields = stat_fields(pid)
    return None if fields is None else int(fields[1])


def alive(pid: int, start: int) -> bool:
    """Still the same process and not yet exited (a zombie has exited)."""
    return start_ticks(pid) == start and state_of(pid) not in (None, "Z", "X", "x")


def kill_pinned(pid: int, start: int, sig: int = signal.SIGKILL) -> bool:
    """Signal ``pid`` only while it is the process that started at clock
    tick ``start``: a pidfd first, then the check, then the signal through
    the pidfd (which a newcomer with the same pid cannot inherit)."""
    return kill_if(pid, sig, start=start)


def kill_if(pid: int, sig: int = signal.SIGKILL, *, ppid: int | None = None,
            start: int | None = None, not_before: int | None = None,
            argv: list[str] | None = None) -> bool:
    """Signal ``pid`` through a pidfd, only if the process it holds is the
    one meant: still running, and with that parent, start tick, a start no
    earlier than ``not_before`` (ticks), or that argv, as given. The checks
    read /proc after the pidfd is open, so they are of the process the
    pidfd holds (a pid reused before the open fails them; after it, the
    pidfd still holds the old one). For teardowns that know a pid but did
    not start it themselves."""
    if ppid is None and start is None and not_before is None and argv is None:
        return False  # nothing to tell it by: a pid alone proves nothing
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return False
    try:
        fields = stat_fields(pid)
        if fields is None or fields[0] in (b"Z", b"X", b"x"):
            return False
        if ppid is not None and int(fields[1]) != ppid:
            return False
        if start is not None and int(fields[19]) != start:
            return False
        if not_before is not None and int(fields[19]) < not_before:
            return False
        if argv is not None:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read().split(b"\0")[:-1] != [a.encode() for a in argv]:
                    return False
        signal.pidfd_send_signal(fd, sig)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def boot_ticks_now() -> int:
    """Clock ticks since boot now: a start-time floor for ``kill_if``."""
    with open("/proc/uptime") as f:
        return int(float(f.read().split()[0]) * os.sysconf("SC_CLK_TCK")) - 1


def record(pid_file: str, label: str, pid: int) -> int:
    start = start_ticks(pid)
    if start is None:
        raise RuntimeError(f"{label} (pid {pid}) exited at once")
    with open(pid_file, "a") as f:
        f.write(f"{label} {pid} {start}\n")
    return pid


def recorded(pid_file: str) -> dict[str, tuple[int, int]]:
    """label -> (pid, start)."""
    out = {}
    try:
        with open(pid_file) as f:
            for line in f:
                label, pid, start = line.split()
                out[label] = (int(pid), int(start))
    except FileNotFoundError:
        pass
    return out


def actor_argv(name: str, seconds: float = 600, new_session: bool = False) -> list[str]:
    return [sys.executable, THIS, "actor", name, str(seconds)] + (
        ["new-session"] if new_session else [])


def start_child(pid_file: str, label: str, argv: list[str], ready: bool = True) -> subprocess.Popen:
    """A child of this process, recorded; waits for its READY line."""
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    KEEP.append(p)
    record(pid_file, label, p.pid)
    if ready:
        line = p.stdout.readline()
        if not line.startswith("READY"):
            raise RuntimeError(f"{label}: no READY line (got {line!r})")
    return p


def start_orphan(pid_file: str, label: str, argv: list[str], ready: bool = True,
                 timeout: float = 30) -> int:
    """Double fork: ``sh`` starts ``argv`` in the background and exits at
    once, so the process is adopted by init (or the nearest subreaper).
    Returns its pid once it is adopted (and READY, when ``ready``)."""
    sh = subprocess.Popen(["sh", "-c", '"$@" & echo "PID $!"', "sh", *argv],
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    pid = None
    seen_ready = not ready
    while pid is None or not seen_ready:
        line = sh.stdout.readline()
        if not line:
            sh.wait(timeout)
            raise RuntimeError(f"{label}: ended before it was up (pid {pid})")
        if line.startswith("PID "):
            pid = int(line.split()[1])
            record(pid_file, label, pid)
        elif line.startswith("READY"):
            seen_ready = True
    sh.wait(timeout)
    # adoption happens as sh exits
    if not poll(lambda: parent_of(pid) != sh.pid, timeout, 0.01):
        raise RuntimeError(f"{label}: pid {pid} was not adopted")
    return pid


def leave_session_cgroup(pid: int) -> None:
    """Move ``pid`` out of the cgroup a session-end-reaping pytest put its
    session in (to that cgroup's parent): what a process started from
    another terminal looks like to it."""
    with open(f"/proc/{pid}/cgroup") as f:
        path = next(ln[3:].strip() for ln in f if ln.startswith("0::"))
    if not path.rsplit("/", 1)[-1].startswith("tractor-diag-launch."):
        return
    with open("/proc/self/mountinfo") as f:  # where cgroup v2 is mounted (root shown as /)
        mount = next(ln.split()[4] for ln in f if " - cgroup2 " in ln)
    with open(f"{mount}{os.path.dirname(path)}/cgroup.procs", "w") as f:
        f.write(str(pid))


def kill_recorded(pid_file: str, timeout: float = 10) -> list[str]:
    """SIGKILL every recorded process that is still the one recorded (pinned
    by a pidfd, see `kill_pinned`); wait
    (bounded) until each has exited. -> labels of those still running."""
    procs = recorded(pid_file)
    for label, (pid, start) in procs.items():
        kill_pinned(pid, start)

    def left() -> list[str]:
        return [label for label, (pid, start) in procs.items() if alive(pid, start)]

    return [] if poll(lambda: not left(), timeout) else left()


def prog_actor(name: str, seconds: str, new_session: bool = False) -> None:
    import setproctitle

    if new_session:
        os.setsid()
    setproctitle.setproctitle(f"_subactor[{name}@{os.getpid()}]")
    # sh starts background commands with SIGINT ignored (and python keeps it
    # so); an actor handles it
    signal.signal(signal.SIGINT, signal.default_int_handler)
    print(f"READY {os.getpid()}", flush=True)
    try:
        time.sleep(float(seconds))
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    if sys.argv[1:2] == ["actor"] and len(sys.argv) in (4, 5) and sys.argv[4:] in ([], ["new-session"]):
        prog_actor(sys.argv[2], sys.argv[3], new_session=len(sys.argv) == 5)
    else:
        sys.exit(f"usage: {sys.argv[0]} actor NAME SECONDS [new-session]")
