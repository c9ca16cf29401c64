"""Polite cleanup of leftover actors: SIGINT, a bounded grace, SIGKILL.

Two steps, kept apart so that what is signalled is exactly what was shown:

1. `make_plan` scans ``/proc`` once and decides the exact set to signal.
   Default: every orphaned actor of the current user (an actor adopted by
   init or a subreaper) in our PID namespace (a container's orphans are
   adopted by its own init: its business) with its whole subtree. ``parent=PID``: the
   descendants of a live pid. Inside those subtrees only actors are taken
   unless ``everything=True`` (``--all``). Never taken, whatever the mode: a
   process of another user (any of its real/effective/saved/fs uids differs),
   the reaper itself and its ancestors, the namespace's init and kernel
   threads (by the kernel's flag, not by pid: in a container pid 2 and its
   children are ordinary processes); zombies are
   listed as skipped (they have exited; they go when their parent reaps them).

   Each target is pinned (`pinning.Pin`) as soon as it is chosen: a pidfd
   opened, then its start time, parent and command line re-read and compared
   with the scan's. A target that exited or was replaced in between is
   listed as skipped. From then on the pidfd holds that very process: a pid
   reused later can never receive a signal meant for it.

2. `execute` signals the plan: SIGINT to every target, parents first (a
   stopped one also gets SIGCONT, so it can act on the SIGINT); poll up to
   ``grace`` seconds; SIGKILL the survivors; report each pid's fate. Every
   signal goes through the plan's pidfds; before each one the pinned process
   is read again and must still pass the rules (same uids, still an actor
   unless ``--all``, not an ancestor). A plan built by hand (without
   `make_plan`) is pinned the same way when `execute` starts. Without pidfds
   nothing is signalled (`pinning.NoPidfd`).

`reap` ties both to the UDS and ``/dev/shm`` sweeps for the CLI.
"""
from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Literal

from . import procfs
from .classify import is_reparented
from .classify import is_subreaper
from .errors import DiagError, NotFound, Unsupported, UsageError
from .model import Proc, exit_status
from .pinning import Gone, NoPidfd, Pin, PinError, Replaced
from .pinning import supported as pidfd_supported
from .reapmodel import (  # noqa: F401 - the Structs' old names stay importable from here
    Fate, Outcome, PidFate, Plan, ReapReport, ShmSweep, Skip, Target, UdsSweep,
)
from .trees import children_map, self_and_ancestors

DEFAULT_GRACE = 5.0
KILL_WAIT = 2.0  # after SIGKILL: how long to wait for the kernel to finish the job
_POLL = 0.05
_PROGRESS_EVERY = 1.0

Progress = Callable[[str], None]


# --- identity checks ------------------------------------------------------------

def _uids(pid: int) -> set[int] | None:
    """Real, effective, saved and filesystem uids from ``status``."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"Uid:"):
                    return {int(x) for x in line.split()[1:5]}
    except (OSError, ValueError):
        return None
    return None


def _pidns(pid: int | str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def _ancestors_now() -> set[int]:
    """The reaper and its ancestors, walked fresh through /proc."""
    out: set[int] = set()
    pid = os.getpid()
    while pid > 0 and pid not in out:
        out.add(pid)
        st = procfs.read_stat(pid)
        if st is None:
            break
        pid = st.ppid
    return out


# --- the plan -------------------------------------------------------------------

def make_plan(parent: int | None = None, *, everything: bool = False,
              uid: int | None = None, procs: dict[int, Proc] | None = None,
              pin: bool = True, subtree: int | None = None) -> Plan:
    """Decide exactly which processes a reap would signal (nothing is sent)
    and pin each of them (``pin=False``: only look, e.g. for a report).
    Call `Plan.release` (or `execute`) when done with a pinned plan.

    Scope: the orphaned actors of ``uid`` (default), the descendants of
    ``parent``, or ``subtree``: that process itself and its descendants (a
    dashboard's selection). The same rules apply in each."""
    if not procfs.HAVE_PROCFS:
        raise Unsupported("reap needs Linux /proc")
    uid = os.getuid() if uid is None else uid
    scanned_at = time.time()
    if procs is None:
        procs = procfs.scan()
    kids = children_map(procs)
    excluded = self_and_ancestors(procs)
    me = os.getpid()

    if parent is not None and subtree is not None:
        raise UsageError("a plan is below a parent or of a subtree, not both")
    mode: Literal["orphans", "parent", "subtree"]
    if parent is not None or subtree is not None:
        pid = parent if parent is not None else subtree
        top = procs.get(pid)
        if top is None:
            raise NotFound(f"no such process: {pid}")
        if top.state in ("Z", "X", "x"):
            raise NotFound(f"pid {pid} is a zombie: it has no live subtree")
        tops = [pid]
        mode = "parent" if parent is not None else "subtree"
    else:
        mine = _pidns("self")
        tops = sorted(
            pid for pid, p in procs.items()
            if p.actor is not None and is_reparented(p, procs.get(p.ppid))
            # an orphan in a PID namespace below ours (a container, adopted
            # by its own init) is that namespace's to reap, not ours
            and mine is not None and _pidns(pid) == mine
        )
        mode = "orphans"

    # Below a chosen process its actor children count too: an mp_forkserver
    # actor is the sidecar's child, proven the child of the actor that asked
    # for it by the pipe only the two hold (`recognise`).
    spawned: dict[int, list[int]] = {}
    if mode != "orphans":
        for pid, p in procs.items():
            if p.actor is not None and p.actor.parent_by == "sentinel-pipe":
                spawned.setdefault(p.actor.logical_parent, []).append(pid)

    def below(pid: int, depth: int) -> list[tuple[int, int, bool]]:
        # popped last: the OS subtree is walked first, as without sidecars
        own = kids.get(pid, ())
        return ([(c, depth, True) for c in reversed(spawned.get(pid, ())) if c not in own]
                + [(c, depth, False) for c in reversed(own)])

    targets: list[Target] = []
    skipped: list[Skip] = []
    seen: set[int] = set()
    for top in tops:
        # The --parent pid is the scope, not a target: start below it.
        stack = below(top, 0) if mode == "parent" else [(top, 0, False)]
        while stack:
            pid, depth, by_pipe = stack.pop()
            if pid in seen:
                continue
            seen.add(pid)
            proc = procs[pid]
            reason = _refusal(proc, uid, everything, excluded, me)
            if not (reason and reason.startswith("belongs to") and mode != "parent" and depth == 0):
                # another user's orphan is not in scope at all, nor is its subtree
                stack.extend(below(pid, depth + 1))
            if reason is not None:
                skipped.append(Skip(pid=pid, title=proc.title, reason=reason))
                continue
            if by_pipe:
                why = (f"actor child of {proc.actor.logical_parent} (forked by the "
                       f"fork-server sidecar {proc.ppid}), below {top}")
            elif mode == "parent":
                why = f"descendant of {top}"
            elif mode == "subtree":
                why = "the selected process" if depth == 0 else f"in the subtree of {top}"
            elif depth == 0:
                why = "orphaned actor"
            else:
                why = f"in the orphaned subtree of {top}"
            targets.append(Target(
                pid=pid, ppid=proc.ppid, create_time=proc.create_time, uid=uid,
                title=proc.title, depth=depth, top=top,
                actor=proc.actor.name if proc.actor else None,
                generation=proc.actor.generation if proc.actor else None,
                why=why, cmdline=list(proc.cmdline), state=proc.state,
            ))
    plan = Plan(mode=mode, uid=uid, everything=everything, targets=targets,
                skipped=skipped, parent=parent, tops=tops, scanned_at=scanned_at,
                subtree=subtree)
    if pin and pidfd_supported():
        _pin_all(plan)
    return plan


def _pin(t: Target) -> Pin:
    return Pin.open(t.pid, start_time=t.create_time, ppid=t.ppid, cmdline=t.cmdline or None)


def _pin_all(plan: Plan) -> None:
    """Pin every target; one that exited or was replaced since the scan
    moves to the skipped list."""
    pins = plan.pins()
    kept = []
    for t in plan.targets:
        try:
            pins[t.pid] = _pin(t)
        except PinError as exc:
            word = "exited while planning" if isinstance(exc, Gone) else str(exc)
            plan.skipped.append(Skip(pid=t.pid, title=t.title, reason=f"{exc.outcome}: {word}"))
            continue
        kept.append(t)
    plan.targets = kept


def check_parent(parent: int, procs: dict[int, Proc] | None = None) -> None:
    """``--parent`` must not be init or a subreaper without ``--all``: their
    children are every orphan they adopted, live trees included."""
    proc = (procs or {}).get(parent) or procfs.read_proc(parent, detail=False)
    if proc is None:
        return  # make_plan says it is gone
    if parent == 1 or (proc.ppid == 0 and not proc.kthread):  # kthreadd's children are refused one by one
        what = "init"
    elif is_subreaper(proc):
        what = f"a subreaper ({proc.comm})"
    else:
        return
    raise UsageError(f"refusing --parent {parent}: it is {what}, whose children are every "
                     "orphan it adopted, live trees included (add --all to mean it)")


def _refusal(proc: Proc, uid: int, everything: bool, excluded: set[int], me: int) -> str | None:
    """Why ``proc`` must not be signalled, or ``None``."""
    if proc.pid == me:
        return "the reaper itself"
    if proc.pid in excluded:
        return "an ancestor of the reaper"
    if proc.kthread:
        return "a kernel thread"
    if proc.pid == 1 or proc.ppid == 0:
        # ppid 0: its parent is outside this PID namespace, so it is the
        # namespace's init (pid 1 whenever /proc is this namespace's own)
        return "init of this PID namespace"
    uids = _uids(proc.pid)
    if uids is None:
        return "gone while scanning"
    if uids != {uid}:
        other = sorted(uids - {uid})
        return f"belongs to uid {other[0] if other else '?'}"
    if proc.state in ("Z", "X", "x"):
        return "zombie: already exited, goes when its parent reaps it"
    if proc.actor is None and not everything:
        return "not an actor (--all to include)"
    return None


# --- signalling -----------------------------------------------------------------

class _Handle:
    """A target pinned for the signals, and what happened to it."""

    def __init__(self, target: Target, fate: PidFate, pin: Pin):
        self.target = target
        self.fate = fate
        self.pin = pin
        self.done = False


def _verify(h: _Handle, plan: Plan, ancestors: set[int]) -> tuple[str | None, Proc | None]:
    """Read the pinned process now: (``None``, the process) when it may be
    signalled, else (the fate word and why, ``None``)."""
    t = h.target
    if t.pid in ancestors:
        return "skipped: an ancestor of the reaper", None
    proc = h.pin.proc()
    uids = _uids(t.pid)
    if proc is None or uids is None or h.pin.exited():
        # (read while the pin showed it running: these reads are of it)
        return "gone: exited before it was signalled", None
    if uids != {plan.uid}:
        return f"skipped: its uids changed to {sorted(uids)}", None
    if proc.actor is None and not plan.everything:
        return "skipped: no longer an actor (exec'd?)", None
    return None, proc


def _send(h: _Handle, sig: signal.Signals, plan: Plan, ancestors: set[int]) -> str | None:
    """Re-check, then signal through the pin. -> ``None`` when sent, else why not."""
    why, proc = _verify(h, plan, ancestors)
    if why is not None:
        return why
    stopped = proc is not None and proc.state == "T"
    try:
        if not h.pin.send(sig):
            return "gone: exited before it was signalled"
        h.fate.signals.append(sig.name)
        if stopped and sig != signal.SIGKILL:
            # a stopped process acts on nothing but SIGKILL until continued
            if h.pin.send(signal.SIGCONT):
                h.fate.signals.append("SIGCONT")
            h.fate.stopped = True
    except PinError as exc:
        return f"error: {exc}"
    return None


def _exit_code(h: _Handle) -> int | None:
    # exited and not yet reaped by its parent: the pid is still its own
    st = procfs.read_stat(h.target.pid)
    if st is not None and st.start_ticks == h.pin.start_ticks:
        return st.exit_code
    return None


def _wait(handles: list[_Handle], seconds: float, progress: Progress | None,
          what: str) -> float:
    """Poll until every handle has exited or ``seconds`` pass -> time waited."""
    start = time.monotonic()
    deadline = start + seconds
    next_note = start + _PROGRESS_EVERY
    while True:
        for h in handles:
            if not h.done and h.pin.exited():
                h.done = True
                h.fate.exit_code = _exit_code(h)
        left = [h for h in handles if not h.done]
        now = time.monotonic()
        if not left or now >= deadline:
            return now - start
        if progress is not None and now >= next_note:
            next_note = now + _PROGRESS_EVERY
            names = ", ".join(f"{h.target.pid} {h.target.actor or h.target.title[:20]}"
                              for h in left[:6])
            more = f" and {len(left) - 6} more" if len(left) > 6 else ""
            progress(f"{what}: {len(left)} still running after {now - start:.1f}s "
                     f"({deadline - now:.1f}s left): {names}{more}")
        time.sleep(min(_POLL, max(0.0, deadline - now)))


def execute(plan: Plan, grace: float = DEFAULT_GRACE, *, progress: Progress | None = None,
            kill_wait: float = KILL_WAIT) -> Outcome:
    """Signal exactly ``plan.targets``: SIGINT, up to ``grace`` s, SIGKILL.
    Closes the plan's pins when done."""
    if not pidfd_supported():
        plan.release()
        raise NoPidfd("reap needs pidfds (Linux 5.3 or newer): "
                      "refusing to signal processes by pid alone")
    ancestors = _ancestors_now()
    fates: list[PidFate] = []
    handles: list[_Handle] = []
    pins = plan.pins()
    try:
        for t in plan.targets:  # parents first: a supervisor cannot respawn what we stop
            fate = PidFate(pid=t.pid, title=t.actor or t.title, fate="exited")
            fates.append(fate)
            pin = pins.pop(t.pid, None)
            if pin is None or pin.closed:
                try:  # a plan not made (or already released) by make_plan
                    pin = _pin(t)
                except PinError as exc:
                    fate.fate = {"gone": "gone", "replaced": "reused"}.get(exc.outcome, "error")
                    fate.detail = ("exited before it was signalled" if isinstance(exc, Gone)
                                   else str(exc))
                    continue
            handles.append(_Handle(t, fate, pin))
        live = _signal_all(handles, signal.SIGINT, plan, ancestors)
        if progress is not None and live:
            progress(f"sent SIGINT to {len(live)} process{'es' if len(live) != 1 else ''}; "
                     f"waiting up to {grace:g}s for them to exit")
        waited = _wait(live, grace, progress, "grace") if live else 0.0
        # The last poll is up to a tick old: one that exited since is no
        # survivor (a pidfd signal to a zombie "succeeds" and would count it
        # as killed).
        for h in live:
            if not h.done and h.pin.exited():
                h.done = True
                h.fate.exit_code = _exit_code(h)
        survivors = [h for h in live if not h.done]
        escalated = False
        if survivors:
            if progress is not None:
                progress(f"grace over: SIGKILL to {len(survivors)}: "
                         + ", ".join(str(h.target.pid) for h in survivors))
            killed = _signal_all(survivors, signal.SIGKILL, plan, ancestors)
            escalated = bool(killed)
            for h in killed:
                h.fate.fate = "killed"
            _wait(killed, kill_wait, progress, "after SIGKILL")
            for h in killed:
                if not h.done:
                    h.fate.fate = "survived"
                    h.fate.detail = "still running after SIGKILL (uninterruptible sleep?)"
                elif h.fate.exit_code is not None and h.fate.exit_code != -signal.SIGKILL:
                    h.fate.fate = "exited"  # it ended on its own before SIGKILL landed
        for h in live:
            notes = []
            if h.fate.stopped:
                notes.append("was stopped (state T): SIGCONT after SIGINT")
            if h.fate.exit_code is not None and not h.fate.detail:
                notes.append(f"exit status {exit_status(h.fate.exit_code)}")
            if h.fate.detail:
                notes.append(h.fate.detail)
            h.fate.detail = "; ".join(notes)
    finally:
        for h in handles:
            h.pin.close()
        plan.release()
    return Outcome(fates=fates, escalated=escalated, waited=waited, pidfd=True)


def _signal_all(handles: list[_Handle], sig: signal.Signals, plan: Plan,
                ancestors: set[int]) -> list[_Handle]:
    """-> the handles the signal reached; the others get their fate set."""
    reached = []
    for h in handles:
        if h.done:
            continue
        why = _send(h, sig, plan, ancestors)
        if why is None:
            reached.append(h)
            continue
        h.done = True
        word, _, detail = why.partition(": ")
        if word == "gone" and h.fate.signals:
            word, detail = "exited", ""  # it went between our signals
        h.fate.fate = word  # type: ignore[assignment]
        h.fate.detail = detail
    return reached


def dry_run_outcome(plan: Plan) -> Outcome:
    return Outcome(fates=[PidFate(pid=t.pid, title=t.actor or t.title, fate="planned")
                          for t in plan.targets])


# --- the whole verb ---------------------------------------------------------------

def reap(*, parent: int | None = None, everything: bool = False, grace: float = DEFAULT_GRACE,
         dry_run: bool = False, processes: bool = True, uds: bool = False, shm: bool = False,
         bindspace_arg: str | None = None, shm_dir: str | None = None,
         progress: Progress | None = None) -> ReapReport:
    """Plan, signal (unless ``dry_run``), then sweep what was asked."""
    from . import bindspace as bs
    from . import shm as shm_mod

    report = ReapReport(dry_run=dry_run, grace=grace)
    if uds and bindspace_arg is not None:
        # a mistyped --bindspace must fail before anything is signalled
        path, _, _ = bs.resolve_dir(bindspace_arg)
        if not os.path.isdir(path):
            raise NotFound(f"no such bindspace dir: {path}")
    if shm:
        shm_mod.check_dir(shm_dir or shm_mod.DEFAULT_DIR)  # before anything is signalled
    plan = None
    if processes:
        if parent is not None and not everything:
            check_parent(parent)
        if not dry_run and not pidfd_supported():
            raise NoPidfd("reap needs pidfds (Linux 5.3 or newer): "
                          "refusing to signal processes by pid alone")
        plan = make_plan(parent, everything=everything)
        report.plan = plan
        if dry_run:
            plan.release()
            report.outcome = dry_run_outcome(plan)
        elif plan.targets:
            report.outcome = execute(plan, grace, progress=progress)
            report.appeared = _appeared(plan)
        else:
            report.outcome = Outcome(fates=[])
    # Past this point processes may have been signalled: a failing sweep is
    # reported with the rest, never raised over it.
    if uds:
        try:
            scan = bs.scan(bindspace_arg, must_exist=False)
            planned = set(plan.pids()) if plan is not None and dry_run else set()
            removals = bs.sweep(scan, dry_run=dry_run, also_dead=planned)
            if not dry_run:
                scan = bs.scan(bindspace_arg, must_exist=False)  # the dir after the sweep
            report.uds = UdsSweep(scan=scan, removals=removals)
        except (DiagError, OSError) as exc:
            report.errors.append(f"uds sweep: {exc}")
    if shm:
        try:
            sscan = shm_mod.scan(shm_dir or shm_mod.DEFAULT_DIR)
            report.shm = ShmSweep(scan=sscan, removals=shm_mod.sweep(sscan, dry_run=dry_run))
        except OSError as exc:
            report.errors.append(f"shm sweep: {exc}")
    report.clean = report.is_clean()
    return report


def _appeared(plan: Plan) -> list[Target]:
    """New processes the same rules would now pick: children spawned (or
    orphans made) while we were reaping. They were not signalled."""
    try:
        again = make_plan(plan.parent, everything=plan.everything, uid=plan.uid, pin=False,
                          subtree=plan.subtree)
    except NotFound:  # the --parent pid itself went away
        return []
    before = {(t.pid, round(t.create_time, 2)) for t in plan.targets}
    return [t for t in again.targets
            if (t.pid, round(t.create_time, 2)) not in before and t.create_time >= plan.scanned_at - 1.0]
