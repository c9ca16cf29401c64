"""The py-spy runner: where py-spy is, one bounded run of it (or of any
command), many at once from one thread, and what its JSON and its errors say.

Every run has a timeout and runs in its own process group, so a wedged
py-spy (or a stand-in that forks) is killed whole and can never wedge the
caller. The capture that decides which processes to dump, and when, is
`tractor_diag.stacks`.
"""
from __future__ import annotations

import _signal
import os
import signal
import sys
import threading
import time

import msgspec.json

from .safetext import escape
from .stackmodel import Frame, Local, PyStack, Thread

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
    import shutil  # here only: with zlib, bz2 and lzma it costs ~2 ms of start-up

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


class Ran:
    """One finished run (plumbing between the runner and its callers, never
    a verb's result: not a model Struct)."""

    __slots__ = ("returncode", "stdout", "stderr", "elapsed", "cut")

    def __init__(self, returncode: int | None, stdout: bytes, stderr: bytes, elapsed: float,
                 cut: bool = False):
        self.returncode = returncode  # None: timed out, cut or cancelled (killed)
        self.stdout = stdout
        self.stderr = stderr
        self.elapsed = elapsed
        self.cut = cut  # stdout passed the cap: the rest was never read


# Set while a verb unwinds after a signal: running dumps stop within a tick
# (each killed by the thread that started it, while its pid is still
# unreaped: a group id is never signalled after it may have been reused),
# and no new one starts.
# pids of the dumps this process runs, until each is reaped by its own
# waiter: children of ours in sessions of their own, which a launch
# supervisor must not take for orphans its tree left it (`launch`)
HELPERS: set[int] = set()

_cancelled = threading.Event()
_TICK = 0.1


def cancel_running() -> None:
    """Stop every dump running now and refuse new ones until `allow_running`."""
    _cancelled.set()


def allow_running() -> None:
    _cancelled.clear()


def is_cancelled() -> bool:
    return _cancelled.is_set()


class Dump:
    """One bounded child: its pipes are read by `drive`, which serves every
    running dump from one thread (no thread or selector per dump)."""

    __slots__ = ("key", "pid", "returncode", "out", "err", "cap", "start", "deadline",
                 "open", "killed_at", "cut", "ran", "mark")

    def __init__(self, key, argv: list[str], timeout: float, env: dict[str, str] | None,
                 cap: int, into: list[Dump], *, traced: int | None = None):
        """Start ``argv``; the dump is appended to ``into`` (the caller's
        running list) before any signal handler of ours can run again.
        ``traced``: the pid it attaches to, marked in `captures` until the
        dump is over (the sampler judges no runaway over our attach)."""
        from . import captures

        self.key = key
        self.mark = captures.begin([traced]) if traced is not None else None
        self.start = time.monotonic()
        self.deadline = self.start + max(0.01, timeout)
        self.out, self.err = bytearray(), bytearray()
        self.cap = cap
        self.open: dict[int, bytearray] = {}
        self.killed_at: float | None = None
        self.cut = False
        self.ran: Ran | None = None
        self.returncode: int | None = None
        # A Python signal handler that raises (dump-all's SIGTERM) could
        # otherwise land between the spawn and its pid being recorded,
        # losing the child: the signals we handle are held until the dump
        # is on the running list, where an unwinding `drive` kills it. (The
        # child starts with an empty mask, its own.)
        held = _handled_signals()
        try:
            if held:
                old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
            try:
                self._start(argv, env, into)
            finally:
                if held:
                    signal.pthread_sigmask(signal.SIG_SETMASK, old)
        except BaseException:
            # nothing started (or, once on the running list, `drive`
            # abandons it): the sampler may judge the process again
            self._unmark()
            raise

    def _start(self, argv: list[str], env: dict[str, str] | None, into: list[Dump]) -> None:
        out_r, out_w = os.pipe()
        try:
            err_r, err_w = os.pipe()
        except BaseException:  # out of descriptors: leave none behind
            os.close(out_r)
            os.close(out_w)
            raise
        try:
            self.pid = _spawn(argv, env, out_w, err_w)
        except BaseException:
            os.close(out_r)
            os.close(err_r)
            raise
        finally:
            os.close(out_w)
            os.close(err_w)
        HELPERS.add(self.pid)
        into.append(self)
        for fd, buf in ((out_r, self.out), (err_r, self.err)):
            os.set_blocking(fd, False)
            self.open[fd] = buf

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
        if sel is not None:
            try:
                sel.unregister(fd)
            except (KeyError, ValueError):
                pass
        os.close(fd)

    def poll(self) -> int | None:
        """Reap the child if it has exited; its exit code (-N: signal N)."""
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped by someone else: status lost
                pid, status = self.pid, 0
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
                HELPERS.discard(self.pid)
        return self.returncode

    def kill(self, sel) -> None:
        """SIGKILL the group. Only while the child is unreaped: its pid (the
        group's id) cannot have been reused then."""
        if self.killed_at is not None:
            return
        self.killed_at = time.monotonic()
        if self.returncode is None:
            try:
                os.killpg(self.pid, signal.SIGKILL)
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
        if self.poll() is None:
            if self.killed_at is None or now < self.killed_at + 1.0:
                return False
        self._finish()
        return True

    def _unmark(self) -> None:
        if self.mark is not None:
            self.mark.end()

    def _finish(self) -> None:
        self._unmark()
        if self.returncode is None:  # killed, and not gone within a second
            _UNREAPED.add(self.pid)
        code = self.returncode if self.killed_at is None else None
        self.ran = Ran(code, bytes(self.out), bytes(self.err), time.monotonic() - self.start,
                       cut=self.cut)

    def abandon(self) -> None:
        """On the way out of an interrupted run: kill, reap, close."""
        self._unmark()
        if self.killed_at is None and self.returncode is None:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except OSError:
                pass
        until = time.monotonic() + 1.0
        while self.poll() is None and time.monotonic() < until:
            time.sleep(0.005)
        if self.returncode is None:
            _UNREAPED.add(self.pid)
        for fd in list(self.open):
            self._close(fd, None)


# Killed dumps that had not exited a second later (stuck in the kernel):
# reaped when they do, at the next run's start, and ours until then.
_UNREAPED: set[int] = set()


def _reap_late() -> None:
    for pid in list(_UNREAPED):
        try:
            done = os.waitpid(pid, os.WNOHANG)[0]
        except ChildProcessError:
            done = pid
        if done:
            _UNREAPED.discard(pid)
            HELPERS.discard(pid)


# Python ignores these; a child would inherit that through exec (as
# subprocess does, they are set back to their defaults).
_DEFAULTED = tuple(getattr(signal, n) for n in ("SIGPIPE", "SIGXFSZ") if hasattr(signal, n))


def _spawn(argv: list[str], env: dict[str, str] | None, out: int, err: int) -> int:
    """Start ``argv`` (searched on PATH when it names no directory) with
    stdin on /dev/null, stdout and stderr on the given pipe ends and no
    other descriptor of ours; returns its pid. posix_spawn, not fork: it
    costs this process about half of what subprocess.Popen does.

    Its own process group: on timeout (or past the cap) the whole group is
    SIGKILLed, or a stand-in whose children inherited our pipes would keep
    us waiting for EOF forever. A group, not a session: with the
    scheduler's autogroups a session per dump would take a share of a
    loaded box's CPU per dump, more than a diagnostic tool should take from
    a machine in trouble. sudo alone gets a session: it sets up the
    terminal it finds, which a background group may not do (SIGTTOU would
    stop it)."""
    actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
               (os.POSIX_SPAWN_DUP2, out, 1), (os.POSIX_SPAWN_DUP2, err, 2)]
    if hasattr(os, "POSIX_SPAWN_CLOSEFROM"):
        actions.append((os.POSIX_SPAWN_CLOSEFROM, 3))
    else:
        actions += [(os.POSIX_SPAWN_CLOSE, fd) for fd in _inheritable_fds()]
    session = {"setsid": True} if argv[0] == "sudo" else {"setpgroup": 0}
    spawn = os.posix_spawn if os.sep in argv[0] else os.posix_spawnp
    return spawn(argv[0], argv, os.environ if env is None else env, file_actions=actions,
                 setsigmask=(), setsigdef=_DEFAULTED, **session)


def _inheritable_fds() -> list[int]:
    """Our descriptors past stderr that an exec would pass on (most are
    close-on-exec already; one inherited from our own parent is not)."""
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        return []
    keep = []
    for fd in fds:
        if fd > 2:
            try:
                if os.get_inheritable(fd):
                    keep.append(fd)
            except OSError:  # the listing's own descriptor, closed since
                pass
    return keep


_CATCHABLE = tuple(int(getattr(signal, name)) for name in (
    "SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGALRM", "SIGUSR1", "SIGUSR2")
    if hasattr(signal, name))


def _handled_signals() -> set[int]:
    """Signals with a Python handler, when on the main thread (the only one
    Python runs handlers on). Asked of `_signal` itself: `signal.getsignal`
    wraps every answer in an enum, which cost more than the spawn."""
    if threading.current_thread() is not threading.main_thread():
        return set()
    return {sig for sig in _CATCHABLE if callable(_signal.getsignal(sig))}


def drive(start_next, on_done) -> None:
    """Run dumps until none is left: ``start_next(running)`` starts a new
    `Dump` into ``running`` and returns it (or None: nothing more now),
    called whenever a slot frees;
    ``on_done(dump)`` gets each finished one. On any exception (a signal's
    handler raising in this thread) every running dump's group is killed
    and reaped before it propagates."""
    import selectors

    if _UNREAPED:
        _reap_late()
    sel = selectors.DefaultSelector()
    running: list[Dump] = []

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
                cap: int = OUTPUT_CAP, traced: int | None = None) -> Ran:
    """Run ``argv`` for at most ``timeout`` seconds, keeping at most ``cap``
    bytes of its stdout; never hangs, never buffers without bound.

    On timeout (or past the cap) the child's whole process group is
    SIGKILLed; output left after the kill is drained for at most 0.2 s more.
    """
    if _cancelled.is_set():
        return Ran(None, b"", b"", 0.0)
    result: list[Ran] = []

    def start(running: list[Dump]) -> Dump | None:
        return None if result or running else Dump(None, argv, timeout, env, cap, running,
                                                   traced=traced)

    drive(start, lambda d: result.append(d.ran))
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

def spy_argv(pid: int, py_spy: str, locals: bool, native: bool, sudo: bool) -> list[str]:
    argv = [py_spy, "dump", "--json", "--pid", str(pid)]
    if locals:
        argv.append("--locals")
    if native:
        argv.append("--native")
    if sudo:
        argv = ["sudo", "-n", "--", *argv]
    return argv


def spy_env() -> dict[str, str] | None:
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
        ran = run_bounded(spy_argv(pid, py_spy, locals, native, sudo), timeout, env=spy_env(),
                          traced=pid)
    except OSError as exc:
        return cannot_run(exc)
    return py_result(pid, ran, timeout=timeout, sudo=sudo)


def cannot_run(exc: OSError) -> PyStack:
    return PyStack(status="no-py-spy", reason=f"cannot run py-spy: {exc.strerror or exc}")


def py_result(pid: int, ran: Ran, *, timeout: float, sudo: bool) -> PyStack:
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
