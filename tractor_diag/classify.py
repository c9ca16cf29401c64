"""Buckets and states (docs/ARCHITECTURE.md, "Liveness").

Pure functions over `Proc` records: no system reads here, so the rules are
unit-testable and shared by `ptree`, the sampler and the dashboard.
"""
from __future__ import annotations

import time

from .model import Bucket, Proc, State

RUNAWAY_PERCENT = 90.0
#: Share of a window a runaway spends on a CPU or queued for one. A spinner
#: spends all of it, but the kernel credits queueing time when the task is
#: picked to run, in slices of a few ms: over 0.2 s three spinners sharing
#: one core read 0.87-1.15 (measured). Never yielding is the sharper test.
RUNAWAY_SHARE = 0.75
#: A process this young may still be importing: busy without a voluntary
#: switch (a .pyc read from the page cache does not sleep) is its boot, not
#: a runaway. Seen on a loaded box: a just-started healthy actor judged a
#: runaway over a 0.2 s window.
BOOT_GRACE = 3.0


def booting(proc: Proc, now: float | None = None) -> bool:
    """Started less than `BOOT_GRACE` seconds before ``now`` (epoch)."""
    return (time.time() if now is None else now) - proc.create_time < BOOT_GRACE

# Where a trio/asyncio/selectors event loop sleeps in the kernel. Anything
# else while sleeping (nanosleep, wait4, futex, a pipe read) is "blocked".
_EVENT_LOOP_WCHANS = frozenset({
    "do_epoll_wait", "ep_poll", "do_select", "core_sys_select",
    "do_sys_poll", "poll_schedule_timeout", "do_poll",
})
# the compiler's clone suffixes (``do_wait.constprop.0``), cut by str
# methods: a pattern compiled at import costs every start-up
_SUFFIXES = (".constprop.", ".isra.", ".part.", ".cold.")

# Programs that adopt orphans besides pid 1 (PR_SET_CHILD_SUBREAPER users).
SUBREAPER_COMMS = frozenset({
    "systemd", "init", "tini", "docker-init", "dumb-init", "catatonit",
    "s6-svscan", "runsvdir", "containerd-shim", "conmon", "bwrap",
})


# wait channel -> its name: a sampler tick asks for every process it shows,
# and a box has a few dozen wait channels.
_NAMES: dict[str, str] = {}


def wchan_name(wchan: str | None) -> str:
    """The wait channel without a clone suffix and all that follows it."""
    wchan = wchan or ""
    name = _NAMES.get(wchan)
    if name is None:
        name = _cut_suffix(wchan)
        if len(_NAMES) < 4096:
            _NAMES[wchan] = name
    return name


def _cut_suffix(wchan: str) -> str:
    dot = wchan.find(".")
    while dot >= 0:
        for suffix in _SUFFIXES:
            end = dot + len(suffix)
            if wchan.startswith(suffix, dot) and wchan[end:end + 1].isdecimal():
                return wchan[:dot]
        dot = wchan.find(".", dot + 1)
    return wchan


def in_event_loop(wchan: str | None) -> bool:
    return wchan_name(wchan) in _EVENT_LOOP_WCHANS


def kernel_runaway(run_ns: int, wait_ns: int, vol_switches: int, window: float,
                   allowed_switches: int = 0) -> bool:
    """Runaway as the kernel sees it: on a CPU or queued for one (schedstat)
    for nearly the whole window, and never giving the CPU up voluntarily
    (but ``allowed_switches`` we caused ourselves, e.g. a ptrace attach).
    CPU% halves when another spinner shares the core; this does not."""
    if window <= 0:
        return False
    return (run_ns + wait_ns) / 1e9 / window >= RUNAWAY_SHARE and vol_switches <= allowed_switches


def runaway_between(old: Proc, new: Proc, window: float) -> bool | None:
    """`kernel_runaway` between two records of a process; None when either
    lacks schedstat or context switches (not read, or no such file)."""
    if None in (old.sched_run, old.sched_wait, old.vol_ctx,
                new.sched_run, new.sched_wait, new.vol_ctx):
        return None
    if old.state != "R":  # asleep when the window opened: not a runaway's
        return False
    if old.sched_at is not None and new.sched_at is not None:
        window = new.sched_at - old.sched_at
    return kernel_runaway(new.sched_run - old.sched_run, new.sched_wait - old.sched_wait,  # type: ignore[operator]
                          new.vol_ctx - old.vol_ctx, window)  # type: ignore[operator]


def state_of(proc: Proc, cpu_percent: float | None = None, prev: Proc | None = None,
             window: float = 0.0, now: float | None = None) -> State:
    """``prev`` (the same process ``window`` seconds earlier, with full
    detail) lets the kernel judge a runaway; without it, CPU% does. Never
    a runaway while `booting` at ``now`` (epoch; default: the clock)."""
    s = proc.state
    if s in ("Z", "X", "x"):
        return "exited"
    if s in ("T", "t"):
        return "stopped"
    by_kernel = runaway_between(prev, proc, window) if prev is not None else None
    if (by_kernel or (by_kernel is None and cpu_percent is not None
                      and cpu_percent >= RUNAWAY_PERCENT)) and not booting(proc, now):
        return "runaway"
    if s == "R":
        return "running"
    if s == "D":
        return "blocked"
    if proc.wchan is None or proc.wchan == "":
        # No wchan to judge by (not read, hidden, or it just woke up).
        return "idle"
    return "idle" if in_event_loop(proc.wchan) else "blocked"


def is_subreaper(proc: Proc, extra: frozenset[int] | set[int] = frozenset()) -> bool:
    return proc.pid == 1 or proc.pid in extra or proc.comm in SUBREAPER_COMMS


def is_reparented(proc: Proc, parent: Proc | None, subreapers: frozenset[int] | set[int] = frozenset()) -> bool:
    """Has this process lost the parent that started it?

    A process's original parent was born before it; a parent younger than
    its child, init, or a known subreaper means it was adopted.

    A root actor has no parent actor to lose: whatever started it (a shell,
    a service manager, a container's init) may be gone or be pid 1 by
    design, so it is never an orphaned actor.
    """
    if proc.ppid == 0 or proc.kthread:  # init and kernel threads have no parent to lose
        return False
    if proc.actor is not None and proc.actor.role == "root":
        return False
    if proc.ppid == 1 or parent is None:  # parent gone mid-scan counts too
        return True
    if parent.create_time > proc.create_time + 0.01:
        return True
    return is_subreaper(parent, subreapers)


def bucket_of(proc: Proc, parent: Proc | None, in_root_tree: bool,
              subreapers: frozenset[int] | set[int] = frozenset()) -> Bucket:
    if proc.state in ("Z", "X", "x"):
        return "zombie"
    if proc.actor is not None and is_reparented(proc, parent, subreapers):
        return "orphan"
    return "live" if in_root_tree else "stray"
