"""Trio task trees from outside: ask with SIGUSR1, read what gets appended.

A process that armed a task dumper (tractor's ``enable_stack_on_sig`` /
``TRACTOR_ENABLE_STACKSCOPE``, or `tractor_diag.taskdump.arm`) appends its
task tree to ``/tmp/tractor-stackscope-<pid>.log`` on SIGUSR1. We note the
file's size, signal, and collect what appears after that offset:

- a tractor-diag taskdump block (``===== tractor-diag taskdump BEGIN ...``)
  is complete at its END line;
- anything else (tractor's own stackscope text has no delimiters) is
  complete once the file stops growing for a short quiet period;

both bounded in time. SIGUSR1's default action terminates the process, so
a process is only signalled when ``SigCgt`` in ``/proc/<pid>/status`` (read
again right before the signal, together with the start time that proves the
pid was not reused) shows a handler for it.
"""
from __future__ import annotations

import os
import re
import signal
import time

import msgspec

from . import procfs
from .model import Proc
from .stackmodel import TaskFrame, TaskInfo, TaskTree

DUMP_PATH = "/tmp/tractor-stackscope-{pid}.log"

# An undelimited dump is done when the file has not grown for this long.
QUIET = 0.25
_POLL = 0.01
_MAX_READ = 4 << 20  # never slurp more than this from one dump file


def dump_path(pid: int) -> str:
    return DUMP_PATH.format(pid=pid)


class Pending(msgspec.Struct):
    pid: int
    path: str
    offset: int
    sent_at: float  # monotonic


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def request(proc: Proc) -> Pending | TaskTree:
    """Signal ``proc`` for a task tree if (and only if) it handles SIGUSR1."""
    fresh = procfs.read_proc(proc.pid)
    if fresh is None or abs(fresh.create_time - proc.create_time) > 0.05:
        return TaskTree(status="gone", reason="process gone (or its pid was reused)")
    handles = fresh.handles_signal(signal.SIGUSR1)
    if handles is None:
        return TaskTree(status="unknown", reason="SigCgt not readable: not signalled "
                        "(SIGUSR1 would kill a process without a handler)")
    if not handles:
        return TaskTree(status="no-handler", reason="no SIGUSR1 handler (no task "
                        "dumper armed): not signalled")
    path = dump_path(proc.pid)
    offset = _size(path)
    try:
        signal_main_thread(proc.pid, signal.SIGUSR1)
    except ProcessLookupError:
        return TaskTree(status="gone", reason="process gone before the request", path=path)
    except PermissionError:
        return TaskTree(status="error", path=path,
                        reason="not allowed to signal this process (another user's)")
    return Pending(pid=proc.pid, path=path, offset=offset, sent_at=time.monotonic())


_tgkill = None


def signal_main_thread(pid: int, signum: int) -> None:
    """Send ``signum`` to the main thread of ``pid`` (``tgkill``).

    A process-directed ``kill()`` may be delivered to any thread. Python
    only runs its handlers in the main thread, and a main thread blocked in
    a sync call (``time.sleep``, ``os.waitpid``) is only woken by a signal
    delivered to *it*; delivered to an idle worker thread (trio's thread
    cache), the request would sit unnoticed until the sleep ends. That
    happens in practice right after py-spy detaches. Falls back to
    ``os.kill`` where libc has no ``tgkill``.
    """
    global _tgkill
    if _tgkill is None:
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            fn = libc.tgkill
            fn.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int)
            _tgkill = (fn, ctypes)
        except (OSError, AttributeError):
            _tgkill = False
    if not _tgkill:
        os.kill(pid, signum)
        return
    fn, ctypes = _tgkill
    if fn(pid, pid, signum) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _read_from(path: str, offset: int) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return ""
    try:
        if os.fstat(fd).st_size < offset:
            offset = 0  # truncated or replaced since we looked: read it all
        os.lseek(fd, offset, os.SEEK_SET)
        chunks = []
        total = 0
        while total < _MAX_READ and (chunk := os.read(fd, 1 << 16)):
            chunks.append(chunk)
            total += len(chunk)
        return b"".join(chunks).decode("utf-8", "replace")
    finally:
        os.close(fd)


def _taskdump():
    from . import taskdump

    return taskdump


class _Watch:
    def __init__(self, req: Pending):
        self.req = req
        self.size = req.offset
        self.grew_at: float | None = None
        self.text = ""
        self.done = False
        self.complete = False
        self.format: str | None = None

    def poll(self, now: float) -> None:
        size = _size(self.req.path)
        if size != self.size:
            self.size = size
            self.grew_at = now
            self.text = _read_from(self.req.path, self.req.offset)
        if not self.text:
            return
        td = _taskdump()
        begin = td.BEGIN_RE.search(self.text)
        if begin is not None and int(begin["pid"]) == self.req.pid:
            self.format = "tractor-diag"
            for end in td.END_RE.finditer(self.text, begin.end()):
                if end["id"] == begin["id"]:
                    self.done = self.complete = True
                    return
            return  # a block in progress: wait for its END line
        self.format = "undelimited"
        if self.grew_at is not None and now - self.grew_at >= QUIET:
            self.done = True


def collect(pending: list[Pending], until: float) -> dict[int, TaskTree]:
    """Wait (until the monotonic time ``until``) for every request's dump."""
    watches = [_Watch(p) for p in pending]
    # Most dumps land within a few ms of the request: poll fast at first,
    # then back off.
    delay = 0.001
    while True:
        now = time.monotonic()
        for w in watches:
            if not w.done:
                w.poll(now)
        if all(w.done for w in watches) or now >= until:
            break
        time.sleep(min(delay, max(0.0, until - now)))
        delay = min(_POLL, delay * 2)
    out: dict[int, TaskTree] = {}
    end = time.monotonic()
    for w in watches:
        out[w.req.pid] = _result(w, end)
    return out


def _result(w: _Watch, now: float) -> TaskTree:
    elapsed = now - w.req.sent_at
    path = w.req.path
    if not w.text:
        gone = not os.path.exists(f"/proc/{w.req.pid}")
        return TaskTree(
            status="gone" if gone else "timeout", path=path, elapsed=elapsed,
            reason="process gone before it wrote a task tree" if gone else
            f"SIGUSR1 sent, nothing appended to {path} within {elapsed:.1f}s "
            "(main thread stuck in a C call, or the handler writes elsewhere)",
        )
    if w.format == "tractor-diag":
        blocks = _taskdump().parse_dumps(w.text)
        block = next((b for b in blocks if b.pid == w.req.pid), None)
        body = block.body if block is not None else w.text
        complete = bool(block and block.complete)
        return TaskTree(
            status="collected", text=body, format="tractor-diag",
            complete=complete, tasks=parse_task_lines(body), path=path,
            elapsed=elapsed,
            reason=None if complete else "the dump was still being written "
            f"when the {elapsed:.1f}s bound ran out",
        )
    return TaskTree(status="collected", text=w.text.rstrip("\n"),
                    format="undelimited", complete=w.done, path=path,
                    elapsed=elapsed,
                    reason=None if w.done else "the file was still growing when the bound ran out")


# ---------------------------------------------------------------------------
# reading a taskdump body back into tasks
# ---------------------------------------------------------------------------

_TASK_RE = re.compile(r"^(?P<pad> *)task '(?P<name>.*?)' \[(?P<tags>[^\]]*)\]")
_AT_RE = re.compile(r"^ *at (?P<file>.+?):(?P<line>\d+) in (?P<func>\S+)")
_NURSERY_RE = re.compile(r"^(?P<pad> *)nursery \d+/\d+ of .*?(?:\[(?P<flags>[^\]]*)\])?$")


def parse_task_lines(body: str) -> list[TaskInfo]:
    """The trio section of a taskdump body -> tasks in tree order.

    Only the lines between ``trio run: active`` and ``other threads:`` are
    the tree; the thread stacks after it use ``at`` lines too.
    """
    lines = body.splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.startswith("trio run: active")), None)
    if start is None:
        return []
    tasks: list[TaskInfo] = []
    stack: list[tuple[int, TaskInfo]] = []  # (indent, task) of open ancestors
    cancelled: list[int] = []  # indents of open nurseries whose cancel was called
    for ln in lines[start + 1:]:
        if ln.startswith("other threads:"):
            break
        if m := _TASK_RE.match(ln):
            indent = len(m["pad"])
            while stack and stack[-1][0] >= indent:
                stack.pop()
            while cancelled and cancelled[-1] >= indent:
                cancelled.pop()
            if stack:
                stack[-1][1].has_children = True
            tags = [t.strip() for t in m["tags"].split(",")]
            state = next((t for t in tags if t != "root"), "")
            task = TaskInfo(name=m["name"], state=state, depth=len(stack),
                            cancelling=bool(cancelled))
            tasks.append(task)
            stack.append((indent, task))
        elif (m := _AT_RE.match(ln)) and stack:
            stack[-1][1].frames.append(
                TaskFrame(filename=m["file"], line=int(m["line"]), name=m["func"]))
        elif m := _NURSERY_RE.match(ln):
            indent = len(m["pad"])
            flags = [f.strip() for f in (m["flags"] or "").split(",") if f.strip()]
            owner = [t for ind, t in stack if ind < indent]
            if owner:
                owner[-1].scope_flags.extend(flags)
            while cancelled and cancelled[-1] >= indent:
                cancelled.pop()
            if "cancel called" in flags:
                cancelled.append(indent)
    return tasks
