"""Polite cleanup of leftover actors: SIGINT, a bounded grace, SIGKILL.

Two steps, kept apart so that what is signalled is exactly what was shown:

1. `make_plan` scans ``/proc`` once and decides the exact set to signal.
   Default: every orphaned actor of the current user (an actor adopted by
   init or a subreaper) with its whole subtree. ``parent=PID``: the
   descendants of a live pid. Inside those subtrees only actors are taken
   unless ``everything=True`` (``--all``). Never taken, whatever the mode: a
   process of another user (any of its real/effective/saved/fs uids differs),
   the reaper itself and its ancestors, init and kernel threads; zombies are
   listed as skipped (they have exited; they go when their parent reaps them).

2. `execute` signals the plan: SIGINT to every target, parents first; poll
   up to ``grace`` seconds; SIGKILL the survivors; report each pid's fate.
   Immediately before each signal the target is re-identified: same create
   time as in the scan (a reused pid has a different one), same uids, still an
   actor (unless ``--all``), not an ancestor. Where the kernel has pidfds, the
   target is pinned with ``pidfd_open`` *before* that check, and every signal
   goes through the pidfd, so the process that passed the check is the only
   one that can receive it: no window for pid reuse. Without pidfds (old
   kernels) the check-then-kill window is a few microseconds.

`reap` ties both to the UDS and ``/dev/shm`` sweeps for the CLI.
"""
from __future__ import annotations

import os
import select
import signal
import time
from collections.abc import Callable
from typing import Literal

import msgspec

from . import procfs
from .bindspace import BindspaceScan, Removal
from .classify import is_reparented
from .errors import DiagError, NotFound, Unsupported
from .model import Proc, exit_status
from .shm import ShmScan
from .trees import children_map, self_and_ancestors

DEFAULT_GRACE = 5.0
KILL_WAIT = 2.0  # after SIGKILL: how long to wait for the kernel to finish the job
_POLL = 0.05
_PROGRESS_EVERY = 1.0

Fate = Literal[
    "planned",   # dry run
    "exited",    # exited within the grace after SIGINT
    "killed",    # needed SIGKILL, then exited
    "survived",  # still there after SIGKILL (uninterruptible sleep?)
    "gone",      # exited before we signalled it
    "reused",    # its pid now belongs to another process: not signalled
    "skipped",   # no longer passes the rules at signal time: not signalled
    "error",     # the kernel refused the signal
]
Progress = Callable[[str], None]


class Target(msgspec.Struct):
    pid: int
    ppid: int
    create_time: float
    uid: int
    title: str
    depth: int  # 0 for the top of a subtree
    top: int  # the orphan (or the --parent pid) whose subtree holds it
    actor: str | None = None
    generation: str | None = None
    why: str = ""


class Skip(msgspec.Struct):
    pid: int
    title: str
    reason: str


class Plan(msgspec.Struct):
    mode: Literal["orphans", "parent"]
    uid: int
    # --all: non-actors in the subtrees too (``all`` in JSON, like the flag)
    everything: bool = msgspec.field(name="all")
    targets: list[Target] = []
    skipped: list[Skip] = []
    parent: int | None = None
    tops: list[int] = []
    scanned_at: float = 0.0

    def pids(self) -> list[int]:
        return [t.pid for t in self.targets]


class PidFate(msgspec.Struct):
    pid: int
    title: str
    fate: Fate
    signals: list[str] = []  # what was actually sent, in order
    exit_code: int | None = None  # when it was seen as a zombie
    detail: str = ""


class Outcome(msgspec.Struct):
    """What `execute` did with a plan."""

    fates: list[PidFate]
    escalated: bool = False  # SIGKILL was needed
    waited: float = 0.0  # seconds spent in the grace window
    pidfd: bool = False  # signals went through pidfds


class UdsSweep(msgspec.Struct):
    scan: BindspaceScan
    removals: list[Removal]


class ShmSweep(msgspec.Struct):
    scan: ShmScan
    removals: list[Removal]


class ReapReport(msgspec.Struct):
    dry_run: bool
    grace: float
    plan: Plan | None = None  # None with --uds-only/--shm-only
    outcome: Outcome | None = None
    appeared: list[Target] = []  # showed up under the plan while we reaped
    uds: UdsSweep | None = None
    shm: ShmSweep | None = None
    errors: list[str] = []
    clean: bool = True  # set by `reap`: see `is_clean`

    def is_clean(self) -> bool:
        """No escalation, no failure, nothing left behind."""
        if self.errors or self.appeared:
            return False
        if self.outcome is not None:
            if self.outcome.escalated:
                return False
            if any(f.fate in ("survived", "error") for f in self.outcome.fates):
                return False
        for sweep in (self.uds, self.shm):
            if sweep is not None and any(r.error for r in sweep.removals):
                return False
        return True


# --- identity checks ------------------------------------------------------------

def _ids(pid: int) -> tuple[set[int], float | None, bool | None, str]:
    """-> (all uids, create time, is an actor, state) read fresh, or
    ``(set(), None, None, '')`` when the process is gone."""
    proc = procfs.read_proc(pid, detail=False)
    if proc is None:
        return set(), None, None, ""
    uids = _uids(pid)
    if uids is None:
        return set(), None, None, ""
    return uids, proc.create_time, proc.actor is not None, proc.state


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


def _ancestors_now() -> set[int]:
    """The reaper and its ancestors, walked fresh through /proc."""
    out: set[int] = set()
    pid = os.getpid()
    while pid > 0 and pid not in out:
        out.add(pid)
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                raw = f.read()
            pid = int(raw[raw.rfind(b")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return out


def _same_start(a: float, b: float) -> bool:
    # Both come from the same boot time and clock ticks: equal unless reused.
    return abs(a - b) < 1e-3


# --- the plan -------------------------------------------------------------------

def make_plan(parent: int | None = None, *, everything: bool = False,
              uid: int | None = None, procs: dict[int, Proc] | None = None) -> Plan:
    """Decide exactly which processes a reap would signal (nothing is sent)."""
    if not procfs.HAVE_PROCFS:
        raise Unsupported("reap needs Linux /proc")
    uid = os.getuid() if uid is None else uid
    scanned_at = time.time()
    if procs is None:
        procs = procfs.scan()
    kids = children_map(procs)
    excluded = self_and_ancestors(procs)
    me = os.getpid()

    if parent is not None:
        top = procs.get(parent)
        if top is None:
            raise NotFound(f"no such process: {parent}")
        if top.state in ("Z", "X", "x"):
            raise NotFound(f"pid {parent} is a zombie: it has no live subtree")
        tops = [parent]
        mode: Literal["orphans", "parent"] = "parent"
    else:
        tops = sorted(
            pid for pid, p in procs.items()
            if p.actor is not None and is_reparented(p, procs.get(p.ppid))
        )
        mode = "orphans"

    targets: list[Target] = []
    skipped: list[Skip] = []
    seen: set[int] = set()
    for top in tops:
        # The --parent pid is the scope, not a target: start below it.
        stack = [(c, 0) for c in reversed(kids.get(top, ()))] if mode == "parent" else [(top, 0)]
        while stack:
            pid, depth = stack.pop()
            if pid in seen:
                continue
            seen.add(pid)
            proc = procs[pid]
            reason = _refusal(proc, uid, everything, excluded, me)
            if not (reason and reason.startswith("belongs to") and mode == "orphans" and depth == 0):
                # another user's orphan is not in scope at all, nor is its subtree
                stack.extend((c, depth + 1) for c in reversed(kids.get(pid, ())))
            if reason is not None:
                skipped.append(Skip(pid=pid, title=proc.title, reason=reason))
                continue
            if mode == "parent":
                why = f"descendant of {top}"
            elif depth == 0:
                why = "orphaned actor"
            else:
                why = f"in the orphaned subtree of {top}"
            targets.append(Target(
                pid=pid, ppid=proc.ppid, create_time=proc.create_time, uid=uid,
                title=proc.title, depth=depth, top=top,
                actor=proc.actor.name if proc.actor else None,
                generation=proc.actor.generation if proc.actor else None,
                why=why,
            ))
    return Plan(mode=mode, uid=uid, everything=everything, targets=targets,
                skipped=skipped, parent=parent, tops=tops, scanned_at=scanned_at)


def _refusal(proc: Proc, uid: int, everything: bool, excluded: set[int], me: int) -> str | None:
    """Why ``proc`` must not be signalled, or ``None``."""
    if proc.pid == me:
        return "the reaper itself"
    if proc.pid in excluded:
        return "an ancestor of the reaper"
    if proc.pid in (1, 2) or proc.ppid == 2:
        return "init or a kernel thread"
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

def pidfd_supported() -> bool:
    if not (hasattr(os, "pidfd_open") and hasattr(signal, "pidfd_send_signal")):
        return False
    try:
        fd = os.pidfd_open(os.getpid())
    except OSError:
        return False
    os.close(fd)
    return True


class _Handle:
    """A verified target: its pidfd when we have one."""

    def __init__(self, target: Target, fate: PidFate, pidfd: int | None):
        self.target = target
        self.fate = fate
        self.pidfd = pidfd
        self.done = False

    def close(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


def _verify(target: Target, plan: Plan, ancestors: set[int]) -> str | None:
    """Re-identify ``target`` right now: ``None`` when it may be signalled,
    else the fate word and why (``'gone: ...'``, ``'reused: ...'``, ``'skipped: ...'``)."""
    if target.pid in ancestors:
        return "skipped: an ancestor of the reaper"
    uids, ctime, is_actor, state = _ids(target.pid)
    if ctime is None:
        return "gone: exited before it was signalled"
    if not _same_start(ctime, target.create_time):
        return (f"reused: pid {target.pid} now belongs to a process started "
                f"{ctime - target.create_time:+.2f}s after the scanned one")
    if uids != {plan.uid}:
        return f"skipped: its uids changed to {sorted(uids)}"
    if state in ("Z", "X", "x"):
        return "gone: exited (zombie) before it was signalled"
    if not is_actor and not plan.everything:
        return "skipped: no longer an actor (exec'd?)"
    return None


def _open(target: Target, use_pidfd: bool) -> tuple[int | None, str | None]:
    fd = None
    if use_pidfd:
        try:
            fd = os.pidfd_open(target.pid)
        except ProcessLookupError:
            return None, "gone: exited before it was signalled"
        except OSError as exc:
            return None, f"error: pidfd_open: {exc.strerror}"
    return fd, None


def _send(h: _Handle, sig: signal.Signals, plan: Plan, ancestors: set[int]) -> str | None:
    """Re-check, then signal. -> ``None`` when sent, else why not."""
    why = _verify(h.target, plan, ancestors)
    if why is not None:
        return why
    try:
        if h.pidfd is not None:
            signal.pidfd_send_signal(h.pidfd, sig)
        else:
            os.kill(h.target.pid, sig)
    except ProcessLookupError:
        return "gone: exited before it was signalled"
    except PermissionError as exc:
        return f"error: {sig.name}: {exc.strerror}"
    h.fate.signals.append(sig.name)
    return None


def _has_exited(h: _Handle) -> bool:
    """Exited means gone or a zombie: it runs no more code."""
    if h.pidfd is not None:
        p = select.poll()
        p.register(h.pidfd, select.POLLIN)
        return bool(p.poll(0))
    proc = procfs.read_proc(h.target.pid, detail=False)
    return (proc is None or proc.state in ("Z", "X", "x")
            or not _same_start(proc.create_time, h.target.create_time))


def _exit_code(h: _Handle) -> int | None:
    proc = procfs.read_proc(h.target.pid, detail=False)
    if proc is not None and _same_start(proc.create_time, h.target.create_time):
        return proc.exit_code
    return None


def _wait(handles: list[_Handle], seconds: float, progress: Progress | None,
          what: str) -> float:
    """Poll until every handle has exited or ``seconds`` pass -> time waited."""
    start = time.monotonic()
    deadline = start + seconds
    next_note = start + _PROGRESS_EVERY
    while True:
        for h in handles:
            if not h.done and _has_exited(h):
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
            use_pidfd: bool | None = None, kill_wait: float = KILL_WAIT) -> Outcome:
    """Signal exactly ``plan.targets``: SIGINT, up to ``grace`` s, SIGKILL."""
    if use_pidfd is None:
        use_pidfd = pidfd_supported()
    ancestors = _ancestors_now()
    fates: list[PidFate] = []
    handles: list[_Handle] = []
    for t in plan.targets:  # parents first: a supervisor cannot respawn what we stop
        fate = PidFate(pid=t.pid, title=t.actor or t.title, fate="exited")
        fates.append(fate)
        fd, why = _open(t, use_pidfd)
        if why is None:
            # pinned (with a pidfd): now the identity check below is final
            why = _verify(t, plan, ancestors)
        if why is not None:
            if fd is not None:
                os.close(fd)
            fate.fate, _, fate.detail = why.partition(": ")  # type: ignore[assignment]
            continue
        handles.append(_Handle(t, fate, fd))
    try:
        live = _signal_all(handles, signal.SIGINT, plan, ancestors)
        if progress is not None and live:
            progress(f"sent SIGINT to {len(live)} process{'es' if len(live) != 1 else ''}; "
                     f"waiting up to {grace:g}s for them to exit")
        waited = _wait(live, grace, progress, "grace") if live else 0.0
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
        for h in live:
            if h.fate.exit_code is not None and not h.fate.detail:
                h.fate.detail = f"exit status {exit_status(h.fate.exit_code)}"
    finally:
        for h in handles:
            h.close()
    return Outcome(fates=fates, escalated=escalated, waited=waited, pidfd=use_pidfd)


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
        if word in ("gone", "reused") and h.fate.signals:
            word, detail = "exited", ""  # it went (and maybe its pid too) between our signals
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
         progress: Progress | None = None, use_pidfd: bool | None = None) -> ReapReport:
    """Plan, signal (unless ``dry_run``), then sweep what was asked."""
    from . import bindspace as bs
    from . import shm as shm_mod

    report = ReapReport(dry_run=dry_run, grace=grace)
    if uds and bindspace_arg is not None:
        # a mistyped --bindspace must fail before anything is signalled
        path, _, _ = bs.resolve_dir(bindspace_arg)
        if not os.path.isdir(path):
            raise NotFound(f"no such bindspace dir: {path}")
    plan = None
    if processes:
        plan = make_plan(parent, everything=everything)
        report.plan = plan
        if dry_run:
            report.outcome = dry_run_outcome(plan)
        elif plan.targets:
            report.outcome = execute(plan, grace, progress=progress, use_pidfd=use_pidfd)
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
        again = make_plan(plan.parent, everything=plan.everything, uid=plan.uid)
    except NotFound:  # the --parent pid itself went away
        return []
    before = {(t.pid, round(t.create_time, 2)) for t in plan.targets}
    return [t for t in again.targets
            if (t.pid, round(t.create_time, 2)) not in before and t.create_time >= plan.scanned_at - 1.0]
