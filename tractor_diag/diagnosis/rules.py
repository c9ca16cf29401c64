"""The `why` rules: wait-for edges and verdicts from a snapshot, its stacks
and task trees, and two kernel samples taken around the capture.

A process waits for another only with evidence: a waiting point of the
table (`waitpoints`) in its main thread's Python stack or in one of its
trio tasks, joined to a target by the process tree or by the kernel (the
pid a ``wait4`` names). Without one it is idle, whatever its children do.
A verdict is only ever made from what a kernel file, a stack or a task
dump says, and it carries that evidence.
"""
from __future__ import annotations

import time

from .. import kstate
from ..classify import booting, in_event_loop, is_subreaper, wchan_name
from ..model import Entry, Proc, Snapshot, exit_status
from ..stackmodel import ProcStacks, StacksReport
from ..whymodel import Chain, Diagnosis, Evidence, KernelSample, Verdict, WaitEdge
from . import waitpoints
from .where import await_text, is_internal, main_thread, python_where, short_path

_SIGNAMES = {2: "SIGINT", 15: "SIGTERM"}

# What a sync call is, by the kernel function its thread sleeps in.
_SYNC_CALLS = (
    (("hrtimer_nanosleep", "do_nanosleep", "clock_nanosleep"), "time.sleep"),
    (("futex",), "a lock or futex wait"),
    (("do_wait", "kernel_wait4", "do_waitid"), "os.waitpid"),
    (("pipe_read", "pipe_wait"), "a pipe read"),
    (("unix_stream_read", "unix_dgram_recv", "sk_wait_data", "wait_woken",
      "inet_csk_accept", "unix_wait_for_peer"), "a blocking socket call"),
    (("n_tty_read", "wait_for_completion"), "a blocking read"),
)

# Most telling first: the verdict that names a chain's cause.
_PRIORITY = (
    "sync-blocked", "runaway", "blocked", "stopped", "traced", "zombie",
    "boot-hang", "lost-cancel", "loop-held", "cancel-outlived", "reported", "cycle",
    "port-holder", "ignores-signals", "orphan", "stale-socket",
)

# Properties of a process rather than reasons it cannot move: listed, never
# the cause a chain of waits ends in.
ATTRIBUTES = frozenset({"ignores-signals", "orphan", "stale-socket", "port-holder"})

#: How long the main thread must have been off the CPU, in one sync call,
#: to be called blocked in it.
SYNC_BLOCKED_AFTER = 1.0
#: How long after the capture a process in a sync call that ran just before
#: it is read again, and how long it must not have run by then: what runs
#: it during the capture (a task dump's handler, say) may end a little
#: after it, a healthy loop runs every few tenths even on a busy box.
LOOK_AGAIN = 1.0
QUIET = 0.6


def sync_call(wchan: str | None) -> str | None:
    name = wchan_name(wchan)
    if not name or in_event_loop(name):
        return None
    for keys, call in _SYNC_CALLS:
        if any(k in name for k in keys):
            return call
    return f"a kernel wait ({name})"


def _name(entry: Entry | None, pid: int) -> str:
    if entry is None:
        return str(pid)
    p = entry.proc
    if p.actor is not None and p.actor.name:
        # a zombie's name comes from its 15-byte comm: say it is cut
        return p.actor.name + ("…" if p.actor.name_truncated else "")
    return p.brief


def _loc(frame) -> str:
    return f"{short_path(frame.filename)}:{frame.line}"


def _helper(entry: Entry) -> bool:
    """Processes a runtime starts beside its actors (multiprocessing's
    resource tracker, the fork server that forks mp_forkserver's actors):
    no actor waits for them."""
    line = " ".join(entry.proc.cmdline)
    actor = entry.proc.actor
    return "multiprocessing.resource_tracker" in line or (
        actor is not None and actor.role == "forkserver")


def _forkservers(c) -> list[int]:
    return sorted(pid for pid, e in c.snap.entries.items()
                  if e.proc.actor is not None and e.proc.actor.role == "forkserver"
                  and e.proc.state not in ("Z", "X"))


class _Ctx:
    def __init__(self, snap: Snapshot, report: StacksReport,
                 before: dict[int, KernelSample], after: dict[int, KernelSample],
                 now: float, ipc=None):
        self.snap = snap
        self.ipc = ipc
        # actor -> parent by the channel it holds, where the OS parent is a
        # forkserver sidecar
        self.logical = {pid: e.proc.actor.logical_parent for pid, e in snap.entries.items()
                        if e.proc.actor is not None and e.proc.actor.logical_parent}
        self.logical.update(ipc.logical_parent if ipc is not None else {})
        self.sidecars = {snap.entries[c].proc.ppid for c in self.logical
                         if c in snap.entries and snap.entries[c].proc.ppid != self.logical[c]}
        self.stacks = {p.pid: p for p in report.procs}
        self.before = before
        self.after = after
        self.now = now
        self.verdicts: list[Verdict] = []
        self.edges: list[WaitEdge] = []
        self.notes: list[str] = []
        # main thread in a sync call off its loop, too briefly for a verdict
        self.held: set[int] = set()
        self.later: dict[int, KernelSample] | None = {}
        # (the cycle's verdict, its members from the one it names on)
        self.cycles: list[tuple[Verdict, list[int]]] = []
        self.stale_elsewhere = 0  # stale socket files of other runs

    def name(self, pid: int) -> str:
        return _name(self.snap.entries.get(pid), pid)

    def who(self, pid: int) -> str:
        """The subject of a sentence: name and pid."""
        return f"{self.name(pid)} ({pid})"

    def children(self, pid: int) -> list[int]:
        """The processes ``pid`` spawned as actors: its OS children but the
        runtime's helpers and forkserver sidecars, and the sidecar's
        children whose channel leads to ``pid``."""
        entry = self.snap.entries.get(pid)
        if entry is None:
            return []
        kids = [c for c in entry.children
                if c in self.snap.entries and not _helper(self.snap.entries[c])
                and c not in self.sidecars]
        kids += [c for c, lp in self.logical.items() if lp == pid and c not in kids]
        return sorted(kids)

    def below(self, pid: int) -> set[int]:
        """Every process under ``pid``, by the OS tree and by channels."""
        out: set[int] = set()
        stack = [pid]
        while stack:
            for k in self.children(stack.pop()):
                if k not in out and k != pid:
                    out.add(k)
                    stack.append(k)
        return out

    def registrars(self) -> set[int]:
        g = self.ipc
        if g is None:
            return set()
        from ..sockmodel import listener_matches

        return {pid for pid, ls in g.listeners.items()
                if any(listener_matches(lst, r) for lst in ls for r in g.registry)}

    def channel_peers(self, pid: int) -> set[int] | None:
        """Processes ``pid`` holds a connection to (IPC graph), or None when
        the graph cannot say (no graph, its sockets unreadable, or no Unix
        peers without sock_diag)."""
        g = self.ipc
        if g is None or pid in g.unknown or pid not in g.pids or not g.peers_known:
            return None
        return {p.peer_pid for p in g.peers.get(pid, ())}

    def connected_to(self, child: int, parent: int) -> bool | None:
        g = self.ipc
        if g is None or child in g.unknown or child not in g.pids or not g.peers_known:
            return None
        return any(e.src == child and e.dst == parent and e.kind == "parent-channel"
                   for e in g.edges) or parent in (self.channel_peers(child) or set())

    def add(self, kind, pid, text, evidence, hints=()):
        self.verdicts.append(Verdict(kind=kind, pid=pid, name=self.name(pid), text=text,
                                     evidence=list(evidence), hints=list(hints)))

    def has(self, pid: int, *kinds: str) -> bool:
        return any(v.pid == pid and (not kinds or v.kind in kinds) for v in self.verdicts)


def _kernel_verdicts(c: _Ctx, pid: int, entry: Entry) -> None:
    a, b = c.before.get(pid), c.after.get(pid)
    name = c.who(pid)
    proc = entry.proc
    if proc.state in ("Z", "X") or entry.bucket == "zombie":
        parent = c.snap.entries.get(proc.ppid)
        # init (or a subreaper) adopted it: no program of the user's to look into
        adopter = proc.ppid == 1 or (parent is not None and is_subreaper(parent.proc))
        pname = c.name(proc.ppid) if parent else ("init" if proc.ppid == 1 else str(proc.ppid))
        code = f" (exit status {exit_status(proc.exit_code)})" if proc.exit_code is not None else ""
        text = f"{name} exited{code} and its parent {pname} ({proc.ppid}) has not reaped it"
        ev = [Evidence("kernel", f"state Z in /proc/{pid}/stat; ppid {proc.ppid}")]
        ps = c.stacks.get(proc.ppid)
        if ps is not None and ps.python.status == "ok":
            where = python_where(ps)
            text += f"; {pname} is at {where}"
            ev.append(Evidence("python", f"{pname} main thread: {where}"))
        gone = f"the zombie goes when {pname} ({proc.ppid}) reaps it or exits"
        if adopter:
            # one cannot dump pid 1 nor signal a zombie away: say what holds it
            c.add("zombie", pid, text, ev, [
                f"{pname} ({proc.ppid}) is {'pid 1' if proc.ppid == 1 else 'a subreaper'}: "
                "reaping orphans is its job, and a zombie that stays under it means it does "
                "not reap (a container whose first process is no init: start it with one, "
                "e.g. `docker run --init` or tini)"])
            return
        hints = [f"tractor-diag stacks {proc.ppid}"]
        if parent is not None and parent.proc.actor is not None \
                and parent.proc.ppid in c.snap.entries:
            # ending the parent is what clears it: reap plans the parent's subtree
            hints.append(f"tractor-diag reap --parent {_reap_scope(parent.proc)} --dry-run  # {gone}")
        else:
            hints.append(gone)
        c.add("zombie", pid, text, ev, hints)
        return
    if a is None:
        return
    if a.state == "T" or (b is not None and b.state == "T" and a.state == "T"):
        c.add("stopped", pid, f"{name} is stopped (SIGSTOP or job control): it runs nothing "
              "until it gets SIGCONT", [Evidence("kernel", f"state T in /proc/{pid}/stat")],
              [f"kill -CONT {pid}"])
    if a.tracer_pid:
        tracer = (c.name(a.tracer_pid) if a.tracer_pid in c.snap.entries
                  else a.tracer_comm or "pid")
        c.add("traced", pid, f"{name} is traced by {tracer} ({a.tracer_pid}): it stops at "
              "every signal until the tracer lets it go",
              [Evidence("kernel", f"TracerPid {a.tracer_pid} in /proc/{pid}/status")])
    if a.state == "D" and (b is None or b.state == "D"):
        c.add("blocked", pid, f"{name} is in an uninterruptible kernel wait "
              f"({wchan_name(a.wchan) or '?'}): no signal reaches it until that call returns",
              [Evidence("kernel", f"state D, wchan {a.wchan or '-'}")])
    if b is not None:
        touched = 2 if pid in c.stacks else 0  # our own ptrace attach and SIGUSR1
        runaway = kstate.is_runaway(a, b, touched)
        if runaway and booting(proc):
            c.notes.append(f"{name} was busy all the window but started "
                           f"{max(0.0, time.time() - proc.create_time):.1f} s ago: its boot, "
                           "not judged a runaway yet")
        elif runaway:
            share = kstate.on_cpu_share(a, b) or 0.0
            window = b.at - a.at
            ps = c.stacks.get(pid)
            where = f", at {python_where(ps)}" if ps is not None and ps.python.status == "ok" else ""
            c.add("runaway", pid,
                  f"{name} burns a CPU: on one or queued for one {share:.0%} of {window:.2f} s and "
                  f"never yields it{where}",
                  [Evidence("kernel", f"schedstat: run+queue {share:.0%} of the {window:.2f} s "
                            f"window; {b.vol_ctx - a.vol_ctx} voluntary context switches "
                            f"(ours: up to {touched})")],
                  [f"tractor-diag stacks {pid}", f"tractor-diag reap --parent {_reap_scope(proc)} --dry-run"])
    helper = (pid in c.sidecars or _helper(entry)
              or (proc.actor is not None and proc.actor.role == "forkserver"))
    if (proc.actor is not None or pid in c.snap.roots) and not helper:
        # (multiprocessing's fork server ignores SIGINT by design)
        ign = kstate.signal_set(a.sig_ignored) & set(_SIGNAMES)
        blk = kstate.signal_set(a.sig_blocked) & set(_SIGNAMES)
        if b is not None:
            ign &= kstate.signal_set(b.sig_ignored)
            blk &= kstate.signal_set(b.sig_blocked)
        if ign or blk:
            sigs = " and ".join(_SIGNAMES[s] for s in sorted(ign | blk))
            how = []
            if ign:
                how.append("ignores " + " and ".join(_SIGNAMES[s] for s in sorted(ign)))
            if blk:
                how.append("blocks " + " and ".join(_SIGNAMES[s] for s in sorted(blk)))
            c.add("ignores-signals", pid,
                  f"{name} {' and '.join(how)}: a cancel by {sigs} never reaches it, "
                  "only SIGKILL ends it",
                  [Evidence("kernel", f"SigIgn {a.sig_ignored or 0:016x}, "
                            f"SigBlk {a.sig_blocked or 0:016x} in /proc/{pid}/status")],
                  [f"tractor-diag reap --parent {_reap_scope(proc)} --dry-run  # SIGINT, grace, then SIGKILL"
                   if proc.actor is not None and proc.ppid in c.snap.entries
                   else f"kill -KILL {pid}"])
    if entry.bucket == "orphan":
        c.add("orphan", pid, f"{name} is an orphan: {entry.note or 'its parent is gone'}",
              [Evidence("tree", f"ppid {proc.ppid}, started before its parent or adopted")],
              ["tractor-diag reap --dry-run"])


def _python_verdicts(c: _Ctx, pid: int, ps: ProcStacks) -> None:
    """A trio loop wedged in a sync call, read from the main thread."""
    if c.has(pid, "runaway", "zombie", "stopped"):
        return
    thread = main_thread(ps.python, ps.pid)
    if thread is None or not thread.frames:
        return
    frames = [f for f in thread.frames if not f.native]
    in_trio = any(f.name == "run" and "/trio/_core/_run.py" in f.filename for f in frames)
    under_invoke = any(f.name.endswith("_invoke") and "/tractor/" in f.filename for f in frames)
    if not frames or not (in_trio or under_invoke):
        return
    inner = frames[-1]
    # the loop's own wait for I/O: idle
    if "/trio/_core/_io_" in inner.filename or "/trio/_core/_run.py" in inner.filename:
        return
    a = c.before.get(pid)
    k = a or c.after.get(pid)
    wchan = k.wchan if k is not None else ps.kernel.wchan
    point = waitpoints.innermost(frames)
    sync_point = point is not None and point[0].sync
    call = sync_call(wchan)
    if sync_point:
        # multiprocessing's Process.join with a timeout sleeps in poll():
        # the kernel alone would call that an idle loop
        call = point[0].label
    if call is None or (k is not None and k.state == "R"):
        return
    user = next((f for f in reversed(frames) if not is_internal(f.filename)), None)
    at = user or inner
    secs, looked = "", None
    if a is not None and a.last_ran is not None:
        dur = max(0.0, c.now - a.last_ran)
        age = time.time() - c.snap.entries[pid].proc.create_time
        if dur < SYNC_BLOCKED_AFTER and c.later is not None:
            # it ran a moment before the capture: a brief sync call on its
            # way back to the loop (a busy box delays a healthy one's turn
            # by tenths), unless it has not run a while after the capture
            # either (an earlier capture had woken it)
            again, b = c.later.get(pid), c.after.get(pid)
            if again is None or again.last_ran is None or not sync_call(again.wchan):
                quiet = False
            else:
                # not run for a while, or woken twice at most (the tails
                # of our attach and task dump going back to sleep; a loop
                # that polls switches at every call and every loop pass)
                switches = (again.vol_ctx - b.vol_ctx if b is not None and b.vol_ctx is not None
                            and again.vol_ctx is not None else None)
                quiet = again.at - again.last_ran >= QUIET or switches in (0, 1, 2)
            if not quiet:
                # its tasks are frozen meanwhile all the same
                c.held.add(pid)
                return
            dur = again.at - a.last_ran
            looked = Evidence("kernel", f"read again {again.at - b.at:.1f} s after the capture: "
                              f"still wchan {again.wchan}, last ran "
                              f"{again.at - again.last_ran:.1f} s before, {switches} voluntary "
                              "context switches since")
        # when it last ran: an earlier py-spy attach wakes it briefly, so
        # this is a lower bound
        secs = f" for at least {min(dur, age):.0f} s"
    task = "an RPC task (tractor _invoke)" if under_invoke else "a trio task"
    c.add("sync-blocked", pid,
          f"{c.who(pid)} is blocked in {call} at {_loc(at)}{secs} — a sync call that a "
          "cancel cannot interrupt",
          [Evidence("kernel", f"wchan {wchan}, state {k.state if k else ps.kernel.state}"),
           *([looked] if looked is not None else []),
           Evidence("python", f"main thread, under {task}: {await_text(frames)}")],
          [f"tractor-diag stacks {pid}",
           f"tractor-diag reap --parent {_reap_scope(c.snap.entries[pid].proc)} --dry-run"])


def _reap_scope(proc: Proc) -> int:
    """The ``reap --parent`` that reaches ``proc`` and least else: the actor
    that asked a fork-server sidecar for it (reap follows that pipe-proven
    link), not the sidecar, whose children are every actor of the tree."""
    a = proc.actor
    if a is not None and a.parent_by == "sentinel-pipe" and a.logical_parent is not None:
        return a.logical_parent
    return proc.ppid


def _task_verdicts(c: _Ctx, pid: int, ps: ProcStacks) -> None:
    if ps.tasks.status != "collected":
        return
    tasks = ps.tasks.tasks
    running = next((t for t in tasks if t.state == "running"
                    and t.frames and "taskdump" not in t.frames[-1].filename), None)
    held = next((v for v in c.verdicts if v.pid == pid and v.kind in ("sync-blocked", "runaway")),
                None)
    if held is not None and running is not None:
        held.evidence.append(Evidence("tasks", f"task '{running.name}' held the loop when the "
                                      f"dump was taken, at {await_text(running.frames)}"))
    elif running is not None and ps.python.status != "ok" and _off_loop(c, pid):
        # A task runs whenever a busy actor is interrupted; it holds the loop
        # only when the kernel shows the process away from its loop's wait
        # and no Python stack says more.
        c.add("loop-held", pid, f"{c.who(pid)}: its trio loop is held by task "
              f"'{running.name}' at {await_text(running.frames)}",
              [Evidence("tasks", f"task '{running.name}' was running when the dump was taken")])
    stuck = next((t for t in tasks if t.cancelling), None)
    if stuck is not None:
        c.add("cancel-outlived", pid, f"{c.who(pid)}: task '{stuck.name}' outlives its "
              f"nursery's cancellation, at {await_text(stuck.frames) if stuck.frames else '?'}",
              [Evidence("tasks", f"a nursery above '{stuck.name}' had cancel called")])


def _off_loop(c: _Ctx, pid: int) -> bool:
    a, b = c.before.get(pid), c.after.get(pid)
    return all(k is not None and k.wchan and not in_event_loop(k.wchan) for k in (a, b))


def _named_peer(frames: list, frame) -> tuple[int | None, str | None] | None:
    """(pid, address) of the peer the task dump names for a wait at
    ``frame``: on that frame, else on the nearest one around it."""
    i = frames.index(frame)
    for f in reversed(frames[:i + 1]):
        if f.peer_pid is not None or f.peer_addr:
            return f.peer_pid, f.peer_addr
    return None


def _waits(ps: ProcStacks):
    """((point, evidence) per wait from the main thread and every task,
    {id(evidence): (pid, address) of the peer the task dump names})."""
    out: list = []
    peers: dict[int, tuple[int | None, str | None]] = {}
    thread = main_thread(ps.python, ps.pid)
    if thread is not None:
        hit = waitpoints.innermost(thread.frames)
        if hit is not None:
            point, frame = hit
            out.append((point, Evidence("python", f"main thread in {frame.name} at {_loc(frame)}")))
    if ps.tasks.status == "collected":
        if ps.tasks.format == "tractor-diag":
            for t in ps.tasks.tasks:
                # a task with children waits in its own await chain too
                # (`async with nursery: await portal.run(...)`)
                hit = waitpoints.innermost(t.frames)
                if hit is not None:
                    point, frame = hit
                    ev = Evidence("tasks", f"task '{t.name}' in {frame.name} at {_loc(frame)}")
                    out.append((point, ev))
                    named = _named_peer(t.frames, frame)
                    if named is not None:
                        peers[id(ev)] = named
        else:
            for point in waitpoints.in_text(ps.tasks.text):
                out.append((point, Evidence("tasks", f"the task dump shows {point.name}")))
    return out, peers


_OS_WAITPID = waitpoints.WaitPoint("os.waitpid", "", "child", "os.waitpid", sync=True)


def _resolve_peer(c: _Ctx, pid: int, named) -> tuple[int, list[Evidence]] | None:
    """The process a wait's named peer is, checked against the channels
    ``pid`` holds (a pid from another PID namespace names someone else)."""
    peer_pid, addr = named
    linked = c.channel_peers(pid)
    if peer_pid is not None:
        if peer_pid != pid and peer_pid in c.snap.entries and (linked is None or peer_pid in linked):
            ev = [Evidence("tasks", f"its channel's peer is pid {peer_pid} (the task dump "
                           "names it)")]
            if linked is not None:
                ev.append(Evidence("ipc", f"it holds a channel to {c.name(peer_pid)}"))
            return peer_pid, ev
        return None
    g = c.ipc
    if not addr or g is None:
        return None
    # a channel it opened: the address is the listener's; one it accepted:
    # the other end's own
    served = {p.peer_pid for p in g.peers.get(pid, ()) if p.remote == addr and p.role == "server"}
    hits = {p.peer_pid for p in g.peers.get(pid, ()) if p.addr == addr and p.role == "client"}
    hits |= {o for o, ls in g.listeners.items() if o != pid and any(lst.addr == addr for lst in ls)}
    if len(served) == 1 and not hits:
        (hit,) = served
        if hit in c.snap.entries:
            return hit, [Evidence("ipc", f"its channel's other end, {addr}, is "
                                  f"{c.name(hit)}'s connection to it")]
    if len(hits) == 1 and not served:
        (hit,) = hits
        if hit in c.snap.entries and (linked is None or hit in linked):
            return hit, [Evidence("ipc", f"its channel leads to {addr}, where {c.name(hit)} "
                                  "listens")]
    return None


def _edges(c: _Ctx, pid: int, ps: ProcStacks) -> None:
    waits, named = _waits(ps)
    if pid in c.held or c.has(pid, "sync-blocked", "runaway", "loop-held"):
        # its loop is held: a task's wait is frozen with it, and says
        # nothing of whom it waits for (the peer may be gone, its channel
        # closed unnoticed); only the main thread's own wait holds it
        waits = [(p, ev) for p, ev in waits if ev.source != "tasks"]
    entry = c.snap.entries[pid]
    kids = c.children(pid)
    live = [k for k in kids if c.snap.entries[k].proc.state not in ("Z", "X")]
    by_target: dict[int, WaitEdge] = {}

    def edge(on: int, point, relation, ev: list[Evidence]):
        e = by_target.get(on)
        if e is None or (point.sync and e.point != point.label):
            # a sync wait is the one that matters: it holds the whole loop
            by_target[on] = WaitEdge(waiter=pid, on=on, point=point.label, relation=relation,
                                     evidence=ev)
        else:
            e.evidence.extend(x for x in ev if x not in e.evidence)

    k = c.before.get(pid)
    if k is not None and sync_call(k.wchan) == "os.waitpid":
        waited = k.wait_pid
        if waited is not None and waited in kids:
            edge(waited, _OS_WAITPID, "child",
                 [Evidence("kernel", f"wchan {k.wchan}; wait4 names pid {waited} "
                           f"(/proc/{pid}/syscall)")])
    boot_waits = [(p, ev) for p, ev in waits if "wait_for_peer" in p.label]
    child_waits = [(p, ev) for p, ev in waits if p.target == "child" and (p, ev) not in boot_waits]
    peer_waits = [(p, ev) for p, ev in waits if p.target == "peer"]
    if boot_waits:
        p, ev = boot_waits[0]
        for kid in kids:
            dead = c.snap.entries[kid].proc.state in ("Z", "X")
            linked = c.connected_to(kid, pid)
            if dead or linked is False:
                why_kid = (Evidence("kernel", f"{kid} exited (zombie)") if dead else
                           Evidence("ipc", f"{c.name(kid)} holds no channel to {c.name(pid)}"))
                edge(kid, p, "child", [ev, why_kid])
        if not by_target and len(kids) == 1:
            edge(kids[0], p, "child", [ev, Evidence("tree", "its only child")])
        if not kids:
            _no_child_to_wait_for(c, pid, p, ev)
    if child_waits:
        # (not `named`: that maps the task waits' named peers, used below)
        waited = k.wait_pid if k is not None and any(p.sync for p, _ in child_waits) else None
        if waited is not None and waited in kids:
            p, ev = next((p, ev) for p, ev in child_waits if p.sync)
            edge(waited, p, "child", [ev, Evidence("kernel", f"wait4 names pid {waited} "
                                                   f"(/proc/{pid}/syscall)")])
        elif len(kids) == 1:
            p, ev = child_waits[0]
            edge(kids[0], p, "child", [ev, Evidence("tree", "its only child")])
        elif kids and len(child_waits) >= len(live) and live:
            # as many waits as live children: each child is waited for
            for k in live:
                for p, ev in child_waits:
                    edge(k, p, "child", [ev])
        elif kids:
            c.notes.append(f"{c.name(pid)} ({pid}) waits for {len(child_waits)} of its "
                           f"{len(kids)} children; which ones its stacks do not say")
    for p, ev in peer_waits:
        actor_kids = [k for k in kids if c.snap.entries[k].proc.actor is not None]
        parent_pid = c.logical.get(pid, entry.proc.ppid)
        parent = c.snap.entries.get(parent_pid)
        hit = _resolve_peer(c, pid, named[id(ev)]) if id(ev) in named else None
        if hit is not None:
            on, why_on = hit
            rel = "child" if on in kids else "parent" if on == parent_pid else "peer"
            edge(on, p, rel, [ev, *why_on])
            continue
        linked = c.channel_peers(pid)
        if linked is not None:
            # the channels it holds: to which of its children and its parent
            # children by the channel, whether or not their command line
            # says "actor" (mp_spawn's children do not)
            ends = sorted((linked & set(kids))
                          | ({parent_pid} & linked if entry.proc.actor is not None else set()))
            # a channel to anyone else (a sibling it found through the
            # registry, say) may be the one it waits on: the tree cannot
            # say which; its own subtree and the registrar only register
            strangers = linked - set(ends) - {parent_pid} - c.below(pid) - c.registrars()
            if strangers:
                c.notes.append(f"{c.name(pid)} ({pid}) waits in {p.label}; which peer is not "
                               "known (it holds channels to "
                               + ", ".join(f"{c.name(o)} ({o})" for o in sorted(set(ends) | strangers))
                               + ")")
                continue
            if len(ends) == 1:
                rel = "parent" if ends[0] == parent_pid else "child"
                edge(ends[0], p, rel, [ev, Evidence("ipc", f"its only channel to a {rel} "
                                                    f"leads to {c.name(ends[0])}")])
                continue
        if len(actor_kids) == 1:
            edge(actor_kids[0], p, "child", [ev, Evidence("tree", "its only actor child")])
        elif not actor_kids and parent is not None and entry.proc.actor is not None:
            edge(parent.proc.pid, p, "parent", [ev, Evidence("tree", "it has no children: the "
                                                             "other end is its parent")])
        else:
            c.notes.append(f"{c.name(pid)} ({pid}) waits in {p.label}; which peer is not "
                           "known (" + ("its channels lead to several" if linked
                                        else "no IPC graph") + ")")
    c.edges.extend(by_target.values())


def _no_child_to_wait_for(c: _Ctx, pid: int, point, ev: Evidence) -> None:
    """A wait for a child to connect, and no child at all, alive or a
    zombie: the child was spawned (the wait begins once it is) and is gone.
    Under mp_forkserver that is the fork server's doing: it forks the
    actors and reaps them the moment they exit, so a child that died at
    boot leaves no trace."""
    # the fork server of its tree: started by it or by an actor above it
    line, up = {pid}, c.snap.entries[pid].proc.ppid
    while up in c.snap.entries and up not in line:
        line.add(up)
        up = c.logical.get(up, c.snap.entries[up].proc.ppid)
    ours = [fs for fs in _forkservers(c) if c.snap.entries[fs].proc.ppid in line]
    evidence = [ev, Evidence("tree", f"no child of {c.name(pid)}, alive or a zombie")]
    text = (f"{c.who(pid)} waits for a child to connect ({point.label}), but it has no child "
            "left: the child died at boot")
    if len(ours) == 1:
        fs = ours[0]
        live = [k for k in c.snap.entries[fs].children
                if c.snap.entries.get(k) is not None
                and c.snap.entries[k].proc.state not in ("Z", "X")]
        if live:
            return  # one of those may be it, still booting: not judged
        text += f" and its fork server ({fs}) reaped it"
        evidence.append(Evidence("tree", f"the fork server {fs} has no child: it reaps its "
                                 "forks when they exit"))
    c.add("boot-hang", pid, text, evidence, [f"tractor-diag stacks {pid}"])


def _edge_verdicts(c: _Ctx) -> None:
    for e in c.edges:
        target = c.snap.entries.get(e.on)
        if target is None:
            continue
        point = next((p for p in waitpoints.WAIT_POINTS if p.label == e.point), None)
        tname = c.name(e.on)
        if "wait_for_peer" in e.point and target.proc.state not in ("Z", "X") \
                and c.connected_to(e.on, e.waiter) is False:
            age = time.time() - target.proc.create_time
            c.add("boot-hang", e.waiter,
                  f"{c.who(e.waiter)} waits for child {tname} to connect ({e.point}); {tname} "
                  f"started {age:.0f} s ago and holds no channel to it",
                  [*e.evidence], [f"tractor-diag stacks {e.on}"])
        elif target.proc.state in ("Z", "X") and "wait_for_peer" in e.point:
            code = target.proc.exit_code
            c.add("boot-hang", e.waiter,
                  f"{c.who(e.waiter)} waits for child {tname} to connect ({e.point}), but "
                  f"{tname} died at boot"
                  + (f" (exit status {exit_status(code)})" if code is not None else ""),
                  [*e.evidence, Evidence("kernel", f"{e.on} is a zombie")])
        elif point is not None and point.cancels and target.proc.state not in ("Z", "X"):
            ts = c.stacks.get(e.on)
            k = c.before.get(e.on)
            if ts is None or ts.tasks.status != "collected" or ts.tasks.format != "tractor-diag":
                continue
            if any(t.cancelling for t in ts.tasks.tasks):
                continue
            if any("cancel" in f.name.lower() for t in ts.tasks.tasks for f in t.frames):
                continue
            if k is None or not in_event_loop(k.wchan):
                continue
            c.add("lost-cancel", e.waiter,
                  f"{c.who(e.waiter)} is cancelling {tname} ({e.point}), but {tname} idles "
                  "in its loop with no cancel in progress: the request was lost",
                  [*e.evidence, Evidence("tasks", f"{tname}: no task cancelling or in a "
                                         "cancel handler"),
                   Evidence("kernel", f"{tname} wchan {k.wchan}")])


def _find_cycles(edges) -> list[list[int]]:
    """Every elementary cycle of the wait-for graph, once each (as a set of
    members), in the order its edges run."""
    succ: dict[int, list[int]] = {}
    for e in edges:
        succ.setdefault(e.waiter, []).append(e.on)
    found: list[list[int]] = []
    seen: set[frozenset[int]] = set()
    for start in list(succ):
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in succ.get(node, ()):
                if nxt == start:
                    key = frozenset(path)
                    if key not in seen:
                        seen.add(key)
                        found.append(path)
                elif nxt not in path and len(path) < 64:
                    stack.append((nxt, [*path, nxt]))
    return found


def _cycles(c: _Ctx) -> None:
    """A cycle of waits is its own cause: named once, on the member the rest
    of the tree waits through (else the topmost), every member and every
    wait in it named, the waits' evidence as its evidence."""
    order = {e.proc.pid: i for i, e in enumerate(c.snap.ordered())}
    for members in _find_cycles(c.edges):
        inside = set(members)
        entered = [m for m in members
                   if any(e.on == m and e.waiter not in inside for e in c.edges)]
        first = min(entered or members, key=lambda m: order.get(m, 1 << 30))
        i = members.index(first)
        members = members[i:] + members[:i]
        steps, evidence = [], []
        for a, b in zip(members, members[1:] + members[:1]):
            e = next(x for x in c.edges if x.waiter == a and x.on == b)
            steps.append(f"{c.who(a)} waits for {e.relation} {c.name(b)} ({e.point})")
            evidence += [Evidence(ev.source, f"{c.name(a)} waits for {c.name(b)}: {ev.text}")
                         for ev in e.evidence]
        c.add("cycle", first, "a wait-for cycle: " + ", ".join(steps)
              + "; none of them can move first",
              evidence, [f"tractor-diag stacks {' '.join(map(str, members))}",
                         f"cancelling any one member breaks it, e.g. kill -INT {members[-1]}"])
        c.cycles.append((c.verdicts[-1], members))


def _stale_sockets(c: _Ctx, scan) -> None:
    mine, c.stale_elsewhere = stale_sockets(scan, c.snap)
    c.verdicts += mine


def stale_sockets(scan, snap: Snapshot) -> tuple[list[Verdict], int]:
    """(a verdict per socket file of a bindspace scan whose binder is gone
    and that belongs to ``snap``'s trees, how many others are stale). The
    dir is shared by every run of the user: another run's leftovers are
    not this tree's fault, and listing them under every tree buries its own."""
    out: list[Verdict] = []
    others = 0
    uids = {e.proc.uid for e in snap.entries.values()}
    since = min((e.proc.create_time for e in snap.entries.values()), default=0.0)
    names = {e.proc.actor.name for e in snap.entries.values()
             if e.proc.actor is not None and e.proc.actor.name}
    for e in getattr(scan, "entries", ()):
        if e.status != "orphaned-dead":
            continue
        if not _stale_of(e, snap, uids, since, names):
            others += 1
            continue
        out.append(Verdict(
            kind="stale-socket", pid=e.pid or 0, name=e.name,
            text=f"stale socket file {e.name} in {scan.dir}: its binder "
                 f"{e.pid if e.pid is not None else '?'} is gone; the next runtime that binds "
                 "that name fails with 'Address already in use'",
            evidence=[Evidence("bindspace", e.note or "binder dead")],
            hints=["tractor-diag reap --uds --dry-run"]))
    return out, others


def _stale_of(e, snap: Snapshot, uids: set[int], since: float, names: set[str]) -> bool:
    """Does a stale socket file belong to the trees of ``snap``: bound by
    one of its processes (a zombie's file, the pid not reused since), or,
    by its owner, in their lifetime, under the name of one of their actors
    or the registry's."""
    member = snap.entries.get(e.pid) if e.pid is not None else None
    if member is not None:
        return member.proc.create_time <= e.mtime + 1.0
    if e.uid not in uids or e.mtime + 1.0 < since:
        return False
    return e.kind == "registry" or (e.actor is not None and e.actor in names)


def _port_holders(c: _Ctx) -> None:
    """An orphan, a stray, or a root with no actors of its own (a registrar
    left from an earlier run) listening on a registry address: the next
    root cannot bind it. A root actor is never an orphan (a re-parented
    root is still a root), and a given root is never a stray: a registrar
    alone is the shape a leftover one has."""
    g = c.ipc
    if g is None:
        return
    from ..sockmodel import listener_matches

    for pid, listeners in g.listeners.items():
        entry = c.snap.entries.get(pid)
        if entry is None:
            continue
        actor = entry.proc.actor
        # listening on a registry address is what makes it a registrar,
        # whether or not its command line or bindspace says "actor"
        alone = ((pid in c.snap.roots or (actor is not None and actor.role == "root"))
                 and not any(c.snap.entries[k].proc.state not in ("Z", "X")
                             for k in c.children(pid)))
        if entry.bucket not in ("orphan", "stray") and not alone:
            continue
        for lst in listeners:
            spec = next((r for r in g.registry if listener_matches(lst, r)), None)
            if spec is None:
                continue
            what = ("an orphan" if entry.bucket == "orphan" else
                    "left from an earlier run" if entry.bucket == "stray" else
                    "a registrar with no actors of its own")
            c.add("port-holder", pid,
                  f"{c.who(pid)} ({what}) holds the registry address {lst.addr}: a new root "
                  "that wants to be the registrar there cannot bind it",
                  [Evidence("ipc", f"listening on {lst.addr} (inode {lst.inode})"),
                   Evidence("tree", f"{entry.bucket}: {entry.note or 'outside the given roots'}"
                            if entry.bucket != "live" else "a root actor with no live children")],
                  [f"tractor-diag ptree --port {lst.port or lst.addr}",
                   f"tractor-diag reap --dry-run"])
            break


def _rank(v: Verdict) -> int:
    return _PRIORITY.index(v.kind) if v.kind in _PRIORITY else len(_PRIORITY)


def _chains(c: _Ctx) -> list[Chain]:
    """One chain per process that cannot move (a blocking verdict and no
    wait of its own on another such process): the waiters above it, top
    first, and below it the process it waits for, when that one has a
    property worth knowing (it ignores SIGINT, say). A cycle is one chain:
    the waiters above it, then its members, the one it is entered by
    first; nothing in it is a bottom."""
    by_pid: dict[int, list[Verdict]] = {}
    in_cycle = {pid for _, members in c.cycles for pid in members}
    for v in c.verdicts:
        if v.kind not in ATTRIBUTES and v.kind != "cycle":
            by_pid.setdefault(v.pid, []).append(v)
    succ: dict[int, list[int]] = {}
    pred: dict[int, list[int]] = {}
    for e in c.edges:
        succ.setdefault(e.waiter, []).append(e.on)
        pred.setdefault(e.on, []).append(e.waiter)

    def leads_to_verdict(pid: int) -> bool:
        seen, stack = {pid}, list(succ.get(pid, ()))
        while stack:
            n = stack.pop()
            if n in seen:
                continue
            seen.add(n)
            if n in by_pid:
                return True
            stack.extend(succ.get(n, ()))
        return False

    def leads_to_cycle(pid: int) -> bool:
        seen, stack = {pid}, list(succ.get(pid, ()))
        while stack:
            n = stack.pop()
            if n in in_cycle:
                return True
            if n not in seen:
                seen.add(n)
                stack.extend(succ.get(n, ()))
        return False

    def above(pid: int, path: list[int]) -> list[int]:
        node = pid
        while True:
            up = [w for w in pred.get(node, ()) if w not in path]
            if not up:
                return path
            node = up[0]
            path.insert(0, node)

    chains = [Chain(pids=above(members[0], list(members)), cause=v) for v, members in c.cycles]
    for pid, vs in by_pid.items():
        # a member of a cycle waits in it: the cycle's chain says so
        if pid in in_cycle or (leads_to_verdict(pid) or leads_to_cycle(pid)):
            continue
        path = above(pid, [pid])
        sync = [e.on for e in c.edges if e.waiter == pid and e.on not in path
                and any(p.sync and p.label == e.point for p in (*waitpoints.WAIT_POINTS, _OS_WAITPID))]
        down = sync or [n for n in succ.get(pid, ()) if n not in path]
        if len(down) == 1:
            path.append(down[0])
        cause = min(vs, key=_rank)
        if cause.kind == "zombie":
            # a child that died at boot: its being unreaped follows from the
            # parent still waiting for it to connect, which is the hang
            boot = next((v for v in c.verdicts if v.kind == "boot-hang" and v.pid in path
                         and any(e.waiter == v.pid and e.on == pid for e in c.edges)), None)
            cause = boot or cause
        chains.append(Chain(pids=path, cause=cause))
    order = {e.proc.pid: i for i, e in enumerate(c.snap.ordered())}
    chains.sort(key=lambda ch: (_rank(ch.cause), order.get(ch.cause.pid, 1 << 30)))
    return chains


def diagnose(
    snap: Snapshot,
    report: StacksReport,
    before: dict[int, KernelSample],
    after: dict[int, KernelSample] | None = None,
    *,
    bindspace=None,
    ipc=None,
    hints: dict[int, str] | None = None,
    now: float | None = None,
    later: dict[int, KernelSample] | None = None,
) -> Diagnosis:
    """Edges, verdicts and chains for the processes of ``snap``.

    ``before`` is read before the capture (it holds what the capture would
    disturb: when each process last ran, its tracer) and ``after`` after it;
    the runaway rule needs both, a window of at least 0.2 s between them.
    ``later``: processes in a sync call that ran just before the capture,
    read again a while after it (did they run on their own since?); None
    when there was no time to (a sync call is then judged from the
    capture alone).
    """
    started = time.monotonic()
    now = time.monotonic() if now is None else now
    c = _Ctx(snap, report, before, after or {}, now, ipc)
    # None: not looked at again (a deadline), judged from the capture alone
    c.later = later
    for pid, why in (hints or {}).items():
        if pid in snap.entries:
            c.add("reported", pid, f"{c.who(pid)}: {why}", [Evidence("caller", why)])
    for entry in snap.ordered():
        _kernel_verdicts(c, entry.proc.pid, entry)
    for ps in report.procs:
        if ps.pid in snap.entries:
            _python_verdicts(c, ps.pid, ps)
            _task_verdicts(c, ps.pid, ps)
            _edges(c, ps.pid, ps)
    _edge_verdicts(c)
    _cycles(c)
    _port_holders(c)
    if bindspace is not None:
        _stale_sockets(c, bindspace)
    if not any(p.tasks.status == "collected" for p in report.procs) and report.procs:
        c.notes.append("no process had a task dumper armed: waits inside trio tasks are not "
                       "visible (run the program under `tractor-diag run -- CMD`, which arms "
                       "tractor_diag.taskdump in every Python process of the tree)")
    if after:
        windows = [after[p].at - before[p].at for p in after if p in before]
        window = min(windows) if windows else 0.0
    else:
        window = 0.0
        c.notes.append("one kernel sample only: runaways not judged")
    c.verdicts.sort(key=lambda v: (_rank(v), v.pid))
    return Diagnosis(
        taken_at=time.time(), roots=list(snap.roots),
        names={pid: c.name(pid) for pid in snap.entries},
        edges=c.edges, verdicts=c.verdicts, chains=_chains(c), window=window,
        notes=c.notes, elapsed=time.monotonic() - started, ipc=ipc,
        stale_elsewhere=c.stale_elsewhere,
    )


def stuck_reasons(diag: Diagnosis) -> dict[int, str]:
    """pid -> the one-line reason, for every process with a verdict."""
    out: dict[int, str] = {}
    for v in sorted(diag.verdicts, key=_rank):
        if v.kind not in ("ignores-signals", "stale-socket", "port-holder"):
            out.setdefault(v.pid, v.text)
    return out




__all__ = ["diagnose", "stale_sockets", "stuck_reasons", "sync_call"]
