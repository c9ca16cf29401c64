"""``stacks`` as text: one compact block per process.

::

    4242 leaf_0_0 [actor]  live/blocked  wchan hrtimer_nanosleep  (ppid 4240)
      kernel: hrtimer_nanosleep < common_nsleep < __x64_sys_clock_nanosleep
      thread MainThread 4242 (idle), innermost last:
        at trio/_core/_run.py:2010 in run
        ...
        at released_tree.py:51 in _hang_leaf
      trio tasks (tractor-diag taskdump, 9 tasks):
        task '<init>' [root, waiting] ...
"""
from __future__ import annotations

from ..safetext import escaped
from ..stackmodel import ProcStacks, PyStack, StacksReport, TaskTree, Thread, Whereabouts
from . import BUCKET_STYLE, STATE_STYLE, Style

# Syscall entry plumbing says nothing about where a process waits.
_KERNEL_NOISE = ("entry_SYSCALL", "do_syscall_64", "__x64_sys_", "__do_sys_",
                 "syscall_exit", "ret_from_fork")
_KERNEL_SHOWN = 4
_REPR_WIDTH = 100


def _state(p: ProcStacks) -> str:
    if p.state == "exited" and p.exit_code is not None:
        from ..model import exit_status

        return f"exited:{exit_status(p.exit_code)}"
    return p.state


def header(p: ProcStacks, st: Style) -> str:
    name = f"{p.shown_actor} [actor]" if p.actor else st.clip(p.title, 60)
    bucket = st(p.bucket, BUCKET_STYLE.get(p.bucket, ""))
    state = st(_state(p), STATE_STYLE.get(p.state, ""))
    wchan = p.kernel.wchan or "-"
    return (f"{st(str(p.pid), 'bold')} {st(name, 'bold')}  {bucket}/{state}  "
            f"wchan {wchan}  (ppid {p.ppid}, kernel state {p.kernel.state})")


def kernel_line(p: ProcStacks) -> str:
    k = p.kernel
    if not k.stack:
        return f"kernel: ({k.stack_reason or 'no stack'})"
    useful = [s for s in k.stack if not s.startswith(_KERNEL_NOISE)] or k.stack
    more = f"  (+{len(useful) - _KERNEL_SHOWN} more)" if len(useful) > _KERNEL_SHOWN else ""
    return "kernel: " + " < ".join(useful[:_KERNEL_SHOWN]) + more


def thread_lines(t: Thread, st: Style, indent: str = "  ") -> list[str]:
    tid = t.os_thread_id if t.os_thread_id is not None else t.thread_id
    flags = ["active" if t.active else "idle"]
    if t.owns_gil:
        flags.append("holds GIL")
    out = [f"{indent}thread {t.name or '?'} {tid} ({', '.join(flags)}), innermost last:"]
    if not t.frames:
        out.append(f"{indent}  (no Python frames)")
    for f in t.frames:
        where = f"{f.short or f.filename}:{f.line}" if not f.native else (f.short or f.filename)
        text = f"{indent}  at {where} in {f.name}"
        out.append(st(text, "dim") if f.native else text)
        for v in f.locals or ():
            out.append(f"{indent}      {v.name} = {st.clip(v.repr or '?', _REPR_WIDTH)}")
    return out


def python_lines(py: PyStack, st: Style) -> list[str]:
    if py.status != "ok":
        return [st(f"  python: {py.status}: {py.reason or ''}".rstrip(": "), "yellow")]
    out: list[str] = []
    if py.via_sudo:
        out.append("  python (read through sudo):")
    prev: Thread | None = None
    for t in py.threads:
        if prev is not None and t.frames and t.frames == prev.frames and t.active == prev.active:
            # Pools of idle workers (trio's thread cache) repeat one stack.
            tid = t.os_thread_id if t.os_thread_id is not None else t.thread_id
            out.append(f"  thread {t.name or '?'} {tid}: same stack as above")
            continue
        out += thread_lines(t, st)
        prev = t
    return out


def _task_line(task, at: str, indent: str) -> str:
    state = f" [{task.state}]" if task.state else ""
    flags = f" {{{', '.join(task.scope_flags)}}}" if task.scope_flags else ""
    if task.cancelling:
        flags += " (cancel called above it)"
    if not task.frames:
        return f"{indent}{task.name}{state}{flags}"
    return f"{indent}{task.name}{state}{flags}  at {at}"


def task_lines(tree: TaskTree, where: Whereabouts, st: Style) -> list[str]:
    """Collected trees, one line per task: where it waits (its innermost user
    frame, then the innermost frame: ``where.tasks``). The full dump is in
    ``--json`` and in ``dump-all`` bundles."""
    if tree.status == "not-requested":
        return []
    if tree.status != "collected":
        out = [st(f"  trio tasks: {tree.status}: {tree.reason or ''}".rstrip(": "), "dim")]
        if tree.note:
            out.append(st(f"    (note: {tree.note})", "yellow"))
        return out
    if tree.empty:
        return [st(f"  trio tasks: empty stackscope dump: {tree.reason}", "yellow")] + (
            [st(f"    (note: {tree.note})", "yellow")] if tree.note else [])
    if tree.format == "tractor-diag" and tree.tasks:
        n = len(tree.tasks)
        out = [f"  trio tasks (tractor-diag taskdump, {n} task{'s' if n != 1 else ''}):"]
        out += [_task_line(t, at, "    " + "  " * t.depth)
                for t, at in zip(tree.tasks, where.tasks)]
    elif tree.format == "tractor-diag":
        # No trio run to walk: the dump's own one-line verdict says why (its
        # thread stacks repeat what py-spy showed).
        verdict = next((ln for ln in tree.text.splitlines() if ln.startswith("trio run:")),
                       "no trio tasks in the dump")
        out = [f"  trio tasks: {verdict.removeprefix('trio run: ')}"]
    else:
        out = ["  trio tasks (as the process's dump handler wrote them):"]
        out += ["    " + ln for ln in tree.text.splitlines()]
    if tree.reason:
        out.append(st(f"    ({tree.reason})", "yellow"))
    if tree.note:
        out.append(st(f"    (note: {tree.note})", "yellow"))
    return out


def render_proc(p: ProcStacks, where: Whereabouts, st: Style) -> str:
    """One process; ``where``: its `diagnosis.where.whereabouts`."""
    return _render_proc(escaped(p), escaped(where), st)


def _render_proc(p: ProcStacks, where: Whereabouts, st: Style) -> str:
    lines = [header(p, st), "  " + kernel_line(p)]
    lines += python_lines(p.python, st)
    lines += task_lines(p.tasks, where, st)
    return "\n".join(lines)


def render_report(report: StacksReport, wheres: dict[int, Whereabouts], st: Style,
                  no_py_spy: str = "") -> str:
    """All processes, then a footer. ``wheres``: each process's whereabouts
    by pid (`diagnosis.where.whereabouts_of`); ``no_py_spy``: why py-spy was
    not there (`pyspy.no_py_spy_reason`), said in the footer when it was not."""
    report, wheres = escaped(report), escaped(wheres)
    blocks = [_render_proc(p, wheres[p.pid], st) for p in report.procs]
    n = len(report.procs)
    ok = sum(p.python.status == "ok" for p in report.procs)
    trees = sum(p.tasks.status == "collected" for p in report.procs)
    foot = (f"{n} process{'es' if n != 1 else ''}: {ok} Python stack{'s' if ok != 1 else ''}, "
            f"{trees} task tree{'s' if trees != 1 else ''}, in {report.elapsed:.2f}s")
    if report.py_spy is None and no_py_spy:
        foot += f"; {no_py_spy}"
    return "\n\n".join([*blocks, st(foot, "dim")])
