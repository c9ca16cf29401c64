"""From one `/proc` pass to a classified `Snapshot` of the watched trees.

Targets are pids or patterns. A pattern matches a substring of the full
command line (which is the process title for current-runtime actors) or of
the kernel ``comm``. Our own process and its ancestors never match a pattern:
``tractor-diag ptree pytest`` must not find the shell that ran it.

With no targets at all, the roots are discovered: every non-actor process
with actor children (the root actor is an ordinary python process), plus
the stray actors.
"""
from __future__ import annotations

import os
import time
from collections.abc import Iterable

from . import procfs
from .classify import bucket_of, is_reparented, is_subreaper, state_of
from .model import Entry, Proc, Snapshot, replace
from .model import actor_children  # noqa: F401 - a view of a Snapshot, named here too


class Targets:
    """Parsed ``<pid|pattern>...`` arguments.

    An empty or blank argument is a usage error, not "no root": no roots
    means every actor tree on the machine, and ``stacks "$UNSET"`` must not
    turn into a task-tree request to all of them (nor ``' '`` into a
    pattern that every command line with a space matches).
    """

    def __init__(self, args: Iterable[str | int] = ()):
        self.pids: list[int] = []
        self.patterns: list[str] = []
        for arg in args:
            if isinstance(arg, int) or (isinstance(arg, str) and arg.isdigit()):
                self.pids.append(int(arg))
            elif not str(arg).strip():
                from .errors import UsageError

                raise UsageError(
                    f"an empty root ({str(arg)!r}) matches nothing: give a pid or a "
                    "pattern, or no root at all for every actor tree")
            else:
                self.patterns.append(str(arg))

    @property
    def empty(self) -> bool:
        return not self.pids and not self.patterns

    def matches(self, argv: list[str], comm: str) -> bool:
        if not self.patterns:
            return False
        line = " ".join(argv)
        return any(p in line or p in comm for p in self.patterns)

    def root_test(self):
        pids = set(self.pids)
        if self.empty:
            return None
        return lambda pid, argv, comm: pid in pids or self.matches(argv, comm)


def self_and_ancestors(procs: dict[int, Proc], pid: int | None = None) -> set[int]:
    pid = os.getpid() if pid is None else pid
    out: set[int] = set()
    while pid and pid not in out:
        out.add(pid)
        proc = procs.get(pid)
        if proc is None:
            break
        pid = proc.ppid
    return out


def children_map(procs: dict[int, Proc]) -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for proc in procs.values():
        if proc.pid != proc.ppid:
            kids.setdefault(proc.ppid, []).append(proc.pid)
    for lst in kids.values():
        lst.sort()
    return kids


def descendants(kids: dict[int, list[int]], tops: Iterable[int]) -> list[int]:
    """``tops`` and everything below them, parents before children."""
    out: list[int] = []
    seen: set[int] = set()
    stack = list(tops)
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        out.append(pid)
        stack.extend(kids.get(pid, ()))
    return out


def resolve_roots(procs: dict[int, Proc], targets: Targets,
                  kids: dict[int, list[int]]) -> tuple[list[int], list[int], list[str]]:
    """-> (roots, missing pids, patterns that matched nothing).

    Only the topmost match of a subtree is a root: a pattern that matches a
    parent and its children yields the parent once.
    """
    missing = [p for p in targets.pids if p not in procs]
    found: set[int] = {p for p in targets.pids if p in procs}
    unmatched: list[str] = []
    if targets.patterns:
        excluded = self_and_ancestors(procs)
        line_of = {pid: " ".join(p.cmdline) for pid, p in procs.items()}
        for pat in targets.patterns:
            hits = {
                pid for pid, p in procs.items()
                if pid not in excluded and (pat in line_of[pid] or pat in p.comm)
            }
            if not hits:
                unmatched.append(pat)
            found |= hits
    elif targets.empty:
        # Root actors, and any other program with actors below it; a root
        # actor adopted by init is an orphan and shows among the strays.
        found = {
            pid for pid, p in procs.items()
            if not is_subreaper(p) and (
                (p.actor is not None and p.actor.role == "root"
                 and not is_reparented(p, procs.get(p.ppid)))
                or (p.actor is None
                    and any(procs[c].actor is not None and procs[c].actor.role != "root"
                            for c in kids.get(pid, ())))
            )
        }
    roots = sorted(p for p in found if not _has_ancestor_in(procs, p, found))
    return roots, missing, unmatched


def _has_ancestor_in(procs: dict[int, Proc], pid: int, pids: set[int]) -> bool:
    seen = {pid}
    proc = procs.get(pid)
    while proc is not None and proc.ppid not in seen:
        if proc.ppid in pids:
            return True
        seen.add(proc.ppid)
        proc = procs.get(proc.ppid)
    return False


#: Shortest window a CPU rate is computed over. The kernel counts CPU time
#: in clock ticks (10 ms): over a few milliseconds one tick reads as 50% and
#: two as a runaway. Over 0.2 s a tick is 5%.
MIN_RATE_WINDOW = 0.2


def build_snapshot(
    procs: dict[int, Proc],
    targets: Targets,
    *,
    prev: Snapshot | None = None,
    rate_base: Snapshot | None = None,
    subreapers: frozenset[int] | set[int] = frozenset(),
    taken_at: float | None = None,
    monotonic: float | None = None,
    include_strays: bool = True,
) -> Snapshot:
    kids = children_map(procs)
    roots, missing, unmatched = resolve_roots(procs, targets, kids)
    mono = time.monotonic() if monotonic is None else monotonic
    window = (mono - prev.monotonic) if prev is not None else 0.0
    # CPU rates against `rate_base` (default `prev`): the sampler passes an
    # older snapshot when the last one is too recent for a rate.
    base = rate_base if rate_base is not None else prev
    rate_window = (mono - base.monotonic) if base is not None else 0.0
    entries: dict[int, Entry] = {}

    # A process asleep through the window as it was at the rate base (the
    # same record) is judged as it was then: no CPU, the same state. What
    # the judgement would read again is what the record holds.
    was_entries = base.entries if base is not None and rate_window >= MIN_RATE_WINDOW else {}

    def place(top: int, root: int | None) -> None:
        in_tree = root is not None
        stack = [(top, 0)]
        while stack:
            pid, depth = stack.pop()
            if pid in entries:
                continue
            proc = procs[pid]
            parent = procs.get(proc.ppid)
            bucket = bucket_of(proc, parent, in_tree, subreapers)
            children = list(kids.get(pid, ()))
            was = was_entries.get(pid)
            if (was is not None and was.cpu_percent == 0.0 and was.state in _ASLEEP_STATES
                    and proc.state in _ASLEEP and bucket == was.bucket and bucket != "orphan"
                    and not proc.leader_exited and was.proc == proc):
                entries[pid] = Entry(proc=proc, bucket=bucket, state=was.state, root=root,
                                     depth=depth, children=children, cpu_percent=0.0)
            else:
                entries[pid] = _judged(proc, parent, bucket, root, depth, children,
                                       base, rate_window)
            stack.extend((c, depth + 1) for c in reversed(children))

    for root in roots:
        place(root, root)

    strays: list[int] = []
    if include_strays:
        for pid in sorted(procs):
            proc = procs[pid]
            if pid in entries or proc.actor is None:
                continue
            parent = procs.get(proc.ppid)
            # A ghost: an actor adopted by init/a subreaper, outside every
            # given tree. Actors whose parent is some other live program
            # belong to that program and are left alone.
            if is_reparented(proc, parent, subreapers):
                strays.append(pid)
                place(pid, None)

    if prev is not None:
        remember_names(entries, prev)
    _actor_parents(entries, procs)
    return Snapshot(
        taken_at=time.time() if taken_at is None else taken_at,
        monotonic=mono,
        roots=roots,
        entries=entries,
        strays=strays,
        samples=2 if prev is not None else 1,
        window=window,
        patterns=list(targets.patterns),
        missing_roots=missing,
        unmatched_patterns=unmatched,
        host=os.uname().nodename,  # gethostname's answer, without importing socket
        boot_time=procfs.boot_time() if procfs.HAVE_PROCFS else 0.0,
    )


# Kernel states of a process asleep (interruptibly, or an idle kernel
# thread), and the judgements such a process can get without running.
_ASLEEP = ("S", "I")
_ASLEEP_STATES = ("idle", "blocked")


def _judged(proc: Proc, parent: Proc | None, bucket: str, root: int | None, depth: int,
            children: list[int], base: Snapshot | None, rate_window: float) -> Entry:
    cpu = _cpu_percent(proc, base, rate_window)
    old = _same_proc(proc, base, rate_window)
    entry = Entry(
        proc=proc,
        bucket=bucket,
        state=state_of(proc, cpu, old, rate_window),
        root=root,
        depth=depth,
        children=children,
        cpu_percent=cpu,
    )
    notes = []
    if bucket == "orphan":
        notes.append(_orphan_note(proc, parent))
    if proc.leader_exited:
        others = max(1, proc.num_threads - 1)
        notes.append(f"main thread exited, {others} other thread"
                     f"{'s' if others != 1 else ''} running")
    if notes:
        entry.note = "; ".join(notes)
    return entry


def remember_names(entries: dict[int, Entry], prev: Snapshot) -> None:
    """A process that exited keeps the name it had while it lived: a
    zombie's cmdline reads empty, and the 15-byte ``comm`` left would show
    ``_subactor[crash`` for ``crash_and_burn``. Same pid and start time
    only, and the same ``comm``: a process that set its title after we last
    read it (an actor that crashed within a tick of its boot) is named by
    what its ``comm`` says now, not by the launch command line we saw. The
    name is carried from snapshot to snapshot."""
    for pid, entry in entries.items():
        proc = entry.proc
        if proc.cmdline and not (proc.actor is not None and proc.actor.name_truncated):
            continue
        before = prev.entries.get(pid)
        if before is None or abs(before.proc.create_time - proc.create_time) > 0.005:
            continue
        if before.proc.cmdline and before.proc.comm == proc.comm:
            proc.cmdline = before.proc.cmdline
            proc.actor = before.proc.actor


def _actor_parents(entries: dict[int, Entry], procs: dict[int, Proc]) -> None:
    """Each actor's place in the actor tree: its logical parent when the
    runtime spawned it through another process, else its nearest ancestor
    that is an actor (the fork-server sidecar is not one)."""
    for pid, entry in entries.items():
        actor = entry.proc.actor
        if actor is None or actor.role == "forkserver":
            continue
        if actor.logical_parent is not None and actor.logical_parent in entries:
            entry.actor_parent = actor.logical_parent
            continue
        seen = {pid}
        up = entry.proc.ppid
        while up in entries and up not in seen:
            seen.add(up)
            above = entries[up].proc.actor
            if above is not None and above.role != "forkserver":
                entry.actor_parent = up
                break
            up = procs[up].ppid if up in procs else 0


def _cpu_percent(proc: Proc, prev: Snapshot | None, window: float) -> float | None:
    if prev is None or window < MIN_RATE_WINDOW:
        return None
    old = prev.entries.get(proc.pid)
    if old is None or abs(old.proc.create_time - proc.create_time) > 0.02:
        return None  # new since the last sample, or a reused pid
    return max(0.0, (proc.cpu_time - old.proc.cpu_time) / window * 100.0)


def _same_proc(proc: Proc, prev: Snapshot | None, window: float) -> Proc | None:
    if prev is None or window < MIN_RATE_WINDOW:
        return None
    old = prev.entries.get(proc.pid)
    if old is None or abs(old.proc.create_time - proc.create_time) > 0.02:
        return None
    return old.proc


def _orphan_note(proc: Proc, parent: Proc | None) -> str:
    if proc.ppid == 1:
        return "re-parented to init"
    if parent is None:
        return "parent gone"
    return f"adopted by {parent.comm} ({parent.pid})"


def take_snapshot(targets: Targets, *, prev: Snapshot | None = None,
                  rate_base: Snapshot | None = None,
                  subreapers: frozenset[int] | set[int] = frozenset(),
                  full: bool = False, cache: procfs.ProcCache | None = None) -> Snapshot:
    """One pass over /proc, classified. ``full`` also reads each tree
    member's status and cgroup (context switches, real uid, cgroup): about
    twice the cost, so only the sampler and machine output ask for it.
    ``cache``: a repeated pass (the sampler's) skips what did not change.
    """
    procs = procfs.scan(targets.root_test(), full=full, cache=cache)
    if targets.empty:
        # Discovered roots were not known during the pass: read their detail now.
        kids = children_map(procs)
        roots, _, _ = resolve_roots(procs, targets, kids)
        procfs.fill_detail(procs, descendants(kids, roots), full=full, cache=cache)
    return build_snapshot(procs, targets, prev=prev, rate_base=rate_base, subreapers=subreapers)


def take_two(targets: Targets, window: float = 0.3, *, full: bool = False) -> Snapshot:
    """Two passes ``window`` apart, for CPU rates and runaways."""
    first = take_snapshot(targets, full=full)
    time.sleep(window)
    return take_snapshot(targets, prev=first, full=full)


def keep_strays(snap: Snapshot, keep: Iterable[int]) -> Snapshot:
    """``snap`` with only the strays in ``keep``: every other stray goes,
    with what sits below it and under no root or kept stray. A new
    `Snapshot` (the given one may be a sampler's, shared with its history)."""
    wanted = set(keep)
    keep = [pid for pid in snap.strays if pid in wanted]
    if keep == snap.strays:
        return snap
    kids = {pid: e.children for pid, e in snap.entries.items()}
    drop = set(descendants(kids, [p for p in snap.strays if p not in keep]))
    drop -= set(descendants(kids, [*snap.roots, *keep]))
    entries = {pid: e for pid, e in snap.entries.items() if pid not in drop}
    return replace(snap, entries=entries, strays=keep)


#: The longest CPU window a one-shot look takes (a monitor samples for longer).
MAX_RATE_WINDOW = 60.0


def snapshot_for(targets_args: list[str], cpu: float | None = None, strays: bool = True,
                 full: bool = False) -> Snapshot:
    """The snapshot a verb needs of the roots it was given, or NotFound as one
    line when none of them exists. ``cpu``: a second snapshot that many
    seconds later, for rates. ``strays=False`` drops processes outside the
    roots. ``full``: also status and cgroup detail (see `procfs`)."""
    from .errors import NotFound, UsageError

    targets = Targets(targets_args)
    if cpu is not None and not MIN_RATE_WINDOW <= cpu <= MAX_RATE_WINDOW:
        raise UsageError(f"the CPU sampling window must be from {MIN_RATE_WINDOW:g} to "
                         f"{MAX_RATE_WINDOW:g} seconds (CPU time is counted in 10 ms ticks)")
    if not strays and cpu is None and targets.pids and not targets.patterns:
        # Only the given trees are wanted: read them alone, not every process.
        snap = _subtrees_snapshot(targets, full)
        if snap is not None:
            return _found(targets, snap)
    snap = take_snapshot(targets, full=full)
    if cpu is not None:
        time.sleep(cpu)
        snap = take_snapshot(targets, prev=snap, full=full)
    if not strays and snap.strays:
        for pid in [p for p, e in snap.entries.items() if e.root is None]:
            del snap.entries[pid]
        snap.strays = []
    return _found(targets, snap)


def _subtrees_snapshot(targets: Targets, full: bool) -> Snapshot | None:
    """The snapshot of the given pids' trees without strays, from a scan of
    those trees and the roots' parents only (their bucket needs the parent);
    None when the kernel's children lists cannot say exactly which those are."""
    found = procfs.subtrees(targets.pids)
    if found is None:
        return None
    members, parents, kids = found
    procs = procfs.scan(targets.root_test(), only=members + parents, full=full, children=kids)
    return build_snapshot(procs, targets, include_strays=False)


def _found(targets: Targets, snap: Snapshot) -> Snapshot:
    """``snap``, or NotFound naming every given root that matched nothing."""
    from .errors import NotFound

    if not targets.empty and not snap.roots:
        missing = ", ".join(map(str, snap.missing_roots))
        pats = ", ".join(repr(p) for p in snap.unmatched_patterns)
        parts = [f"no such process: {missing}" if missing else "",
                 f"no process matches {pats}" if pats else ""]
        raise NotFound("; ".join(p for p in parts if p))
    return snap
