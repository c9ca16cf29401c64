"""What the dashboard's keys do, as trio tasks run in the guest.

Every one of them reaches into processes (py-spy, signals, /proc, files), so
each runs its blocking part in `trio.to_thread.run_sync`, bounded in time,
and reports back with one `DashApp.ActionDone` message: the result lands in
the detail pane of the process it concerns and as a one-line notice.
"""
from __future__ import annotations

import os
import signal
import time
from typing import TYPE_CHECKING

import trio
from rich.text import Text

from tractor_diag import procfs
from tractor_diag.safetext import escape, escaped

from .detail import stamp
from .safe import safe_block

if TYPE_CHECKING:
    from .app import DashApp

STACK_TIMEOUT = 5.0
TASK_TIMEOUT = 3.0


def _done(app: "DashApp", section: str, pid: int, title: str, body: Text,
          summary: str, ok: bool = True) -> None:
    # Bodies escape their fields line by line; this is the backstop (and the
    # summary goes to a toast and the events pane as one line).
    app.post_message(app.ActionDone(section, pid, escape(title), safe_block(body),
                                    escape(summary), ok))


def _failed(app: "DashApp", section: str, pid: int, title: str, what: str, exc: BaseException) -> None:
    reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    _done(app, section, pid, title, Text(f"{what} failed: {reason}", "red"),
          f"{what} of {pid} failed: {reason}", ok=False)


# -- Python stacks -------------------------------------------------------------

def render_py_stack(py) -> Text:
    """A `PyStack` as text: each thread, frames outermost first."""
    py = escaped(py)
    text = Text()
    if py.status != "ok":
        text.append(f"no Python stack: {py.reason or py.status}\n", "yellow")
        return text
    if py.reason:
        text.append(f"({py.reason})\n", "dim")
    for thread in py.threads:
        head = f"thread {thread.os_thread_id or thread.thread_id}"
        if thread.name:
            head += f" '{thread.name}'"
        flags = [f for f, on in (("active", thread.active), ("holds GIL", thread.owns_gil)) if on]
        if flags:
            head += f" ({', '.join(flags)})"
        text.append(head + "\n", "bold")
        for frame in thread.frames:
            text.append(f"  {frame.name}", "green" if not frame.native else "dim")
            text.append(f"  {frame.short or frame.filename}:{frame.line}\n", "dim")
            for local in frame.locals or ():
                text.append(f"      {local.name} = {local.repr}\n", "dim")
    return text


async def stacks(app: "DashApp", pid: int) -> None:
    title = f"Python stacks (py-spy, {stamp()})"
    try:
        from tractor_diag import stacks as stackmod

        def dump():
            return stackmod.dump_python(pid, py_spy=stackmod.find_py_spy(), timeout=STACK_TIMEOUT)

        py = await trio.to_thread.run_sync(dump)
    except Exception as exc:  # noqa: BLE001 - shown to the user, never raised into the UI
        _failed(app, "stacks", pid, title, "py-spy dump", exc)
        return
    ok = py.status == "ok"
    summary = (f"stacks of {pid}: {len(py.threads)} thread(s)" if ok
               else f"no Python stack for {pid}: {py.reason or py.status}")
    _done(app, "stacks", pid, title, render_py_stack(py), summary, ok)


# -- trio task tree ------------------------------------------------------------

async def task_tree(app: "DashApp", pid: int) -> None:
    title = f"trio task tree (SIGUSR1, {stamp()})"
    try:
        from tractor_diag import tasks as taskmod

        def request():
            proc = procfs.read_proc(pid)
            if proc is None:
                return None
            req = taskmod.request(proc)
            if not isinstance(req, taskmod.Pending):
                return req
            return taskmod.collect([req], until=time.monotonic() + TASK_TIMEOUT)[pid]

        tree = await trio.to_thread.run_sync(request)
    except Exception as exc:  # noqa: BLE001
        _failed(app, "tasks", pid, title, "task-tree request", exc)
        return
    if tree is None:
        _done(app, "tasks", pid, title, Text("process gone", "yellow"),
              f"no task tree for {pid}: process gone", ok=False)
        return
    body = render_task_tree(tree)
    ok = tree.status == "collected"
    summary = (f"task tree of {pid}: {len(tree.tasks) or 'some'} task(s)" if ok
               else f"no task tree for {pid}: {tree.reason or tree.status}")
    _done(app, "tasks", pid, title, body, summary, ok)


def render_task_tree(tree) -> Text:
    """A collected `TaskTree`, compact: one line per task, indented by
    nesting, with where it waits (the user's frame, and what it called)."""
    tree = escaped(tree)
    text = Text()
    if tree.reason:
        text.append(f"({tree.reason})\n",
                    "dim" if tree.status == "collected" and not tree.empty else "yellow")
    if tree.note:
        text.append(f"(note: {tree.note})\n", "yellow")
    if tree.tasks:
        try:
            from tractor_diag.diagnosis.where import await_point
        except ImportError:
            await_point = None
        for task in tree.tasks:
            text.append("  " * task.depth)
            text.append(task.name, "bold" if task.state == "running" else "")
            text.append(f" [{task.state}]", "magenta" if task.state == "running" else "dim")
            if task.cancelling:
                text.append(" cancelling", "bold red")
            user = callee = None
            if await_point is not None and task.frames:
                user, callee = await_point(task.frames)
            elif task.frames:
                user = task.frames[-1]
            if user is not None:
                text.append(f"  {os.path.basename(user.filename)}:{user.line} {user.name}", "green")
            if callee is not None:
                text.append(f" -> {callee.name}", "dim")
            text.append("\n")
    elif tree.text:
        text.append(tree.text.rstrip("\n") + "\n")
    if tree.path:
        text.append(f"full dump: {tree.path}\n", "dim")
    return text


# -- signals -------------------------------------------------------------------

async def send_signal(app: "DashApp", pid: int, create_time: float, signum: int) -> None:
    name = signal.Signals(signum).name
    title = f"signal ({stamp()})"

    def send() -> str | None:
        from tractor_diag.errors import Unsupported
        from tractor_diag.pinning import Gone, Pin, PinError, Replaced

        # The process the user looked at, pinned: a pid reused since is
        # another process and gets nothing.
        try:
            pin = Pin.open(pid, start_time=create_time)
        except Gone:
            return "process gone: not signalled"
        except Replaced:
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

    err = await trio.to_thread.run_sync(send)
    if err is None:
        _done(app, "signal", pid, title, Text(f"sent {name}", "green"), f"sent {name} to {pid}")
    else:
        _done(app, "signal", pid, title, Text(f"{name}: {err}", "yellow"),
              f"{name} to {pid}: {err}", ok=False)


# -- snapshot bundle -------------------------------------------------------------

DUMP_DEADLINE = 60.0
HISTORY_SNAPSHOTS = 30


async def dump_all(app: "DashApp", pid: int) -> None:
    """`dump-all` of the tree at ``pid``, with the sampler's recent history."""
    title = f"dump-all ({stamp()})"
    history_snaps = list(app.sampler.history)[-HISTORY_SNAPSHOTS:]
    history_events = list(app.sampler.events)

    def write():
        from tractor_diag.trees import snapshot_for
        from tractor_diag.bundle import History, write_bundle

        snap = snapshot_for([str(pid)], strays=False)
        if history_snaps:  # a zombie keeps the name the sampler saw it alive with
            from tractor_diag.trees import remember_names

            remember_names(snap.entries, history_snaps[-1])
        history = History(snapshots=history_snaps, events=history_events) if history_snaps else None
        return write_bundle(snap, label=f"dash-{pid}", out_dir=app.dump_root, history=history,
                            targets=[str(pid)], deadline=time.monotonic() + DUMP_DEADLINE)

    try:
        meta = await trio.to_thread.run_sync(write)
    except Exception as exc:  # noqa: BLE001
        _failed(app, "dump", pid, title, "dump-all", exc)
        return
    app.last_bundle = meta.path
    body = Text()
    body.append(f"{escape(meta.path)}\n", "bold green")
    body.append(f"{len(meta.pids)} process(es), {len(meta.stuck)} look stuck, "
                f"{meta.duration:.1f}s; read summary.md first\n")
    for missing in meta.missing[:10]:
        where = f" (pid {missing.pid})" if missing.pid is not None else ""
        body.append(f"  missing {missing.what}{where}: {escape(missing.why)}\n", "dim")
    _done(app, "dump", pid, title, body, f"snapshot bundle written: {meta.path}")


# -- why ---------------------------------------------------------------------------

WHY_DEADLINE = 20.0


async def why(app: "DashApp", pid: int) -> None:
    """The verdicts of the tree at ``pid`` (`tractor-diag why`): the chains
    the selected process is in first; the headline is the first cause."""
    title = f"why ({stamp()})"
    seen = app.sampler.latest

    def run():
        from tractor_diag.trees import snapshot_for
        from tractor_diag.diagnosis import examine

        snap = snapshot_for([str(pid)], strays=False)
        if seen is not None:  # a zombie keeps the name the sampler saw it alive with
            from tractor_diag.trees import remember_names

            remember_names(snap.entries, seen)
        return examine(snap, deadline=time.monotonic() + WHY_DEADLINE)[1]

    try:
        diag = await trio.to_thread.run_sync(run)
    except Exception as exc:  # noqa: BLE001
        _failed(app, "why", pid, title, "why", exc)
        return
    from tractor_diag.render import Style
    from tractor_diag.render.why import render_why

    mine = [c for c in diag.chains if pid in c.pids] + [c for c in diag.chains if pid not in c.pids]
    diag.chains = mine
    body = Text(render_why(diag, Style(False)) + "\n")
    head = (f"{diag.chains[0].cause.kind}: {diag.chains[0].cause.text}" if diag.chains
            else f"no verdict for the tree at {pid}")
    _done(app, "why", pid, title, body, head, ok=True)


# -- reaping ---------------------------------------------------------------------

def _subtree_plan(pid: int):
    """The safe reaper's plan for ``pid`` and everything below it.

    The reaper plans *below* a given parent; asking it for the selected
    process's parent and keeping only the selected subtree lets the selected
    process itself be a target, under the reaper's own rules (same user,
    actors only, never us or our ancestors).
    """
    from tractor_diag.errors import NotFound
    from tractor_diag.reap import make_plan
    from tractor_diag.trees import children_map, descendants

    procs = procfs.scan()
    proc = procs.get(pid)
    if proc is None or proc.state in ("Z", "X"):
        raise NotFound(f"pid {pid} is gone (or a zombie): nothing to reap")
    plan = make_plan(parent=proc.ppid, procs=procs)
    keep = set(descendants(children_map(procs), [pid]))
    plan.targets = [t for t in plan.targets if t.pid in keep]
    plan.skipped = [s for s in plan.skipped if s.pid in keep]
    plan.tops = [pid]
    return plan


def describe_plan(plan) -> Text:
    text = Text()
    if plan.targets:
        text.append("Will send SIGINT, wait the grace period, then SIGKILL survivors:\n", "bold")
        for t in plan.targets:
            text.append(f"  {'  ' * min(t.depth, 6)}{t.pid:>7} ", "cyan")
            text.append(f"{escape(t.actor or t.title)}\n")
    else:
        text.append("Nothing in this subtree may be reaped.\n", "yellow")
    if plan.skipped:
        text.append("Left alone:\n", "bold dim")
        for s in plan.skipped:
            text.append(f"  {s.pid:>7} {escape(s.title)[:50]}: {escape(s.reason)}\n", "dim")
    return text


async def plan_reap(app: "DashApp", pid: int) -> None:
    try:
        plan = await trio.to_thread.run_sync(_subtree_plan, pid)
    except Exception as exc:  # noqa: BLE001
        _failed(app, "reap", pid, f"reap ({stamp()})", "reap plan", exc)
        return
    if not plan.targets:
        _done(app, "reap", pid, f"reap ({stamp()})", describe_plan(plan),
              f"nothing to reap under {pid} (only actors of your user are reaped)", ok=False)
        return
    app.call_later(app.confirm_reap, pid, describe_plan(plan), plan)


async def reap(app: "DashApp", pid: int, plan) -> None:
    from tractor_diag.reap import execute

    title = f"reap ({stamp()})"
    try:
        outcome = await trio.to_thread.run_sync(lambda: execute(plan, grace=app.grace))
    except Exception as exc:  # noqa: BLE001
        _failed(app, "reap", pid, title, "reap", exc)
        return
    body = Text()
    for fate in outcome.fates:
        style = {"exited": "green", "killed": "yellow"}.get(fate.fate, "red")
        body.append(f"  {fate.pid:>7} {escape(fate.title)[:40]}  ", "")
        body.append(fate.fate, style)
        if fate.detail:
            body.append(f" ({escape(fate.detail)})", "dim")
        body.append("\n")
    from tractor_diag.render.reap import fates_summary

    summary = f"reaped the subtree at {pid}: {fates_summary(outcome.fates)}"
    ok = not any(f.fate in ("survived", "error") for f in outcome.fates)
    _done(app, "reap", pid, title, body, summary, ok)
