"""Where a process waits: the user's frame under the runtime's, the thread
that matters, the trio task that most looks stuck.

Pure functions over the stacks a capture returned (`stackmodel`): no system
reads, so every rule is unit-testable on recorded frames.
"""
from __future__ import annotations

import re

from ..stackmodel import Frame, ProcStacks, PyStack, StacksReport, TaskTree, Thread, Whereabouts

# Frames of the event loop, the actor runtime, the test runner and the
# stdlib: the user's frame is the innermost one that is none of these.
_INTERNAL_PARTS = (
    "/trio/", "/tractor/", "/outcome/", "/exceptiongroup/", "/async_generator/",
    "/tricycle/", "/stackscope/", "/msgspec/", "/_pytest/", "/pluggy/",
    "/pytest/", "/tractor_diag/taskdump.py", "/tractor_diag/pytest_",
)
_STDLIB_RE = re.compile(r"/lib/python\d\.\d+t?/(?!site-packages/|dist-packages/)")


def is_internal(filename: str) -> bool:
    if filename.startswith("<frozen"):
        return True
    return any(p in filename for p in _INTERNAL_PARTS) or bool(_STDLIB_RE.search(filename))


def focus_thread(py: PyStack) -> Thread | None:
    """The thread to quote: one that is on a CPU, else the main thread."""
    if not py.threads:
        return None
    # Our own capture threads are busy in the process that captures itself
    # (the pytest helpers): they are not what the user waits on.
    busy = [t for t in py.threads if t.active and t.frames
            and not (t.name or "").startswith("tractor-diag")]
    if busy and not any(t.name == "MainThread" and t.active for t in busy):
        return busy[0]
    return next((t for t in py.threads if t.name == "MainThread"), py.threads[0])


def main_thread(py: PyStack, pid: int | None = None) -> Thread | None:
    """The thread group leader (its tid is the pid: the thread the kernel
    files of ``/proc/<pid>`` describe, and where trio runs), else the one
    named MainThread. A child that main_thread_forkserver forked from a
    worker thread has only that thread, under the worker's name."""
    if py.status != "ok":
        return None
    leader = next((t for t in py.threads if pid is not None and t.os_thread_id == pid), None)
    return leader or next((t for t in py.threads if t.name == "MainThread"), None)


def user_frame(frames: list[Frame]) -> Frame | None:
    """Innermost non-internal Python frame (frames innermost last)."""
    for f in reversed(frames):
        if not getattr(f, "native", False) and not is_internal(f.filename):
            return f
    return None


def await_point(frames: list) -> tuple[object | None, object | None]:
    """(the user's innermost frame, the frame it called into) for a chain of
    `Frame` or `TaskFrame` (innermost last). The callee names what the user
    code is blocked in (``Process.wait``, ``sleep_forever``); with no user
    frame at all it is the innermost frame above trio's trap plumbing."""
    frames = [f for f in frames if not getattr(f, "native", False)]
    if not frames:
        return None, None
    for i in range(len(frames) - 1, -1, -1):
        if not is_internal(frames[i].filename):
            return frames[i], frames[i + 1] if i + 1 < len(frames) else None
    plumbing = ("/trio/_core/_traps.py", "/trio/_core/_generated_")
    inner = next((f for f in reversed(frames) if not any(p in f.filename for p in plumbing)),
                 frames[-1])
    return None, inner


def short_path(filename: str) -> str:
    """``.../site-packages/trio/_sync.py`` -> ``trio/_sync.py``; else the
    file's base name."""
    for marker in ("site-packages/", "dist-packages/"):
        if marker in filename:
            return filename.rsplit(marker, 1)[1]
    return filename.rsplit("/", 1)[-1]


def await_text(frames: list) -> str:
    """``file:line in func > callee``: where user code waits, and in what."""
    user, callee = await_point(frames)
    if user is None and callee is None:
        return "(no Python frames)"
    if user is None:
        return f"{short_path(callee.filename)}:{callee.line} in {callee.name}"
    text = f"{short_path(user.filename)}:{user.line} in {user.name}"
    return f"{text} > {callee.name}" if callee is not None else text


def trio_focus(tree: TaskTree):
    """(task, n tasks) for the task that most looks stuck, or None.

    Preference: the task running when the dump was taken (it holds the
    loop: a sync sleep, a busy loop), a task outliving its nursery's
    cancellation, then leaf tasks in user code, those blocked in some kind
    of wait first (a child process, a result, a lock) over the ones
    serving a stream.
    """
    tasks = [t for t in tree.tasks if t.frames]
    if not tasks:
        return None

    def score(item):
        index, t = item
        user, callee = await_point(t.frames)
        called = (callee.name if callee is not None else "").lower()
        waits = any(w in called for w in ("wait", "result", "join", "acquire", "sleep"))
        return (t.state == "running", t.cancelling, user is not None,
                not t.has_children, waits, -index)

    _, best = max(enumerate(tasks), key=score)
    return best, len(tree.tasks)


def python_where(p: ProcStacks) -> str:
    """Where the thread that matters waits: its innermost user frame and
    what that frame called into."""
    if p.python.status != "ok":
        return f"({p.python.status}: {p.python.reason})"
    thread = focus_thread(p.python)
    if thread is None or not thread.frames:
        return "(no Python frames)"
    text = await_text(thread.frames)
    if thread.name != "MainThread":
        text += f" [thread {thread.name}]"
    return text


def trio_where(p: ProcStacks) -> str:
    tree = p.tasks
    if tree.status != "collected":
        return {
            "no-handler": "no task dumper armed",
            "not-requested": "not requested",
            "not-asked": "not asked (not an actor, no dumper announced)",
        }.get(tree.status, f"{tree.status}: {tree.reason}")
    if tree.empty:
        return f"EMPTY stackscope dump: {tree.reason}"
    if tree.format != "tractor-diag":
        return "see the task dump (not a tractor-diag taskdump)"
    focus = trio_focus(tree)
    if focus is None:
        return "no trio run active" if "trio run: none" in tree.text else "no tasks"
    task, n = focus
    state = f" [{task.state}]" if task.state else ""
    return f"task '{task.name}'{state} at {await_text(task.frames)} ({n} tasks)"


def whereabouts(p: ProcStacks) -> Whereabouts:
    """Everything the renderers quote of where ``p`` waits."""
    return Whereabouts(python=python_where(p), trio=trio_where(p),
                       tasks=[await_text(t.frames) if t.frames else "" for t in p.tasks.tasks])


def whereabouts_of(report: StacksReport) -> dict[int, Whereabouts]:
    """`whereabouts` of every process of ``report``, by pid."""
    return {p.pid: whereabouts(p) for p in report.procs}
