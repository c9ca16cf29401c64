"""The diagnosis layer: where each process waits (`where`), the table of
tractor's waiting points (`waitpoints`), and the `why` rules that turn
stacks, task trees and kernel state into wait-for edges and verdicts
(`rules`). `examine` runs a capture with the kernel samples the rules need.
"""
from __future__ import annotations

import time

# name -> submodule: imported on first use, so that `stacks` (whose text asks
# `where`) does not load the rules and their models at start-up
_LAZY = {
    "diagnose": "rules", "stuck_reasons": "rules",
    **{name: "where" for name in (
        "await_point", "await_text", "focus_thread", "is_internal", "python_where",
        "short_path", "trio_focus", "trio_where", "user_frame", "whereabouts",
        "whereabouts_of")},
}

__all__ = [
    "await_point", "await_text", "diagnose", "examine", "focus_thread", "is_internal",
    "python_where", "short_path", "stuck_reasons", "trio_focus", "trio_where", "user_frame",
    "whereabouts", "whereabouts_of",
]


def __getattr__(name: str):
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{mod}"), name)
    globals()[name] = value
    return value

#: The shortest window the two kernel samples span: the runaway rule needs
#: the scheduler's counters to move by more than a tick.
MIN_WINDOW = 0.2


def examine(snap, options=None, *, deadline: float | None = None, interactive: bool = False,
            bindspace: bool = True, ipc=True, known_tasks=None, hints=None):
    """Capture ``snap``'s stacks between two kernel samples and diagnose it.
    -> (StacksReport, Diagnosis).

    The first sample is read before py-spy attaches (an attach wakes a
    sleeping process and makes it the tracer's), the second after the
    capture, at least `MIN_WINDOW` later: the capture itself is the window,
    so a large tree costs no extra wait. ``ipc``: an IPC graph already
    taken (True: take one; None/False: none). ``known_tasks``: task trees
    written in-process (not asked again); ``hints``: pid -> why the caller
    knows it is stuck (a deadline that ran out in it), a verdict of its own.
    """
    from .. import kstate
    from ..stackmodel import StacksOptions
    from ..stacks import capture
    from .rules import diagnose

    options = options or StacksOptions()
    graph = ipc if ipc is not True else _graph(snap)
    procs = [e.proc for e in snap.ordered()]
    before = kstate.sample_many(procs, last_ran=True)
    now = time.monotonic()
    report = capture(snap, options, deadline=deadline, interactive=interactive,
                     known_tasks=known_tasks)
    rest = MIN_WINDOW - (time.monotonic() - now)
    if rest > 0 and (deadline is None or time.monotonic() + rest < deadline):
        time.sleep(rest)
    after = kstate.sample_many([p for p in procs if p.pid in before])
    later = _look_again(procs, before, after, deadline, now)
    scan = None
    if bindspace and (deadline is None or time.monotonic() < deadline):
        try:
            from .. import bindspace as bs

            scan = bs.scan()
        except Exception:  # noqa: BLE001 - a missing dir is no verdict
            scan = None
    return report, diagnose(snap, report, before, after, bindspace=scan, ipc=graph or None,
                            hints=hints, now=now, later=later)




def _look_again(procs, before, after, deadline, began):
    """The processes in a sync call that ran a moment before the capture
    began (a healthy one's brief call, or a long one that an earlier
    capture woke: py-spy's attach and a task dump each wake it), read again
    `LOOK_AGAIN` after the capture, which no longer disturbs them: one that
    has not run for `QUIET` by then is in that call for good. None when
    the deadline leaves no time to look. "A moment before" is measured from
    ``began``, the capture's start, as the rules measure it: measured from
    now, a capture longer than the gap left out a process the rules then
    found not looked at again (and judged it moving: no verdict)."""
    from .. import kstate
    from .rules import LOOK_AGAIN, SYNC_BLOCKED_AFTER, sync_call

    t = time.monotonic()
    pids = [p for p in procs if p.pid in after and before[p.pid].last_ran is not None
            and began - before[p.pid].last_ran < SYNC_BLOCKED_AFTER
            and sync_call(before[p.pid].wchan)]
    if not pids:
        return {}
    if deadline is not None and t + LOOK_AGAIN >= deadline:
        return None  # no time to: judged from the capture alone
    time.sleep(LOOK_AGAIN)
    return kstate.sample_many(pids, last_ran=True)


def _graph(snap):
    """The IPC graph, or None when the socket tables cannot be read (a
    missing graph only leaves peers unresolved)."""
    from .. import ipc

    try:
        return ipc.graph(snap)
    except Exception:  # noqa: BLE001 - no graph is no verdict
        return None
