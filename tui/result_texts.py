"""What the keys' results look like in the detail pane, as `rich.text.Text`.

Pure functions of the library's values (a `PyStack`, a `TaskTree`, a reap
`Plan` and its fates, a bundle's `BundleMeta`, a `Diagnosis`): no process
is read here, so the snapshot tests and the jobs that fetch the values
share them. They are the dashboard's own (styled spans, not the text
renderers' lines), so they live with it; every field a process chose is
escaped here, and the detail pane escapes again where it shows them.
"""
from __future__ import annotations

import os

from rich.text import Text

from tractor_diag.safetext import escape, escaped


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


def describe_plan(plan) -> Text:
    """A reap `Plan` as the confirmation dialog shows it: what will be
    signalled, indented by depth, then what is left alone and why."""
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


def describe_fates(fates) -> Text:
    """How each reaped process ended, a line each."""
    body = Text()
    for fate in fates:
        style = {"exited": "green", "killed": "yellow"}.get(fate.fate, "red")
        body.append(f"  {fate.pid:>7} {escape(fate.title)[:40]}  ", "")
        body.append(fate.fate, style)
        if fate.detail:
            body.append(f" ({escape(fate.detail)})", "dim")
        body.append("\n")
    return body


def describe_bundle(meta) -> Text:
    """Where a snapshot bundle went and what it holds (`BundleMeta`)."""
    body = Text()
    body.append(f"{escape(meta.path)}\n", "bold green")
    body.append(f"{len(meta.pids)} process(es), {len(meta.stuck)} look stuck, "
                f"{meta.duration:.1f}s; read summary.md first\n")
    for missing in meta.missing[:10]:
        where = f" (pid {missing.pid})" if missing.pid is not None else ""
        body.append(f"  missing {missing.what}{where}: {escape(missing.why)}\n", "dim")
    return body


def describe_why(diag, pid: int) -> tuple[Text, str]:
    """A `Diagnosis` for the tree at ``pid``: the body (the chains the
    selected process is in first, as `why` prints them) and a headline (the
    first cause). Reorders ``diag.chains`` in place."""
    from tractor_diag.render import Style
    from tractor_diag.render.why import render_why

    mine = [c for c in diag.chains if pid in c.pids] + [c for c in diag.chains if pid not in c.pids]
    diag.chains = mine
    body = Text(render_why(diag, Style(False)) + "\n")
    head = (f"{diag.chains[0].cause.kind}: {diag.chains[0].cause.text}" if diag.chains
            else f"no verdict for the tree at {pid}")
    return body, head
