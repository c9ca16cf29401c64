"""The capture: kernel side, Python stacks (py-spy), and trio task trees
(SIGUSR1 dumps, see `tractor_diag.tasks`) of every process in a snapshot.
What they mean (where each one is stuck, and why) is `tractor_diag.diagnosis`.

The kernel side of every process is read first (so the kernel stack shows
the process's own wait, not the ptrace stop py-spy causes, and the tree is
recorded before any signal). Then the py-spy dumps run a bounded number at
a time (`default_jobs`), all served from the calling thread; as each one
ends, that process is asked for its trio task tree, while the other dumps
run, so a py-spy stack never catches the process inside its own dump
handler.

Every dump has a timeout and runs in its own process group, so a wedged
py-spy (or a stand-in that forks) is killed whole and can never wedge the
caller. Nothing here prints; missing pieces carry a reason.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import msgspec

from . import procfs
from .model import Entry, Proc, Snapshot
from .safetext import escape
from .stackmodel import (
    Frame, KernelSide, Local, ProcStacks, PyStack, StacksOptions,
    StacksReport, TaskTree, Thread,
)

#: Path of the py-spy executable to use instead of searching for one.
PY_SPY_ENV = "TRACTOR_DIAG_PY_SPY"


# ---------------------------------------------------------------------------
# locating py-spy
# ---------------------------------------------------------------------------

def find_py_spy() -> str | None:
    """``$TRACTOR_DIAG_PY_SPY``, else next to this interpreter (a venv's
    ``bin/``, where the py-spy wheel puts it), else on ``PATH``."""
    override = os.environ.get(PY_SPY_ENV)
    if override:
        return override if os.access(override, os.X_OK) else None
    here = os.path.join(os.path.dirname(sys.executable), "py-spy")
    if os.access(here, os.X_OK):
        return here
    return shutil.which("py-spy")


def no_py_spy_reason() -> str:
    override = os.environ.get(PY_SPY_ENV)
    if override:
        return f"py-spy not runnable: ${PY_SPY_ENV}={override} is not an executable file"
    return "py-spy not found (pip install py-spy; looked next to the interpreter and on PATH)"


# ---------------------------------------------------------------------------
# running a command with a hard bound
# ---------------------------------------------------------------------------

#: The most of a dump's stdout that is kept. py-spy's JSON of a large
#: process with ``--locals`` runs to a few MiB; a py-spy (or stand-in) that
#: floods past this is cut off and killed instead of eating the machine's
#: memory. stderr only ever matters for its first lines.
OUTPUT_CAP = 16 << 20
_ERR_CAP = 64 << 10


class _Ran(msgspec.Struct):
    returncode: int | None  # None: timed out, cut or cancelled (killed)
    stdout: bytes
    stderr: bytes
    elapsed: float
    cut: bool = False  # stdout passed the cap: the rest was never read


# Set while a verb unwinds after a signal: running dumps stop within a tick
# (each killed by the thread that started it, while its pid is still
# unreaped: a group id is never signalled after it may have been reused),
# and no new one starts.
_cancelled = threading.Event()
_TICK = 0.1


def cancel_running() -> None:
    """Stop every dump running now and refuse new ones until `allow_running`."""
    _cancelled.set()


def allow_running() -> None:
    _cancelled.clear()


class _Dump:
    """One bounded child: its pipes are read by `_drive`, which serves every
    running dump from one thread (no thread or selector per dump)."""

    __slots__ = ("key", "proc", "out", "err", "cap", "start", "deadline",
                 "open", "killed_at", "cut", "ran")

    def __init__(self, key, argv: list[str], timeout: float, env: dict[str, str] | None,
                 cap: int, into: list[_Dump]):
        """Start ``argv``; the dump is appended to ``into`` (the caller's
        running list) before any signal handler of ours can run again."""
        self.key = key
        self.start = time.monotonic()
        self.deadline = self.start + max(0.01, timeout)
        self.out, self.err = bytearray(), bytearray()
        self.cap = cap
        self.open: dict[int, bytearray] = {}
        self.killed_at: float | None = None
        self.cut = False
        self.ran: _Ran | None = None
        # A Python signal handler that raises (dump-all's SIGTERM) could
        # otherwise land between the fork and Popen returning, losing the
        # child's pid: the signals we handle are held until the dump is on
        # the running list, where an unwinding `_drive` kills it. (The
        # child starts with them blocked too: harmless, it is only ever
        # SIGKILLed, and its own session gets no terminal signals.)
        held = _handled_signals()
        if held:
            old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
        try:
            # Its own session: on timeout (or past the cap) the whole group
            # is SIGKILLed, or a stand-in whose children inherited our pipes
            # would keep us waiting for EOF forever.
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, start_new_session=True, env=env,
            )
            into.append(self)
            for pipe, buf in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
                fd = pipe.fileno()
                os.set_blocking(fd, False)
                self.open[fd] = buf
        finally:
            if held:
                signal.pthread_sigmask(signal.SIG_SETMASK, old)

    def read(self, fd: int, sel) -> None:
        if fd not in self.open:  # let go earlier in this round (cut at the cap)
            return
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            return
        if not chunk:
            self._close(fd, sel)
            return
        buf = self.open[fd]
        limit = self.cap if buf is self.out else _ERR_CAP
        room = limit - len(buf)
        buf += chunk[:room]
        if len(chunk) > room and buf is self.out:
            self.cut = True
            self.kill(sel)
        # past stderr's cap: keep reading (a writer blocked on a full pipe
        # would never exit) but keep nothing

    def _close(self, fd: int, sel) -> None:
        del self.open[fd]
        try:
            sel.unregister(fd)
        except (KeyError, ValueError):
            pass

    def kill(self, sel) -> None:
        """SIGKILL the group. Only while the child is unreaped: its pid (the
        group's id) cannot have been reused then."""
        if self.killed_at is not None:
            return
        self.killed_at = time.monotonic()
        if self.proc.returncode is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass
        if self.cut:  # what is left in the pipes is not wanted
            for fd in list(self.open):
                self._close(fd, sel)

    def step(self, now: float, sel) -> bool:
        """Timeouts, cancellation and exit; True once finished (``ran`` set)."""
        if self.killed_at is None and (now >= self.deadline or _cancelled.is_set()):
            self.kill(sel)
        if self.killed_at is not None and self.open and now >= self.killed_at + 0.2:
            # A killed group's output is already in the pipes: EOF comes at
            # once unless something outside the group still holds them.
            for fd in list(self.open):
                self._close(fd, sel)
        if self.open:
            return False
        if self.proc.poll() is None:
            if self.killed_at is None or now < self.killed_at + 1.0:
                return False
        self._finish()
        return True

    def _finish(self) -> None:
        for pipe in (self.proc.stdout, self.proc.stderr):
            try:
                pipe.close()
            except OSError:
                pass
        code = self.proc.returncode if self.killed_at is None else None
        self.ran = _Ran(code, bytes(self.out), bytes(self.err), time.monotonic() - self.start,
                        cut=self.cut)

    def abandon(self) -> None:
        """On the way out of an interrupted run: kill, reap, close."""
        if self.killed_at is None and self.proc.returncode is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            self.proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            pass
        for pipe in (self.proc.stdout, self.proc.stderr):
            try:
                pipe.close()
            except OSError:
                pass


_CATCHABLE = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGALRM", "SIGUSR1", "SIGUSR2")


def _handled_signals() -> set[int]:
    """Signals with a Python handler, when on the main thread (the only one
    Python runs handlers on)."""
    if threading.current_thread() is not threading.main_thread():
        return set()
    held = set()
    for name in _CATCHABLE:
        sig = getattr(signal, name, None)
        if sig is not None and callable(signal.getsignal(sig)):
            held.add(sig)
    return held


def _drive(start_next, on_done) -> None:
    """Run dumps until none is left: ``start_next(running)`` starts a new
    `_Dump` into ``running`` and returns it (or None: nothing more now),
    called whenever a slot frees;
    ``on_done(dump)`` gets each finished one. On any exception (a signal's
    handler raising in this thread) every running dump's group is killed
    and reaped before it propagates."""
    import selectors

    sel = selectors.DefaultSelector()
    running: list[_Dump] = []

    def fill() -> None:
        while True:
            dump = start_next(running)
            if dump is None:
                return
            for fd in dump.open:
                sel.register(fd, selectors.EVENT_READ, dump)

    try:
        fill()
        while running:
            now = time.monotonic()
            wakes = [d.deadline if d.killed_at is None else d.killed_at + 0.2
                     for d in running if d.open]
            wait = min(_TICK, max(0.001, min(wakes) - now)) if wakes else _TICK
            if len(wakes) < len(running):
                # pipes all closed, not exited yet: poll the exit briskly
                wait = 0.002
            for key, _ in sel.select(wait):
                key.data.read(key.fd, sel)
            now = time.monotonic()
            done = [d for d in running if d.step(now, sel)]
            if done:
                running[:] = [d for d in running if d.ran is None]
                for dump in done:
                    on_done(dump)
                fill()
    except BaseException:
        for dump in running:
            dump.abandon()
        raise
    finally:
        sel.close()


def run_bounded(argv: list[str], timeout: float, *, env: dict[str, str] | None = None,
                cap: int = OUTPUT_CAP) -> _Ran:
    """Run ``argv`` for at most ``timeout`` seconds, keeping at most ``cap``
    bytes of its stdout; never hangs, never buffers without bound.

    On timeout (or past the cap) the child's whole process group is
    SIGKILLed; output left after the kill is drained for at most 0.2 s more.
    """
    if _cancelled.is_set():
        return _Ran(None, b"", b"", 0.0)
    result: list[_Ran] = []

    def start(running: list[_Dump]) -> _Dump | None:
        return None if result or running else _Dump(None, argv, timeout, env, cap, running)

    _drive(start, lambda d: result.append(d.ran))
    return result[0]


# ---------------------------------------------------------------------------
# py-spy's JSON, as it prints it (frames innermost first)
# ---------------------------------------------------------------------------

class _SpyLocal(msgspec.Struct):
    name: str
    repr: str | None = None
    arg: bool = False


class _SpyFrame(msgspec.Struct):
    name: str
    filename: str
    line: int = 0
    short_filename: str | None = None
    module: str | None = None  # set for native frames
    locals: list[_SpyLocal] | None = None


class _SpyThread(msgspec.Struct):
    thread_id: int
    pid: int = 0
    thread_name: str | None = None
    os_thread_id: int | None = None
    active: bool = False
    owns_gil: bool = False
    frames: list[_SpyFrame] = []


_spy_decoder = msgspec.json.Decoder(list[_SpyThread])


def parse_py_spy_json(data: bytes | str) -> list[Thread]:
    """py-spy ``dump --json`` output -> threads with frames innermost LAST."""
    threads = []
    for t in _spy_decoder.decode(data):
        frames = [
            Frame(
                name=f.name, filename=f.filename, line=f.line,
                short=f.short_filename or os.path.basename(f.filename),
                native=f.module is not None,
                locals=None if f.locals is None else [
                    Local(name=v.name, repr=v.repr, arg=v.arg) for v in f.locals
                ],
            )
            for f in reversed(t.frames)
        ]
        name = t.thread_name
        if name is None and t.os_thread_id == t.pid:
            # py-spy names threads through the threading module; a program
            # that never imported it still has its main thread.
            name = "MainThread"
        threads.append(Thread(
            thread_id=t.thread_id, os_thread_id=t.os_thread_id,
            name=name, active=t.active, owns_gil=t.owns_gil,
            frames=frames,
        ))
    # The main thread first: that is where a trio program (and a signal
    # handler) runs.
    threads.sort(key=lambda t: (t.name != "MainThread", t.os_thread_id or 0))
    return threads


def classify_py_spy_error(pid: int, stderr: str) -> tuple[str, str]:
    """(status, reason) from a failed py-spy's stderr."""
    text = stderr.strip()
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    first = first.removeprefix("Error: ")
    low = text.lower()
    if "permission denied" in low or "operation not permitted" in low:
        return "permission", f"permission denied: not allowed to attach to pid {pid}"
    if "unsupported version of python" in low:
        idx = low.index("unsupported version of python")
        version = text[idx:].split(":", 1)[-1].split()[0] if ":" in text[idx:] else "?"
        return "unsupported", (
            f"py-spy {py_spy_version() or ''} cannot read this interpreter "
            f"(unsupported Python {version})".replace("  ", " ")
        )
    if not os.path.exists(f"/proc/{pid}"):
        return "gone", "process gone before py-spy could read it"
    if "failed to find python version" in low or "failed to find a python interpreter" in low \
            or "both python and libpython are invalid" in low:
        return "not-python", "not a Python process (py-spy found no interpreter in it)"
    if "no such process" in low or "failed to get process executable name" in low:
        return "gone", "process gone before py-spy could read it"
    return "failed", f"py-spy failed: {first or 'no error message'}"


_PY_SPY_VERSION: dict[str, str | None] = {}


def py_spy_version(path: str | None = None) -> str | None:
    path = path or find_py_spy()
    if path is None:
        return None
    if path not in _PY_SPY_VERSION:
        try:
            ran = run_bounded([path, "--version"], 2.0)
            words = ran.stdout.decode(errors="replace").split()
            _PY_SPY_VERSION[path] = words[-1] if ran.returncode == 0 and words else None
        except OSError:
            _PY_SPY_VERSION[path] = None
    return _PY_SPY_VERSION[path]


# ---------------------------------------------------------------------------
# one Python stack
# ---------------------------------------------------------------------------

def _spy_argv(pid: int, py_spy: str, locals: bool, native: bool, sudo: bool) -> list[str]:
    argv = [py_spy, "dump", "--json", "--pid", str(pid)]
    if locals:
        argv.append("--locals")
    if native:
        argv.append("--native")
    if sudo:
        argv = ["sudo", "-n", "--", *argv]
    return argv


def _spy_env() -> dict[str, str] | None:
    """No Rust backtrace: its lines would bury py-spy's own one-line reason.
    None (inherit ours, nothing to encode per dump) when none is asked for."""
    if os.environ.get("RUST_BACKTRACE", "0") == "0":
        return None
    return dict(os.environ, RUST_BACKTRACE="0")


def dump_python(
    pid: int,
    *,
    py_spy: str | None,
    locals: bool = False,
    native: bool = False,
    timeout: float = 5.0,
    sudo: bool = False,
) -> PyStack:
    """One ``py-spy dump --json`` of ``pid`` (with ``sudo -n`` when asked)."""
    if py_spy is None:
        return PyStack(status="no-py-spy", reason=no_py_spy_reason())
    try:
        ran = run_bounded(_spy_argv(pid, py_spy, locals, native, sudo), timeout, env=_spy_env())
    except OSError as exc:
        return _cannot_run(exc)
    return _py_result(pid, ran, timeout=timeout, sudo=sudo)


def _cannot_run(exc: OSError) -> PyStack:
    return PyStack(status="no-py-spy", reason=f"cannot run py-spy: {exc.strerror or exc}")


def _py_result(pid: int, ran: _Ran, *, timeout: float, sudo: bool) -> PyStack:
    """What a finished py-spy run says about ``pid``'s Python stack."""
    if ran.cut:
        return PyStack(
            status="failed", via_sudo=sudo, elapsed=ran.elapsed,
            reason=f"py-spy's output passed {OUTPUT_CAP >> 20} MiB: dump cut there "
                   "and py-spy killed (no stack)",
        )
    if ran.returncode is None:
        why = ("the capture was interrupted" if _cancelled.is_set()
               else f"py-spy did not answer within {timeout:.1f}s")
        return PyStack(status="timeout", via_sudo=sudo, elapsed=ran.elapsed,
                       reason=f"{why} (killed)")
    if ran.returncode == 0:
        try:
            threads = parse_py_spy_json(ran.stdout)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return PyStack(status="failed", via_sudo=sudo, elapsed=ran.elapsed,
                           reason=f"py-spy printed output that is not its JSON: {exc}")
        return PyStack(status="ok", threads=threads, via_sudo=sudo, elapsed=ran.elapsed)
    err = ran.stderr.decode("utf-8", "replace")
    if sudo and ("password is required" in err or "a terminal is required" in err):
        return PyStack(
            status="permission", via_sudo=True, elapsed=ran.elapsed,
            reason=f"permission denied: not allowed to attach to pid {pid}, and "
                   "sudo -n needs a password (run with --sudo on a terminal)",
        )
    tracer = tracer_of(pid)
    if tracer is not None:
        # ptrace allows one tracer: py-spy's attach fails as "permission
        # denied", which sudo would not change
        return PyStack(status="traced", via_sudo=sudo, elapsed=ran.elapsed,
                       reason=f"already traced by pid {tracer[0]} ({escape(tracer[1])}): "
                              "py-spy cannot attach while another tracer is")
    status, reason = classify_py_spy_error(pid, err)
    return PyStack(status=status, reason=reason, via_sudo=sudo, elapsed=ran.elapsed)  # type: ignore[arg-type]


def tracer_of(pid: int) -> tuple[int, str] | None:
    """(pid, comm) of the tracer attached to ``pid`` (``TracerPid``), if any.
    A tracer outside our PID namespace reads as none."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"TracerPid:"):
                    tracer = int(line.split()[1])
                    break
            else:
                return None
    except (OSError, ValueError, IndexError):
        return None
    if tracer <= 0:
        return None
    try:
        with open(f"/proc/{tracer}/comm", "rb") as f:
            comm = f.read().rstrip(b"\n").decode("utf-8", "surrogateescape")
    except OSError:
        comm = "?"
    return tracer, comm


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
    if proc.ppid == 2 or proc.pid == 2:
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

    env = _spy_env()

    def start_next(into: list[_Dump]) -> _Dump | None:
        while todo and len(into) < jobs:
            entry = todo.popleft()
            left = budget()
            if left <= 0:
                finish(entry, PyStack(status="timeout", reason="the capture's overall time "
                                      "bound ran out before this dump started"))
                continue
            if _cancelled.is_set():
                finish(entry, _py_result(entry.proc.pid, _Ran(None, b"", b"", 0.0),
                                         timeout=left, sudo=False))
                continue
            argv = _spy_argv(entry.proc.pid, py_spy, options.locals, options.native, False)
            try:
                return _Dump((entry.proc.pid, left), argv, left, env, OUTPUT_CAP, into)
            except OSError as exc:
                finish(entry, _cannot_run(exc))
        return None
        return None

    def on_done(dump: _Dump) -> None:
        pid, timeout = dump.key
        finish(by_pid[pid], _py_result(pid, dump.ran, timeout=timeout, sudo=False))

    _drive(start_next, on_done)

    _retry_with_sudo(results, options, py_spy, interactive, budget)

    if pending:
        wait_until = time.monotonic() + options.task_timeout
        if deadline is not None:
            wait_until = min(wait_until, deadline)
        for pid, tree in taskmod.collect(pending, until=wait_until).items():
            results[pid].tasks = tree

    return StacksReport(
        taken_at=taken_at, roots=list(snap.roots),
        procs=[results[e.proc.pid] for e in entries],
        py_spy=py_spy, options=options, elapsed=time.monotonic() - started,
    )


def _retry_with_sudo(results: dict[int, ProcStacks], options: StacksOptions,
                     py_spy: str | None, interactive: bool, budget) -> None:
    """Re-dump the permission failures through ``sudo -n``, when there is a
    sudo and the user allowed it. Prompts (once, before the retries) only
    when asked for interactively."""
    denied = [p for p in results.values() if p.python.status == "permission"]
    if not denied or options.sudo == "never" or py_spy is None:
        return
    if shutil.which("sudo") is None:
        for p in denied:
            p.python.reason = f"{p.python.reason} (sudo not available)"
        return
    if options.sudo == "prompt" and interactive:
        # One prompt on the terminal, then every retry uses the cached ticket.
        subprocess.run(["sudo", "-v"], check=False)
    for p in denied:
        if budget() <= 0:
            break
        retry = dump_python(p.pid, py_spy=py_spy, locals=options.locals,
                            native=options.native, timeout=budget(), sudo=True)
        p.python = retry

