"""The capture: kernel side, Python stacks (py-spy), and trio task trees
(SIGUSR1 dumps, see `tractor_diag.tasks`) of every process in a snapshot.
What they mean (where each one is stuck, and why) is `tractor_diag.diagnosis`.

The kernel side of every process is read first (so the kernel stack shows
the process's own wait, not the ptrace stop py-spy causes, and the tree is
recorded before any signal). Then the py-spy dumps (`tractor_diag.pyspy`)
run a bounded number at a time (`default_jobs`), all served from the
calling thread; as each one ends, that process is asked for its trio task
tree, while the other dumps run, so a py-spy stack never catches the
process inside its own dump handler. Nothing here prints; missing pieces
carry a reason.
"""
from __future__ import annotations

import os
import time

from . import procfs
from .model import Entry, Proc, Snapshot, replace
from .pyspy import (
    OUTPUT_CAP, Dump, Ran, cannot_run, drive, dump_python, find_py_spy, is_cancelled,
    no_py_spy_reason, py_result, spy_argv, spy_env,
)
from .stackmodel import KernelSide, ProcStacks, PyStack, StacksOptions, StacksReport, TaskTree

# ---------------------------------------------------------------------------
# kernel side
# ---------------------------------------------------------------------------

def _stack_symbol(line: str) -> str:
    """``[<0>] do_wait+0x1c4/0x2f0`` -> ``do_wait``."""
    sym = line.split("] ", 1)[-1].strip()
    return sym.split("+", 1)[0]


_CAP_SYS_PTRACE = 19
_CAP_SYS_ADMIN = 21


def _status_of(pid: int | str) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            lines = f.read().decode("ascii", "replace").splitlines()
    except OSError:
        return {}
    return dict(ln.split(":", 1) for ln in lines if ":" in ln)


def _has_cap(status: dict[str, str], bit: int) -> bool | None:
    try:
        return bool(int(status["CapEff"].strip(), 16) >> bit & 1)
    except (KeyError, ValueError):
        return None


def _stack_refusal(pid: int, err: int | None) -> str:
    """Why the kernel refused ``/proc/<pid>/stack``, from the errno it gave.

    The kernel checks two things in turn: the reader holds CAP_SYS_ADMIN in
    the initial user namespace (else EACCES), then it may ptrace-read the
    target (else EPERM: another uid without CAP_SYS_PTRACE, an undumpable
    process, a user namespace we do not own, or a security module's veto).
    """
    import errno as errnos

    mine = _status_of("self")
    if err == errnos.EACCES:
        if _has_cap(mine, _CAP_SYS_ADMIN) is False:
            return "needs root (CAP_SYS_ADMIN), which this process lacks"
        return ("permission denied (EACCES) although this process holds CAP_SYS_ADMIN: "
                "not in the initial user namespace (a container?)")
    why = "the kernel refused ptrace access to it (EPERM)"
    theirs = _status_of(pid)
    try:
        our_uid = int(mine["Uid"].split()[0])
        their_uid = int(theirs["Uid"].split()[0])
    except (KeyError, ValueError, IndexError):
        our_uid = their_uid = None
    if _has_cap(mine, _CAP_SYS_PTRACE) is False:
        if their_uid is not None and their_uid != our_uid:
            return f"{why}: it runs as uid {their_uid} and this process lacks CAP_SYS_PTRACE"
        try:
            extra = int(theirs["CapPrm"].strip(), 16) & ~int(mine["CapPrm"].strip(), 16)
        except (KeyError, ValueError):
            extra = 0
        if extra:
            return (f"{why}: it holds capabilities this process does not, "
                    "and this process lacks CAP_SYS_PTRACE")
        return (f"{why}: this process lacks CAP_SYS_PTRACE and the target is "
                "undumpable (it changed credentials or asked not to be traced)")
    lsm = ""
    try:
        with open("/sys/kernel/security/lsm") as f:
            lsm = f.read().strip()
    except OSError:
        pass
    tail = f" (security modules: {lsm})" if lsm else ""
    return (f"{why} despite CAP_SYS_PTRACE: it runs in a user namespace this one does "
            f"not own, or a security module forbids it{tail}")


def kernel_side(proc: Proc) -> tuple[KernelSide, Proc | None]:
    """State, wchan and kernel stack at capture time (fresh ``/proc`` reads),
    and the fresh record (None when the pid is gone or was reused)."""
    fresh = procfs.read_quick(proc.pid)
    if fresh is None or abs(fresh.create_time - proc.create_time) > 0.05:
        return KernelSide(state=proc.state, wchan=proc.wchan,
                          stack_reason="process gone"), None
    side = KernelSide(state=fresh.state, wchan=fresh.wchan)
    if fresh.wchan is None:
        side.wchan = proc.wchan
    try:
        with open(f"/proc/{proc.pid}/stack", "rb") as f:
            raw = f.read().decode("ascii", "replace")
        symbols = [_stack_symbol(ln) for ln in raw.splitlines() if ln.strip()]
        if symbols:
            side.stack = symbols
        elif fresh.state in ("Z", "X"):
            side.stack_reason = "exited (zombie): no kernel stack"
        else:
            side.stack_reason = ("empty: running in user space" if fresh.state == "R"
                                 else "empty (the kernel showed no frames)")
    except FileNotFoundError:
        if os.path.isdir(f"/proc/{proc.pid}"):
            side.stack_reason = "this kernel has no /proc/<pid>/stack (CONFIG_STACKTRACE off)"
        else:
            side.stack_reason = "process gone"
    except PermissionError as exc:
        side.stack_reason = "not readable: " + _stack_refusal(proc.pid, exc.errno)
    except OSError as exc:
        side.stack_reason = f"not readable: {exc.strerror or exc}"
    return side, fresh


# ---------------------------------------------------------------------------
# the whole capture
# ---------------------------------------------------------------------------

def default_jobs() -> int:
    """Dumps at once: the CPUs this process may run on that nothing else is
    running on right now, at least 2 (one dump's exec and attach overlap
    another's parsing) when there are 2. py-spy is CPU-bound: more dumps
    than free cores only make each one cost more CPU."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(min(2, cores), cores - _busy_others())


def _busy_others() -> int:
    """Runnable tasks on the box other than this one, now (the kernel's
    count in /proc/loadavg; 0 when it cannot be read)."""
    try:
        with open("/proc/loadavg", "rb") as f:
            running = int(f.read().split()[3].split(b"/")[0])
    except (OSError, ValueError, IndexError):
        return 0
    return max(0, running - 1)


def _skip_reason(proc: Proc) -> tuple[str, str] | None:
    if proc.state in ("Z", "X", "x"):
        from .model import exit_status

        code = "" if proc.exit_code is None else f", exit status {exit_status(proc.exit_code)}"
        return "exited", (f"zombie{code}: no Python left to dump; "
                          f"parent {proc.ppid} has not reaped it")
    if proc.kthread:  # the kernel's flag: pid 2 is kthreadd only outside containers
        return "skipped", "kernel thread"
    return None


def capture(
    snap: Snapshot,
    options: StacksOptions = StacksOptions(),
    *,
    deadline: float | None = None,
    interactive: bool = False,
    known_tasks: dict[int, TaskTree] | None = None,
) -> StacksReport:
    """Kernel side, Python stack and task tree of every process in ``snap``.

    ``deadline`` (``time.monotonic()`` value) bounds the whole capture: a
    dump not started by then is reported as timed out, and no dump outlives
    it by more than a fraction of a second. ``interactive`` allows ``sudo`` to prompt when
    ``options.sudo == "prompt"`` (the CLI passes "stdin is a terminal").
    ``known_tasks``: task trees the caller already has (a process that
    wrote its own in-process): used as they are, those pids are not asked.

    The dumps run ``options.jobs`` (else `default_jobs`) at a time, all
    served from this thread. Each process's task tree is asked for as soon
    as its own py-spy dump is done, while the others' run.
    """
    from collections import deque

    from . import tasks as taskmod

    started = time.monotonic()
    taken_at = time.time()
    entries = snap.ordered()
    py_spy = find_py_spy()
    jobs = options.jobs if options.jobs > 0 else default_jobs()
    results: dict[int, ProcStacks] = {}
    pending: list[taskmod.Pending] = []

    def budget() -> float:
        if deadline is None:
            return options.timeout
        return min(options.timeout, deadline - time.monotonic())

    # Every process's kernel side is read before any signal goes out: a
    # task-tree request can change the tree (tractor's handler reaps exited
    # children), and what is reported must be the tree as it was found.
    sides = {e.proc.pid: kernel_side(e.proc) for e in entries}
    by_pid = {e.proc.pid: e for e in entries}

    def finish(entry: Entry, py: PyStack) -> None:
        """The process's stack is in: ask for its task tree, record it."""
        proc = entry.proc
        side, fresh = sides[proc.pid]
        skip = _skip_reason(fresh or proc)
        if known_tasks and proc.pid in known_tasks:
            tree = known_tasks[proc.pid]
        elif not options.tasks:
            tree = TaskTree(status="not-requested", reason="task trees not requested")
        elif fresh is None:
            tree = TaskTree(status="gone", reason="process gone")
        elif skip is not None:
            what = "a zombie" if skip[0] == "exited" else "a kernel thread"
            tree = TaskTree(status="no-handler", reason=f"{what}: not signalled")
        else:
            req = taskmod.request(proc, explicit=proc.pid in options.tasks_from)
            if isinstance(req, TaskTree):
                tree = req
            else:
                tree = TaskTree(status="timeout", path=req.path)
                pending.append(req)
        results[proc.pid] = ProcStacks(
            pid=proc.pid, ppid=proc.ppid, title=proc.short_title,
            actor=proc.actor.name if proc.actor else None,
            actor_truncated=bool(proc.actor and proc.actor.name_truncated),
            bucket=entry.bucket, state=entry.state, depth=entry.depth,
            kernel=side, python=py, tasks=tree, exit_code=proc.exit_code,
        )

    todo: deque[Entry] = deque()
    for entry in entries:
        proc = entry.proc
        _side, fresh = sides[proc.pid]
        # The fresh record: it may have exited since the snapshot.
        skip = _skip_reason(fresh or proc)
        if fresh is None:
            finish(entry, PyStack(status="gone", reason="process gone before its stack was read"))
        elif skip is not None:
            finish(entry, PyStack(status=skip[0], reason=skip[1]))  # type: ignore[arg-type]
        elif py_spy is None:
            finish(entry, PyStack(status="no-py-spy", reason=no_py_spy_reason()))
        else:
            todo.append(entry)

    env = spy_env()

    def start_next(into: list[Dump]) -> Dump | None:
        while todo and len(into) < jobs:
            entry = todo.popleft()
            left = budget()
            if left <= 0:
                finish(entry, PyStack(status="timeout", reason="the capture's overall time "
                                      "bound ran out before this dump started"))
                continue
            if is_cancelled():
                finish(entry, py_result(entry.proc.pid, Ran(None, b"", b"", 0.0),
                                         timeout=left, sudo=False))
                continue
            if _pid_reused(entry.proc):
                # its kernel side was read before the first dump; a dump that
                # queued behind others starts later, and py-spy attaches by pid
                finish(entry, PyStack(status="gone", reason=_REUSED_BEFORE))
                continue
            # locals name an actor only its stack names (see `stacknames`)
            argv = spy_argv(entry.proc.pid, py_spy, options.locals or _unnamed_mp(entry.proc),
                            options.native, False)
            try:
                return Dump((entry.proc.pid, left), argv, left, env, OUTPUT_CAP, into,
                            traced=entry.proc.pid)
            except OSError as exc:
                finish(entry, cannot_run(exc))
        return None

    def on_done(dump: Dump) -> None:
        pid, timeout = dump.key
        py = _unless_reused(by_pid[pid].proc,
                            py_result(pid, dump.ran, timeout=timeout, sudo=False))
        if _unnamed_mp(by_pid[pid].proc):
            _name_mp_actor(by_pid[pid].proc, py, keep_locals=options.locals)
        finish(by_pid[pid], py)

    drive(start_next, on_done)

    _retry_with_sudo(results, {pid: e.proc for pid, e in by_pid.items()}, options, py_spy,
                     interactive, budget)

    if pending:
        wait_until = time.monotonic() + options.task_timeout
        if deadline is not None:
            wait_until = min(wait_until, deadline)
        for pid, tree in taskmod.collect(pending, until=wait_until).items():
            results[pid].tasks = tree
    for entry in entries:
        _name_from_dump(entry.proc, results[entry.proc.pid])

    return StacksReport(
        taken_at=taken_at, roots=list(snap.roots),
        procs=[results[e.proc.pid] for e in entries],
        py_spy=py_spy, options=options, elapsed=time.monotonic() - started,
    )


_REUSED_BEFORE = ("process gone before its stack was read; its pid now belongs to another "
                  "process, which is not traced")


def _unless_reused(proc: Proc, py: PyStack) -> PyStack:
    """``py``, a dump of ``proc``'s pid, unless another process holds that
    pid now: then what py-spy read may be the newcomer's. Every dump of a
    process we already know goes through this (a queued one, a retry)."""
    if py.status == "ok" and _pid_reused(proc):
        return PyStack(status="gone", elapsed=py.elapsed, via_sudo=py.via_sudo,
                       reason="process gone during the capture; its pid now belongs to "
                              "another process, whose stack is not shown")
    return py


def _pid_reused(proc: Proc) -> bool:
    """Another process holds ``proc``'s pid now. A dump that queued behind
    others may have read a newcomer: the same start time after the dump
    means the pid was never let go while py-spy read it."""
    try:
        with open(f"/proc/{proc.pid}/stat", "rb") as f:
            ticks = int(f.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return False  # gone (or unreadable): nobody else's stack was read
    return abs(ticks - procfs.ticks_of(proc.create_time)) > 5


def _unnamed_mp(proc: Proc) -> bool:
    """An actor only its own stack can name (see `stacknames`)."""
    a = proc.actor
    return (a is not None and not a.name and a.role in ("subactor", "booting")
            and a.backend in ("mp_spawn", "mp_forkserver", "main_thread_forkserver"))


def _name_mp_actor(proc: Proc, py: PyStack, *, keep_locals: bool) -> None:
    """Name ``proc`` from its own stack (`stacknames`), in place and for the
    rest of this program's scans; drop the locals asked for only for that."""
    from . import recognise, stacknames

    if py.status != "ok":
        return
    found = stacknames.name_from_stack(py.threads)
    if not keep_locals:
        for t in py.threads:
            t.frames = [replace(f, locals=None) if f.locals is not None else f
                        for f in t.frames]
    if found is not None:
        recognise.learn_name(proc, *found)


def name_unnamed(snap: Snapshot, *, timeout: float = 5.0) -> int:
    """Name the snapshot's actors that only their stacks name, as `capture`
    does, without the rest of a capture (``ptree --names``): one py-spy dump
    with locals each, within ``timeout`` in all. Returns how many were named."""
    py_spy = find_py_spy()
    todo = [e.proc for e in snap.ordered() if _unnamed_mp(e.proc) and e.proc.state not in "ZXx"]
    if py_spy is None or not todo:
        return 0
    end = time.monotonic() + timeout
    named = 0
    for proc in todo:
        left = end - time.monotonic()
        if left <= 0:
            break
        py = dump_python(proc.pid, py_spy=py_spy, locals=True, timeout=left)
        _name_mp_actor(proc, _unless_reused(proc, py), keep_locals=False)
        named += bool(proc.actor.name)
    return named


def _name_from_dump(proc: Proc, ps: ProcStacks) -> None:
    """An actor nothing outside names (a root, an mp actor whose stack did
    not) named by its own task dump: our dumper writes the name its tractor
    runtime holds."""
    from . import recognise

    name = ps.tasks.actor
    if name is None or proc.actor is None or proc.actor.name:
        return
    if proc.actor.role not in ("subactor", "root"):
        return
    recognise.learn_name(proc, name, "taskdump")
    ps.actor, ps.title = name, proc.short_title


def _retry_with_sudo(results: dict[int, ProcStacks], procs: dict[int, Proc],
                     options: StacksOptions, py_spy: str | None, interactive: bool,
                     budget) -> None:
    """Re-dump the permission failures through ``sudo -n``, when there is a
    sudo and the user allowed it. Prompts (once, before the retries) only
    when asked for interactively. ``procs``: the processes dumped, by pid
    (a retry comes late: its pid may be another process's by then)."""
    denied = [p for p in results.values() if p.python.status == "permission"]
    if not denied or options.sudo == "never" or py_spy is None:
        return
    import shutil  # a permission failure is rare: start-up need not pay for it

    if shutil.which("sudo") is None:
        for p in denied:
            p.python.reason = f"{p.python.reason} (sudo not available)"
        return
    if options.sudo == "prompt" and interactive:
        import subprocess

        # One prompt on the terminal, then every retry uses the cached ticket.
        subprocess.run(["sudo", "-v"], check=False)
    for p in denied:
        if budget() <= 0:
            break
        if _pid_reused(procs[p.pid]):
            p.python = PyStack(status="gone", reason=_REUSED_BEFORE)
            continue
        retry = dump_python(p.pid, py_spy=py_spy, locals=options.locals,
                            native=options.native, timeout=budget(), sudo=True)
        p.python = _unless_reused(procs[p.pid], retry)

