"""The jobs behind the dashboard's keys (s, t, w, d, r, k), as trio functions.

Every one of them reaches into processes (py-spy, signals, /proc, files),
so each runs its blocking part in `trio.to_thread.run_sync`, bounded in
time. A job takes plain values and returns a message (`ActionDone`, or
`ReapPlanned` for a plan to confirm); the app posts it and its handlers
apply it. A job never touches the app: that is what lets the app import
the jobs without the jobs importing the app.
"""
from __future__ import annotations

import signal
import time

from rich.text import Text

from tractor_diag import procfs
from tractor_diag.safetext import escape

from .labels import stamp
from .messages import ActionDone, ReapPlanned, RootGone, Unchanged
from .result_texts import (describe_bundle, describe_fates, describe_plan, describe_why,
                           render_py_stack, render_task_tree)
from .safe import safe_block
from .waits import judge_chains

STACK_TIMEOUT = 5.0
TASK_TIMEOUT = 3.0
DUMP_DEADLINE = 60.0
WHY_DEADLINE = 20.0


def done(section: str, pid: int, title: str, body: Text, summary: str,
         ok: bool = True, bundle: str | None = None, **more) -> ActionDone:
    # Bodies escape their fields line by line; this is the backstop (and the
    # summary goes to a toast and the events pane as one line).
    return ActionDone(section, pid, escape(title), safe_block(body), escape(summary), ok,
                      bundle=bundle, **more)


def _failed(section: str, pid: int, title: str, what: str, exc: BaseException) -> ActionDone:
    reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return done(section, pid, title, Text(f"{what} failed: {reason}", "red"),
                f"{what} of {pid} failed: {reason}", ok=False)


def _replaced(pid: int, create_time: float | None, proc=None) -> bool:
    """``pid`` (``proc``, when read already) is now another process than
    the row showed, started at ``create_time``. A paused dashboard keeps a
    row long after its process may have gone and its pid been taken: a key
    acts on the process shown or on nobody."""
    if create_time is None:
        return False
    if proc is not None:
        ticks = procfs.ticks_of(proc.create_time)
    else:
        st = procfs.read_stat(pid)
        if st is None:
            return False  # gone: nobody else's
        ticks = st.start_ticks
    return ticks != procfs.ticks_of(create_time)


async def in_thread(fn, *args):
    """``fn(*args)`` in a worker thread. trio is imported here, by the first
    job: the dashboard shows its first frame before it imports trio."""
    import trio

    return await trio.to_thread.run_sync(fn, *args)


REPLACED = "its pid now belongs to another process than the one shown"


async def stacks(pid: int, create_time: float | None = None) -> ActionDone:
    """py-spy of ``pid``; ``create_time``: the row's, checked before the
    dump and after it (what py-spy read may be a newcomer's)."""
    title = f"Python stacks (py-spy, {stamp()})"
    try:
        from tractor_diag import pyspy
        from tractor_diag.stackmodel import PyStack

        def dump():
            if not _replaced(pid, create_time):
                py = pyspy.dump_python(pid, py_spy=pyspy.find_py_spy(), timeout=STACK_TIMEOUT)
                if py.status != "ok" or not _replaced(pid, create_time):
                    return py
            return PyStack(status="gone", reason=f"{REPLACED}: its stack is not shown")

        py = await in_thread(dump)
    except Exception as exc:  # noqa: BLE001 - shown to the user, never raised into the UI
        return _failed("stacks", pid, title, "py-spy dump", exc)
    ok = py.status == "ok"
    summary = (f"stacks of {pid}: {len(py.threads)} thread(s)" if ok
               else f"no Python stack for {pid}: {py.reason or py.status}")
    return done("stacks", pid, title, render_py_stack(py), summary, ok)


async def task_tree(pid: int, create_time: float | None = None) -> ActionDone:
    title = f"trio task tree (SIGUSR1, {stamp()})"
    try:
        from tractor_diag import tasks as taskmod
        from tractor_diag.stackmodel import TaskTree

        def request():
            proc = procfs.read_proc(pid)
            if proc is None:
                return None
            # the request pins the process read here: the one the row showed
            if _replaced(pid, create_time, proc):
                return TaskTree(status="gone", reason=f"{REPLACED}: not signalled")
            req = taskmod.request(proc)
            if not isinstance(req, taskmod.Pending):
                return req
            return taskmod.collect([req], until=time.monotonic() + TASK_TIMEOUT)[pid]

        tree = await in_thread(request)
    except Exception as exc:  # noqa: BLE001
        return _failed("tasks", pid, title, "task-tree request", exc)
    if tree is None:
        return done("tasks", pid, title, Text("process gone", "yellow"),
                    f"no task tree for {pid}: process gone", ok=False)
    ok = tree.status == "collected"
    summary = (f"task tree of {pid}: {len(tree.tasks) or 'some'} task(s)" if ok
               else f"no task tree for {pid}: {tree.reason or tree.status}")
    return done("tasks", pid, title, render_task_tree(tree), summary, ok)


async def send_signal(pid: int, create_time: float, signum: int, *,
                      cmdline: list[str] | None = None) -> ActionDone:
    """``signum`` to the process the dialog named: ``create_time`` (and
    ``cmdline``, when given) as shown there."""
    name = signal.Signals(signum).name
    title = f"signal ({stamp()})"

    def send() -> str | None:
        from tractor_diag.errors import Unsupported
        from tractor_diag.pinning import Gone, Pin, PinError, Replaced

        # The process the user looked at, pinned: a pid reused since is
        # another process and gets nothing, and so is a program it exec'd
        # into while the dialog was open (same pid, same start time).
        try:
            pin = Pin.open(pid, start_time=create_time, cmdline=cmdline or None)
        except Gone:
            return "process gone: not signalled"
        except Replaced as exc:
            if "command line" in str(exc):
                return ("its command line changed since it was shown (it exec'd another "
                        "program, or retitled itself): not signalled")
            return "its pid now belongs to another process: not signalled"
        except (PinError, Unsupported) as exc:
            return f"not signalled: {exc}"
        with pin:
            if signum == signal.SIGUSR1:
                proc = pin.proc()
                if proc is None or not proc.handles_signal(signal.SIGUSR1):
                    return "no SIGUSR1 handler: not signalled (it would die)"
            try:
                if not pin.send(signum):
                    return "process gone"
            except PinError as exc:
                return str(exc)
        return None

    err = await in_thread(send)
    if err is None:
        return done("signal", pid, title, Text(f"sent {name}", "green"), f"sent {name} to {pid}")
    return done("signal", pid, title, Text(f"{name}: {err}", "yellow"),
                f"{name} to {pid}: {err}", ok=False)


async def dump_all(pid: int, *, out_dir: str | None, history_snaps: list,
                   history_events: list, create_time: float | None = None) -> ActionDone:
    """`dump-all` of the tree at ``pid``, with the sampler's recent history
    (taken by the caller: the sampler lives on); ``create_time``: the
    row's (the bundle traces and signals the tree at that pid)."""
    title = f"dump-all ({stamp()})"

    def write():
        from tractor_diag.errors import NotFound
        from tractor_diag.trees import snapshot_for
        from tractor_diag.bundle import History, write_bundle

        snap = snapshot_for([str(pid)], strays=False)
        root = snap.entries.get(pid)
        if root is not None and _replaced(pid, create_time, root.proc):
            raise NotFound(f"{REPLACED}: nothing dumped")
        if history_snaps:  # a zombie keeps the name the sampler saw it alive with
            from tractor_diag.trees import remember_names

            remember_names(snap.entries, history_snaps[-1])
        history = History(snapshots=history_snaps, events=history_events) if history_snaps else None
        return write_bundle(snap, label=f"dash-{pid}", out_dir=out_dir, history=history,
                            targets=[str(pid)], deadline=time.monotonic() + DUMP_DEADLINE)

    try:
        meta = await in_thread(write)
    except Exception as exc:  # noqa: BLE001
        return _failed("dump", pid, title, "dump-all", exc)
    return done("dump", pid, title, describe_bundle(meta),
                f"snapshot bundle written: {meta.path}", bundle=meta.path)


async def why(pid: int, seen, quiet: bool = False, create_time: float | None = None,
              ) -> ActionDone:
    """The verdicts of the tree at ``pid`` (`tractor-diag why`); ``seen``:
    the sampler's latest snapshot, for the names of zombies; ``quiet``: a
    refresh of the waits-on marks (no notice); ``create_time``: the row's
    (its capture signals and traces the tree at that pid)."""
    title = f"why ({stamp()})"

    def run():
        from tractor_diag import kstate
        from tractor_diag.errors import NotFound
        from tractor_diag.trees import snapshot_for
        from tractor_diag.diagnosis import examine

        snap = snapshot_for([str(pid)], strays=False)
        root = snap.entries.get(pid)
        if root is not None and _replaced(pid, create_time, root.proc):
            raise NotFound(f"{REPLACED}: nothing judged")
        if seen is not None:  # a zombie keeps the name the sampler saw it alive with
            from tractor_diag.trees import remember_names

            remember_names(snap.entries, seen)
        before = {p: kstate.activity(p) for p in snap.entries}
        diag = examine(snap, deadline=time.monotonic() + WHY_DEADLINE)[1]
        chains = judge_chains(diag, snap, pid)
        # What the chains' processes look like now, to tell later that none
        # of them ran since (`rejudge`). Only when the capture found each
        # where it left it: one that moved meanwhile may have left what was
        # judged, and is judged again at the next refresh.
        after = {p: kstate.activity(p) for c in chains for p in c.pids}
        evidence = after if all(kstate.same_waits(before.get(p), a)
                                for p, a in after.items()) else None
        born = root.proc.create_time if root is not None else None
        return diag, chains, frozenset(snap.entries), evidence, born

    try:
        diag, chains, over, evidence, born = await in_thread(run)
    except Exception as exc:  # noqa: BLE001
        failed = _failed("why", pid, title, "why", exc)
        failed.quiet = quiet
        return failed
    body, head = describe_why(diag, pid)
    return done("why", pid, title, body, head, ok=True, judged=chains, judged_over=over,
                quiet=quiet, evidence=evidence, born=born)


def _root_lost(pid: int, born: float | None) -> str | None:
    """Why the process at ``pid`` is not the one judged, started at
    ``born``, any more (None: it is)."""
    if born is None:
        return "its start time was not known"
    st = procfs.read_stat(pid)
    if st is None:
        return "exited"
    if st.start_ticks != procfs.ticks_of(born):
        return "exited, and its pid now belongs to another process"
    return None


async def rejudge(pid: int, seen, evidence: dict | None,
                  born: float | None) -> ActionDone | Unchanged | RootGone:
    """The quiet refresh of the tree at ``pid``'s chains: none when no
    process of them ran since ``evidence`` was read (`kstate.activity`:
    what was judged is still what is there, and py-spy is not run on the
    whole tree for nothing), else a quiet `why`. ``born``: the start time
    of the root judged. The root need not be in a chain, so nothing else
    watches it: once it is gone its pid may be anybody's, and a why there
    would trace and signal a tree nobody pointed at."""
    lost = await in_thread(_root_lost, pid, born)
    if lost is not None:
        return RootGone(pid, lost)
    if evidence:
        from tractor_diag import kstate

        def still() -> bool:
            return all(kstate.idle_since(was, kstate.activity(p)) for p, was in evidence.items())

        if await in_thread(still):
            return Unchanged(pid)
    # pinned again in the why itself: the root may go between here and there
    return await why(pid, seen, quiet=True, create_time=born)


async def plan_reap(pid: int, create_time: float | None = None) -> ActionDone | ReapPlanned:
    """The reaper's dry-run plan for ``pid`` and the actors below it, under
    its own rules (same user, actors only, never us or our ancestors),
    pinned; the app asks before `reap` executes it. ``create_time``: the
    selected process's, so a newcomer that took its pid is not planned
    under the old row."""
    from tractor_diag import procfs
    from tractor_diag.errors import NotFound
    from tractor_diag.reap import make_plan

    def plan():
        procs = procfs.scan()
        now = procs.get(pid)
        if (create_time is not None and now is not None
                and procfs.ticks_of(now.create_time) != procfs.ticks_of(create_time)):
            raise NotFound(f"pid {pid} now belongs to another process than the one "
                           "selected: nothing planned")
        return make_plan(subtree=pid, procs=procs)

    try:
        plan = await in_thread(plan)
    except Exception as exc:  # noqa: BLE001
        return _failed("reap", pid, f"reap ({stamp()})", "reap plan", exc)
    if not plan.targets:
        plan.release()
        return done("reap", pid, f"reap ({stamp()})", describe_plan(plan),
                    f"nothing to reap under {pid} (only actors of your user are reaped)", ok=False)
    return ReapPlanned(pid, describe_plan(plan), plan)


async def reap(pid: int, plan, grace: float) -> ActionDone:
    from tractor_diag.reap import execute
    from tractor_diag.render.reap import fates_summary

    title = f"reap ({stamp()})"
    try:
        outcome = await in_thread(lambda: execute(plan, grace=grace))
    except Exception as exc:  # noqa: BLE001
        return _failed("reap", pid, title, "reap", exc)
    summary = f"reaped the subtree at {pid}: {fates_summary(outcome.fates)}"
    ok = not any(f.fate in ("survived", "error") for f in outcome.fates)
    return done("reap", pid, title, describe_fates(outcome.fates), summary, ok)
