"""Opt-in session-end reap: ``--tractor-reap-at-end`` (flag, default off).

At session end, the safe reaper (`reap.execute`: SIGINT, `REAP_GRACE`
seconds, SIGKILL; every target re-identified by pid, create time, uid and
actor-ness right before each signal) is run on: actors below the pytest
process, and orphaned actors that appeared during the session (the leak
check's recorded leaks included) and are members of the cgroup pytest
moved into at the start (`pytest_leaks.session_cgroup`): another pytest
run side by side shares the session id and process group, never that.
Without a cgroup, orphans are named and left alone. Then the UDS sweep
unlinks the socket files that appeared during the session and whose binder
is gone (``orphaned-dead``). Nothing that existed when the session started
is signalled or unlinked, nor any non-actor process. The terminal summary
lists what was reaped and unlinked.

Under pytest-xdist each worker checks and reaps on its own, in a cgroup of
its own: an orphan made by one worker's test can be reported by another,
never reaped by it.
"""
from __future__ import annotations

import os
import time

from .pytest_leaks import STATE, SessionState, leftover_procs, proc_key, sock_listing

#: SIGINT-to-SIGKILL grace of the session-end reap.
REAP_GRACE = 2.0


def pytest_sessionfinish(session):
    state = session.config.stash.get(STATE, None)
    if state is None or not state.reap_at_end:
        return
    try:
        state.reap_lines = _reap_session(state)
    except Exception as exc:  # noqa: BLE001 - reported in the summary, never raised
        state.reap_lines = [f"session-end reap failed: {type(exc).__name__}: {exc}"]


def _reap_session(state: SessionState) -> list[str]:
    """Reap what this session left running, then sweep its stale sockets;
    -> the summary lines."""
    from . import procfs
    from .bindspace import scan, sweep
    from .reap import execute
    from .reapmodel import Plan

    before = state.procs
    procs = procfs.scan(detail_actors=False)
    leaks = leftover_procs(state, before, procs)
    targets = [lk.target for lk in leaks]
    taken = {t.pid for t in targets}
    for key, t in state.leaked.items():
        # reported by the leak check; still the same process (create time),
        # and (an orphan) still this session's
        proc = procs.get(t.pid)
        if (t.pid not in taken and key not in before and proc is not None
                and proc.state not in ("Z", "X", "x")
                and proc_key(proc.pid, proc.create_time) == key
                and (state.cgroup is None or state.cgroup.contains(t.pid))):
            taken.add(t.pid)
            targets.append(t)
    lines: list[str] = []
    if state.cgroup is None:
        # descendants of pytest are provably ours; an orphan is not
        below = {lk.target.pid for lk in leaks if lk.kind == "child"}
        for t in targets:
            if t.pid not in below:
                lines.append(f"pid {t.pid} {t.actor or t.title} ({t.why}): not signalled: "
                             "cannot prove it is this session's without a cgroup of its own "
                             f"({state.cgroup_why}); 'tractor-diag reap' takes it")
        targets = [t for t in targets if t.pid in below]
    if targets:
        plan = Plan(mode="parent", uid=os.getuid(), everything=False, targets=targets,
                    parent=os.getpid(), tops=sorted({t.top for t in targets}),
                    scanned_at=time.time())
        outcome = execute(plan, REAP_GRACE)
        why = {t.pid: t.why for t in targets}
        for fate in outcome.fates:
            lines.append(f"pid {fate.pid} {fate.title} ({why.get(fate.pid, '')}): "
                         f"{_fate_text(fate)}")
    now = sock_listing()
    if now.dir is not None and state.socks is not None:
        new = state.socks.new_in(now)
        if new:
            result = scan(now.dir, must_exist=False, holders=False)
            result.entries = [e for e in result.entries
                              if new.get(e.name) == e.ino and e.status == "orphaned-dead"]
            for r in sweep(result):
                if r.error:
                    lines.append(f"could not unlink {r.path}: {r.error}")
                elif r.removed:
                    lines.append(f"unlinked {r.path} ({r.reason})")
                else:
                    lines.append(f"kept {r.path}: {r.reason}")
    return lines


def _fate_text(fate) -> str:
    text = {
        "exited": "exited after SIGINT",
        "killed": f"killed (SIGKILL after {REAP_GRACE:g}s)",
        "survived": "survived SIGKILL",
        "gone": "exited before it was signalled",
        "reused": "not signalled: its pid was reused",
        "skipped": "not signalled",
        "error": "signal refused",
    }.get(fate.fate, fate.fate)
    return text + (f"; {fate.detail}" if fate.detail else "")


def summarize(terminalreporter, config) -> None:
    """What the session-end reap did, for the terminal summary."""
    state = config.stash.get(STATE, None)
    if state is None or state.reap_lines is None:
        return
    from .safetext import escape  # titles and file names are other people's

    terminalreporter.section("tractor-diag session-end reap")
    for line in state.reap_lines or ["nothing left behind"]:
        terminalreporter.write_line(escape(line))
