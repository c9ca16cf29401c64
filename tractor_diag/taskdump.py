"""In-process trio task-tree dumps on a signal, for any trio program.

``arm()`` installs a SIGUSR1 handler that appends the complete trio task
tree -- every task, every nursery, and each task's await frames as
``file:line in function`` -- to its dump file,
``/tmp/tractor-diag-taskdump-<pid namespace inode>-<pid>.log`` (two
containers' pid 5 never share one). An out-of-process collector
(``tractor_diag.tasks``) notes the file's size, sends the signal, and reads
the delimited block that gets appended::

    ===== tractor-diag taskdump BEGIN pid=<pid> seq=<n> id=<32 hex> time=<UTC ISO-8601> =====
    ...body...
    ===== tractor-diag taskdump END pid=<pid> seq=<n> id=<32 hex> =====

``parse_dumps()`` splits a file's text back into those blocks. The body::

    reason: signal SIGUSR1
    process: pid=<pid> ppid=<ppid> python=<x.y.z> trio=<version | not imported>
    argv: [...]
    actor: name='<name>' uuid='<uuid>'      (only in a process running a tractor actor)
    interrupted at: <file>:<line> in <func> | <source>
    trio run: active on thread 'MainThread' tasks=<n> nurseries=<n> (...)
                                    -- or --
    trio run: none -- no trio run active on thread 'MainThread' (...)
    Python stack of thread 'MainThread' (most recent call last):
        at <file>:<line> in <func> | <source>

    task '<init>' [root, waiting] id=0x...
      at <file>:<line> in <qualified func> | <source line>
      nursery 1/3 of '<init>' (1 task) [cancel called, shielded, deadline in 1.500s]
        task '<name>' [waiting] id=0x...
          at .../tractor/_context.py:<line> in Context.wait_for_result | ...
          peer: pid=<n>

    other threads: <n>
      thread '<name>' ident=<n> daemon=<bool> (most recent call last):
        at ...

The dump file is also the announcement that this process has a
tractor-diag dumper, which is what makes a collector willing to signal a
process it does not recognise as a tractor actor. ``arm()`` creates it
(mode 0600, never through a symlink, only if the file is ours) and its first
line names the process that armed it::

    ===== tractor-diag taskdump ARMED pid=<pid> start=<ticks> pidns=<inode> signal=<n> dumps=<path or '-'> =====

``start`` is the start time from ``/proc/self/stat`` (clock ticks since
boot). The file stays mapped (``/proc/<pid>/maps``): a collector believes
it only for a process that maps it, so a file left by an earlier process with
the same pid, or by this process before it exec'd another program, announces
nothing, while a child forked without exec (which inherits the mapping with
the handler, even if it closes every fd) is announced and writes its own
file at its first dump. The file
is rotated to ``<name>.1`` before it would grow past ``MAX_FILE_BYTES``.
``TRACTOR_DIAG_TASKDUMP=1`` plus the start-up hook ``startup_env()`` puts on
``PYTHONPATH`` arm the dumper at interpreter start in every Python process of
a launched tree, without changing its code.

A ``peer:`` line follows the frame of a tractor Context, Portal or stream
method: the actor that object talks to, ``pid=<n>`` (today's tractor
carries it in the channel's ``Aid``) or ``addr=<host>:<port>`` (the
released one knows only the channel's remote address).

Indentation is structure (two spaces a level): a task's await frames
(outermost first) are one level below it, its nurseries (outer first) one
level below it, and their child tasks (sorted by name) one level further.
Task states: ``waiting``, ``running`` (the task the signal interrupted,
shown with its live synchronous stack), ``not started``, ``finished``.
Names are always in single quotes (``repr`` escaping). Errors while
formatting appear as ``!!! taskdump error ...`` lines; the END line is
always written.

Why trio's public API and not stackscope: stackscope reconstructs nurseries
by decoding each frame's bytecode, and on Python 3.13 that decoding fails
(``async with <???>``), so everything below the main task's nursery
vanishes from its output. ``Task.child_nurseries``, ``Nursery.child_tasks``
and ``Task.iter_await_frames()`` give the full tree on every Python this
project supports (3.11-3.13), without the bytecode guesswork.

Why the dump runs inside the signal handler and not on the trio loop:
Python runs signal handlers on the main thread between bytecodes, so the
handler sees trio's run state exactly as the interrupted code left it
(trio's run context is a thread-local of the thread running ``trio.run``,
which for a handler is the main thread). A dump routed onto the loop with
``run_sync_soon`` would never happen while a task hogs the loop, which is
precisely when you want one; from the handler, the hogging task shows up as
``running`` with its synchronous stack (``time.sleep``, a busy loop, ...).

Limits, by construction of POSIX/Python signals:

- The handler can only be installed from the main thread, and it only ever
  runs there. A trio run in another thread is not visible to it: the dump
  then says "no trio run active" and lists every thread's Python stack
  (the trio thread's included). Call ``format_task_tree()`` from inside such
  a run to get its tree.
- A main thread stuck inside one long C call that does not return to the
  interpreter (no EINTR) delays the dump until that call returns.

The module is stdlib-only and imports nothing of tractor-diag's (it runs
inside the armed program, loaded by path from a venv that need not have
tractor-diag), so it keeps its own small readers of ``/proc`` instead of
`procfs`'s. It also works on old trio (0.21, the released tractor
runtime's), which lacks ``Task.iter_await_frames``.

Importing this module is cheap: trio is looked up in ``sys.modules`` at dump
time (a process that never imported trio cannot be running it) and is never
imported from a signal handler; stackscope is not used at all.
"""

from __future__ import annotations

import gc
import mmap as _mmap
import os
import re
import signal
import stat as _stat
import sys
import threading
import time
from typing import Any, Callable, Iterator, NamedTuple

__all__ = [
    "ARMED_RE",
    "BEGIN_RE",
    "END_RE",
    "DumpBlock",
    "arm",
    "arm_from_env",
    "arm_watched",
    "default_dump_path",
    "format_dump",
    "format_task_tree",
    "parse_dumps",
    "startup_env",
    "sweep_stale",
    "write_dump",
]

#: Where this module appends dumps by default (and announces its dumper).
DEFAULT_PATH_TEMPLATE = "/tmp/tractor-diag-taskdump-{pidns}-{pid}.log"
#: Where tractor's own stackscope handler appends its dumps.
TRACTOR_PATH_TEMPLATE = "/tmp/tractor-stackscope-{pid}.log"
#: A dump file is rotated to ``<path>.1`` before it would grow past this.
MAX_FILE_BYTES = 8 << 20
#: Set (to anything but "" or "0") to arm at interpreter start; see startup_env().
ENV_VAR = "TRACTOR_DIAG_TASKDUMP"

_ARMED = "{mark} tractor-diag taskdump ARMED pid={pid} start={start} pidns={pidns} signal={sig} dumps={dumps} {mark}"
#: Matches an announcement (a dump file's first line).
ARMED_RE = re.compile(
    r"^===== tractor-diag taskdump ARMED pid=(?P<pid>\d+) start=(?P<start>\d+)"
    r" pidns=(?P<pidns>\d+) signal=(?P<signal>\d+) dumps=(?P<dumps>.*) =====$"
)

_MARK = "====="
_BEGIN = "{mark} tractor-diag taskdump BEGIN pid={pid} seq={seq} id={id} time={time} {mark}"
_END = "{mark} tractor-diag taskdump END pid={pid} seq={seq} id={id} {mark}"

#: Matches a dump's first line; groups ``pid``, ``seq``, ``id``, ``time``.
BEGIN_RE = re.compile(
    r"^===== tractor-diag taskdump BEGIN pid=(?P<pid>\d+) seq=(?P<seq>\d+)"
    r" id=(?P<id>[0-9a-f]{32}) time=(?P<time>\S+) =====$",
    re.M,
)
#: Matches a dump's last line; groups ``pid``, ``seq``, ``id``.
END_RE = re.compile(
    r"^===== tractor-diag taskdump END pid=(?P<pid>\d+) seq=(?P<seq>\d+)"
    r" id=(?P<id>[0-9a-f]{32}) =====$",
    re.M,
)

# Guards against runaway output on pathological trees.
_MAX_DEPTH = 400
_MAX_FRAMES = 300

_INDENT = "  "


# ---------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------


def default_dump_path(pid: int | None = None, pidns: int | None = None) -> str:
    """The dump file of ``pid`` in PID namespace ``pidns`` (default: this
    process, in its own namespace)."""
    if pid is None:
        pid = os.getpid()
    if pidns is None:
        pidns = _pidns_of("self")
    return DEFAULT_PATH_TEMPLATE.format(pid=pid, pidns=pidns)


def _pidns_of(who: str) -> int:
    """Inode of ``/proc/<who>/ns/pid`` (0 where it cannot be read)."""
    try:
        return os.stat(f"/proc/{who}/ns/pid").st_ino
    except OSError:
        return 0


def _start_ticks() -> int:
    """This process's start time, clock ticks after boot (0 if unknown)."""
    try:
        with open("/proc/self/stat", "rb") as f:
            raw = f.read()
        return int(raw[raw.rindex(b")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return 0


def arm(
    path: str | os.PathLike[str] | None = None,
    *,
    stderr: bool = False,
    signum: int = signal.SIGUSR1,
) -> Callable[[], None]:
    """Install a handler for ``signum`` that appends a task-tree dump.

    ``path`` defaults to ``default_dump_path()``; a ``{pid}`` in a given
    path is replaced by the pid at dump time (so a forked child writes its
    own file). Either way the default file is created now and announces the
    dumper (see the module docstring). With ``stderr=True`` each dump also goes to
    stderr. Works before, during and after ``trio.run`` and in processes
    that never run trio; the handler never raises (errors are written into
    the dump) except to let a ``KeyboardInterrupt`` through.

    Must be called from the main thread (a POSIX/Python rule for signal
    handlers); raises ``RuntimeError`` otherwise. Returns a ``disarm()``
    callable that restores the previous handler; it is idempotent, and
    leaves a handler installed by someone else after us in place.
    """
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError(
            "taskdump.arm() must be called from the main thread: Python only "
            "installs and runs signal handlers there"
        )
    _preload()
    signum = signal.Signals(signum)
    dumper = _SignalDumper(path, stderr=stderr, signum=signum)
    previous = signal.signal(signum, dumper)
    _armed.append(dumper)
    dumper.announce()
    _tidy_at_exit()
    disarmed = False

    def disarm() -> None:
        """Restore the handler that was installed before ``arm()``."""
        nonlocal disarmed
        if disarmed:
            return
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("disarm() must be called from the main thread")
        disarmed = True
        if signal.getsignal(signum) is dumper:
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        if dumper in _armed:
            _armed.remove(dumper)
        dumper.unannounce()

    return disarm


def format_task_tree(root: Any = None) -> str:
    """The task tree of the calling thread's trio run, as text.

    Call it from inside ``trio.run`` (from a task, or from a sync function
    the run calls). ``root`` is a ``trio.lowlevel.Task`` to start from
    (default: the run's root task). The calling task is shown as
    ``running`` with its live call stack. Raises ``RuntimeError`` outside a
    trio run.
    """
    import trio

    if root is None:
        root = trio.lowlevel.current_root_task()
        if root is None:
            raise RuntimeError("trio run has no root task yet")
    _preload()
    walker = _TreeWalker(trio, sys._getframe(1))
    return "\n".join(walker.walk(root)) + "\n"


def format_dump(reason: str = "requested", *, frame: Any = None,
                observer: bool = False) -> str:
    """One complete delimited dump block (what the signal handler writes).

    Never raises. ``frame`` is where the dump was requested from (default:
    the caller's frame); it is used to show the running task's stack, or
    the main thread's stack when no trio run is active. ``observer=True``
    when the calling task only looks (a watchdog): it is tagged
    ``observer`` instead of ``running``, so it is not taken for the task
    that holds the loop.
    """
    if frame is None:
        frame = sys._getframe(1)
    _preload()
    return _render_dump(reason, frame, observer)


def write_dump(
    path: str | os.PathLike[str] | None = None,
    *,
    stderr: bool = False,
    reason: str = "requested",
) -> str:
    """Format a dump now and append it like the signal handler would.

    Returns the text written. Never raises: write errors are reported on
    stderr.
    """
    text = format_dump(reason, frame=sys._getframe(1))
    _emit(text, path, stderr)
    return text


class DumpBlock(NamedTuple):
    """One dump parsed back out of a dump file."""

    pid: int
    seq: int
    dump_id: str
    time: str
    #: Lines between the BEGIN and END lines, joined with newlines.
    body: str
    #: False when the END line is missing (the dump is still being written,
    #: or the process died while writing it).
    complete: bool


def parse_dumps(text: str) -> list[DumpBlock]:
    """Split a dump file's text into its taskdump blocks, in file order.

    Text outside the delimiters (e.g. tractor's own stackscope output in
    the same file) is ignored.
    """
    blocks: list[DumpBlock] = []
    pos = 0
    while (begin := BEGIN_RE.search(text, pos)) is not None:
        body_start = begin.end() + 1
        next_begin = BEGIN_RE.search(text, begin.end())
        limit = next_begin.start() if next_begin else len(text)
        end = None
        for cand in END_RE.finditer(text, begin.end(), limit):
            if cand["id"] == begin["id"]:
                end = cand
                break
        body_end = end.start() if end else limit
        blocks.append(
            DumpBlock(
                pid=int(begin["pid"]),
                seq=int(begin["seq"]),
                dump_id=begin["id"],
                time=begin["time"],
                body=text[body_start:body_end].rstrip("\n"),
                complete=end is not None,
            )
        )
        pos = end.end() if end else limit
    return blocks


# ---------------------------------------------------------------------------
# the signal handler
# ---------------------------------------------------------------------------

# Re-entrancy state shared by every armed handler: a signal that arrives
# while a dump is being written (Python runs the new handler between the
# first one's bytecodes) is queued and dumped right after, never interleaved.
_dumping = False
_queued: list[tuple[_SignalDumper, str]] = []
_seq = 0


class _SignalDumper:
    """The installed handler: ``signal.signal(signum, _SignalDumper(...))``."""

    def __init__(self, path: str | os.PathLike[str] | None, *, stderr: bool,
                 signum: int = signal.SIGUSR1):
        self.path = path
        self.stderr = stderr
        self.signum = int(signum)
        self.fd: Any = None  # the announcement, mapped (see announce())

    def __repr__(self) -> str:
        return f"<taskdump handler path={self.path!r} stderr={self.stderr}>"

    def announce(self) -> None:
        """Create (or claim) this process's default dump file with its
        ARMED line, and keep it open; never raises (a problem goes to
        stderr).

        The file stays mapped: that is the proof a collector checks. exec
        drops every mapping, so a program exec'd from this process (same
        pid, same start time) is not taken for an armed one, while a child
        forked without exec inherits the mapping together with the handler.
        """
        target = default_dump_path()
        dumps = "-" if self.path is None else os.fspath(self.path)
        self._close()
        try:
            fd = _open_owned(target)
            try:
                _claim(fd, _armed_line(self.signum, dumps))
                # A shared read-only mapping (it shows in /proc/<pid>/maps)
                # survives what a descriptor does not: a forked child that
                # closes every fd (fork servers do). exec drops it.
                self.fd = _mmap.mmap(fd, 0, flags=_mmap.MAP_SHARED, prot=_mmap.PROT_READ)
            finally:
                os.close(fd)
        except Exception as exc:
            _to_stderr(f"tractor-diag taskdump: cannot announce the dumper in {target}: {exc!r}\n".encode())

    def _close(self) -> None:
        mapping, self.fd = self.fd, None
        if mapping is not None:
            try:
                mapping.close()
            except (OSError, ValueError):
                pass

    def unannounce(self, only_if_unused: bool = False) -> None:
        """Withdraw the announcement: close it (an inherited one too), and
        remove the file if it is still this process's (with
        ``only_if_unused``: and holds no dump)."""
        if not only_if_unused:
            self._close()
        target = default_dump_path()
        try:
            fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return
        try:
            first = os.pread(fd, 4096, 0).split(b"\n", 1)[0].decode("utf-8", "replace")
            st = os.fstat(fd)
        finally:
            os.close(fd)
        m = ARMED_RE.match(first)
        if only_if_unused and st.st_size > len(first.encode()) + 1:
            return
        if m and st.st_uid == os.geteuid() and int(m["pid"]) == os.getpid() \
                and int(m["start"]) == _identity()[1]:
            try:
                os.unlink(target)
            except OSError:
                pass

    def __call__(self, signum: int, frame: Any) -> None:
        global _dumping
        try:
            reason = f"signal {signal.Signals(signum).name}"
        except ValueError:
            reason = f"signal {signum}"
        if _dumping:
            _queued.append((self, reason + " (arrived during the previous dump)"))
            return
        _dumping = True
        try:
            self._dump(reason, frame)
            while _queued:
                dumper, queued_reason = _queued.pop(0)
                dumper._dump(queued_reason, frame)
        finally:
            _dumping = False

    def _dump(self, reason: str, frame: Any) -> None:
        try:
            text = _render_dump(reason, frame)
        except Exception as exc:  # _render_dump guards each section; belt and braces
            dump_id = os.urandom(16).hex()
            pid = os.getpid()
            text = "\n".join([
                _BEGIN.format(mark=_MARK, pid=pid, seq=0, id=dump_id, time="unknown"),
                f"reason: {reason}",
                f"!!! taskdump failed: {exc!r}",
                _END.format(mark=_MARK, pid=pid, seq=0, id=dump_id),
                "",
            ])
        _emit(text, self.path, self.stderr, self.signum)


#: Handlers armed in this process (the fork hook re-announces them).
_armed: list[_SignalDumper] = []
_tidy_registered = False


def _tidy_at_exit() -> None:
    """At a normal exit, remove an announcement that never got a dump: a
    launched tree arms every Python process, and /tmp should not keep one
    empty file per process. A file with dumps in it stays for whoever reads
    it later (as does any file of a process that died by a signal or
    ``os._exit``)."""
    global _tidy_registered
    if _tidy_registered:
        return
    _tidy_registered = True
    import atexit

    def tidy() -> None:
        for dumper in list(_armed):
            try:
                dumper.unannounce(only_if_unused=True)
            except Exception:
                pass

    atexit.register(tidy)


def _after_fork_in_child() -> None:
    """A child forked without exec inherits the armed handler and, with the
    mapped announcement, the proof of it (nothing to write here: an exec that
    may follow drops it). Forget the parent's dump in progress."""
    global _dumping, _identity_cache
    _identity_cache = None
    _dumping = False
    _queued.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# ---------------------------------------------------------------------------
# arming at interpreter start
# ---------------------------------------------------------------------------

#: The directory ``startup_env()`` puts first on ``PYTHONPATH``: a
#: ``sitecustomize`` that arms the dumper when ``ENV_VAR`` is set and then
#: runs the ``sitecustomize`` it shadows.
STARTUP_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_startup")


def startup_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of ``env`` (default: ``os.environ``) that arms the dumper at
    start-up in every Python process started with it, their children
    included, whatever venv they run in (this file is stdlib-only)."""
    out = dict(os.environ if env is None else env)
    out[ENV_VAR] = "1"
    parts = [p for p in out.get("PYTHONPATH", "").split(os.pathsep) if p]
    if STARTUP_DIR not in parts:
        parts.insert(0, STARTUP_DIR)
    out["PYTHONPATH"] = os.pathsep.join(parts)
    return out


def sweep_stale(directory: str = "/tmp") -> int:
    """Remove this PID namespace's announcements that hold no dump and whose
    process is gone (it died by a signal or ``os._exit``, so it could not
    tidy up); returns how many. Only files of our own user; a file with a
    dump in it is left for whoever reads it. Called when a launched tree
    ends (``tractor-diag run``, the pytest plugin)."""
    prefix = f"tractor-diag-taskdump-{_pidns_of('self')}-"
    removed = 0
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    for name in names:
        if not (name.startswith(prefix) and name.endswith(".log")):
            continue
        path = os.path.join(directory, name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            if not _stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_size > 4096:
                continue
            data = os.pread(fd, 4096, 0)
        except OSError:
            continue
        finally:
            os.close(fd)
        m = ARMED_RE.match(data.decode("utf-8", "replace").rstrip("\n"))
        if m is None or data.count(b"\n") != 1 or _alive(int(m["pid"]), int(m["start"])):
            continue
        try:
            # only the file judged: a successor arming under the same name
            # since (same pid) keeps its announcement
            now = os.stat(path, follow_symlinks=False)
            if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                continue
            os.unlink(path)
            removed += 1
        except OSError:
            pass
    return removed


def _alive(pid: int, start: int) -> bool:
    """``pid`` runs and started at ``start`` ticks (in our PID namespace)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
        return int(raw[raw.rindex(b")") + 2:].split()[19]) == start
    except (OSError, ValueError, IndexError):
        return False


def arm_from_env() -> Callable[[], None] | None:
    """``arm()`` when ``ENV_VAR`` asks for it; never raises.

    Leaves alone a process that already handles (or ignores) the signal:
    its own handler is its business, and an ignored SIGUSR1 was inherited
    on purpose.
    """
    if os.environ.get(ENV_VAR, "") in ("", "0"):
        return None
    try:
        if threading.current_thread() is not threading.main_thread():
            return None
        if signal.getsignal(signal.SIGUSR1) is not signal.SIG_DFL:
            return None
        return arm_watched()
    except Exception as exc:
        _to_stderr(f"tractor-diag taskdump: not armed at start-up: {exc!r}\n".encode())
        return None


def arm_watched() -> Callable[[], None]:
    """``arm()``, and withdraw the announcement if the program later
    installs a SIGUSR1 handler of its own (see ``_watch_replacement``)."""
    disarm = arm()
    _watch_replacement()
    return disarm


def _is_tractor_stackscope(handler: Any) -> bool:
    module = getattr(handler, "__module__", "") or ""
    return module.startswith("tractor.") and "stackscope" in module


def _watch_replacement() -> None:
    """Withdraw the announcement when the program installs its own handler.

    Armed at start-up, the dumper is there before the program's code runs;
    a program that then takes SIGUSR1 for itself ("graceful restart") must
    stop being announced as ours, or a collector would signal it on our
    word. The one exception is tractor's own stackscope handler: the user
    asked for our dumper by launching under tractor-diag, and stackscope's
    dump shows no task below the main nursery on Python 3.13, so ours stays.
    """
    original = signal.signal
    if getattr(original, "_tractor_diag_watch", False):
        return

    def watched_signal(signalnum, handler):
        if _is_tractor_stackscope(handler):
            current = signal.getsignal(signalnum)
            if isinstance(current, _SignalDumper) and current in _armed:
                # Keep ours: tractor's stackscope dump shows no task below
                # the main nursery on Python 3.13, and the collector asks
                # every process itself (no relay needed).
                return current
        previous = original(signalnum, handler)
        if not isinstance(handler, _SignalDumper):
            for dumper in list(_armed):
                if dumper.signum == signalnum:
                    _armed.remove(dumper)
                    dumper.unannounce()
        return previous

    watched_signal._tractor_diag_watch = True  # type: ignore[attr-defined]
    watched_signal.__doc__ = original.__doc__
    watched_signal.__wrapped__ = original  # type: ignore[attr-defined]
    signal.signal = watched_signal


# ---------------------------------------------------------------------------
# rendering
# ---------------------------------------------------------------------------

_linecache: Any = None
_traceback: Any = None
_escape: Any = None


def _preload() -> None:
    """Import what rendering needs now, not inside a signal handler.

    A handler that imports could re-enter an import the main thread was in
    the middle of when the signal arrived.
    """
    global _linecache, _traceback, _escape
    if _traceback is None:
        import linecache
        import traceback

        _linecache, _traceback = linecache, traceback
    if _escape is None:
        _escape = _load_escape()


def _load_escape() -> Callable[[str], str]:
    """``safetext.escape``, also when this file runs alone (loaded by path
    by the start-up hook in a venv without tractor-diag): safetext.py is
    stdlib-only and sits next to it."""
    if __package__:
        try:
            from .safetext import escape

            return escape
        except ImportError:
            pass
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "safetext.py")
    try:
        spec = importlib.util.spec_from_file_location("_tractor_diag_safetext", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.escape
    except Exception:
        # Last resort: every control character as a backslash escape.
        return lambda text: "".join(
            c if c.isprintable() else f"\\x{ord(c):02x}" if ord(c) < 256 else f"\\u{ord(c):04x}"
            for c in text)


def _render_dump(reason: str, frame: Any, observer: bool = False) -> str:
    """Whole block: BEGIN line, header, trio section, threads, END line."""
    global _seq
    _preload()
    _seq += 1
    pid = os.getpid()
    dump_id = os.urandom(16).hex()
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
    stamp += f".{int(now % 1 * 1_000_000):06d}Z"
    lines = [_BEGIN.format(mark=_MARK, pid=pid, seq=_seq, id=dump_id, time=stamp)]
    for section in (_header_section, _trio_section, _threads_section):
        try:
            if section is _trio_section:
                lines.extend(_trio_section(reason, frame, observer))
            else:
                lines.extend(section(reason, frame))
        except Exception as exc:
            lines.extend(_error_lines(f"while formatting {section.__name__}", exc))
    lines.append(_END.format(mark=_MARK, pid=pid, seq=_seq, id=dump_id))
    return "\n".join(lines) + "\n"


def _error_lines(what: str, exc: BaseException) -> list[str]:
    out = [f"!!! taskdump error {what}: {type(exc).__name__}: {exc}"]
    try:
        for chunk in _traceback.format_exception(exc):
            out.extend("!!!   " + ln for ln in chunk.rstrip("\n").split("\n"))
    except Exception:
        pass
    return out


def _header_section(reason: str, frame: Any) -> list[str]:
    trio = sys.modules.get("trio")
    trio_version = getattr(trio, "__version__", None) if trio else None
    lines = [
        f"reason: {reason}",
        f"process: pid={os.getpid()} ppid={os.getppid()}"
        f" python={'.'.join(map(str, sys.version_info[:3]))}"
        f" trio={trio_version or 'not imported'}",
        f"argv: {sys.argv!r}",
    ]
    uid = _tractor_uid()
    if uid is not None:
        lines.append(f"actor: name={uid[0]!r} uuid={uid[1]!r}")
    if frame is not None:
        lines.append("interrupted at: " + _frame_text(frame, frame.f_lineno))
    return lines


# Where tractor keeps the actor a process runs: today's runtime, then the
# released one. Only attributes are read (no tractor function is called
# from inside a signal handler).
_TRACTOR_STATE = ("tractor.runtime._state", "tractor._state")


def _tractor_uid() -> tuple[str, str] | None:
    """(name, uuid) of the tractor actor this process runs, if any: what
    names an actor that nothing outside does (mp backends, a root)."""
    for modname in _TRACTOR_STATE:
        state = sys.modules.get(modname)
        actor = getattr(state, "_current_actor", None) if state is not None else None
        if actor is None:
            continue
        aid = getattr(actor, "_aid", None) or getattr(actor, "aid", None)
        if aid is not None and not callable(aid):
            name, uuid = getattr(aid, "name", None), getattr(aid, "uuid", None)
        else:
            uid = getattr(actor, "_uid", None) or getattr(actor, "uid", None)
            name, uuid = (uid if isinstance(uid, tuple) and len(uid) == 2 else (None, None))
        if isinstance(name, str) and name:
            return name, str(uuid)
    return None


def _trio_section(reason: str, frame: Any, observer: bool = False) -> list[str]:
    thread = threading.current_thread()
    root = _current_root_task()
    if root is None:
        lines = [
            f"trio run: none -- no trio run active on thread {_quoted(thread.name)}"
            " (before or after trio.run, or trio runs in another thread:"
            " see 'other threads')",
            "",
            f"Python stack of thread {_quoted(thread.name)} (most recent call last):",
        ]
        lines.extend(_INDENT * 2 + ln for ln in _stack_lines(frame))
        return lines
    walker = _TreeWalker(sys.modules["trio"], frame, observer)
    tree = walker.walk(root)
    return [
        f"trio run: active on thread {_quoted(thread.name)}"
        f" tasks={walker.n_tasks} nurseries={walker.n_nurseries}"
        " (walked with trio's public Task/Nursery API)",
        "",
        *tree,
    ]


def _threads_section(reason: str, frame: Any) -> list[str]:
    me = threading.get_ident()
    frames = sys._current_frames()
    # threading._active is read without its lock on purpose: the signal may
    # have interrupted the main thread while it held that (non-reentrant)
    # lock, e.g. inside Thread.start().
    names = dict(getattr(threading, "_active", {}))
    others = sorted(ident for ident in frames if ident != me)
    lines = ["", f"other threads: {len(others)}"]
    for ident in others:
        t = names.get(ident)
        name = t.name if t is not None else "?"
        daemon = f" daemon={t.daemon}" if t is not None else ""
        lines.append(f"{_INDENT}thread {_quoted(name)} ident={ident}{daemon} (most recent call last):")
        lines.extend(_INDENT * 2 + ln for ln in _stack_lines(frames[ident]))
    return lines


def _current_root_task() -> Any:
    """The root task of this thread's trio run, or None. Never imports trio."""
    trio = sys.modules.get("trio")
    lowlevel = getattr(trio, "lowlevel", None)
    if lowlevel is None:
        return None
    try:
        return lowlevel.current_root_task()
    except RuntimeError:
        return None


def _quoted(name: object) -> str:
    """``repr(str(name))``, but always in single quotes (a fixed format)."""
    text = repr(str(name))
    if text.startswith('"'):
        text = "'" + text[1:-1].replace("'", "\\'") + "'"
    return text


def _frame_text(frame: Any, lineno: int | None) -> str:
    code = frame.f_code
    filename = code.co_filename
    func = getattr(code, "co_qualname", code.co_name)
    text = f"{filename}:{lineno} in {func}"
    try:
        src = _linecache.getline(filename, lineno or 0, frame.f_globals).strip()
    except Exception:
        src = ""
    # One line whatever the file name, function name or source line holds:
    # a newline there would forge lines of the dump (and of its parse).
    return _escape(f"{text} | {src}" if src else text)


# tractor objects that talk to one other actor over one channel: a wait in
# one of their methods is a wait for that actor
_CHANNEL_HOLDERS = ("Context", "Portal", "MsgStream", "ReceiveMsgStream")


def _peer_of(frame: Any) -> str | None:
    """Whom a tractor frame waits on, when its ``self`` talks over one
    channel: ``pid=<n>`` (today's tractor carries the peer's pid in its
    ``Aid``), else ``addr=<host>:<port>`` (the released one only knows the
    channel's remote address). Plain attribute reads of a suspended frame's
    locals; nothing is called."""
    try:
        if "/tractor/" not in frame.f_code.co_filename:
            return None
        obj = frame.f_locals.get("self")
        if type(obj).__name__ not in _CHANNEL_HOLDERS:
            return None
        d = vars(obj)
        chan = d.get("chan") or d.get("channel") or d.get("_chan")
        if chan is None and d.get("_ctx") is not None:
            ctx = vars(d["_ctx"])
            chan = ctx.get("chan") or ctx.get("_chan")
        if chan is None:
            return None
        c = vars(chan)
        aid = c.get("aid") or c.get("_aid")
        pid = getattr(aid, "pid", None) if aid is not None else None
        if isinstance(pid, int) and not isinstance(pid, bool):
            return f"pid={pid}"
        raddr = c.get("_raddr")
        if raddr is None and c.get("msgstream") is not None:  # 0.1.0a5: the transport's
            raddr = vars(c["msgstream"]).get("_raddr")
        if (isinstance(raddr, tuple) and len(raddr) == 2 and isinstance(raddr[0], str)
                and isinstance(raddr[1], int)):
            return _escape(f"addr={raddr[0]}:{raddr[1]}")
    except Exception:
        return None
    return None


def _stack_lines(frame: Any) -> list[str]:
    """``at file:line in func | source`` lines, outermost first."""
    chain = []
    while frame is not None and len(chain) < _MAX_FRAMES:
        chain.append(frame)
        frame = frame.f_back
    lines = ["... (outer frames not shown)"] if frame is not None else []
    return lines + ["at " + _frame_text(f, f.f_lineno) for f in reversed(chain)]


def _await_frames(task: Any) -> Iterator[tuple[Any, int]]:
    """``task.iter_await_frames()``, or the same walk where trio lacks it.

    trio < 0.22 (what the released tractor 0.1.0a5 runs on) has no
    ``Task.iter_await_frames``; follow the await chain the same way it does.
    """
    method = getattr(task, "iter_await_frames", None)
    if method is not None:
        yield from method()
        return
    coro = task.coro
    while coro is not None:
        if hasattr(coro, "cr_frame"):
            if coro.cr_frame is not None:
                yield coro.cr_frame, coro.cr_frame.f_lineno
            coro = coro.cr_await
        elif hasattr(coro, "gi_frame"):
            if coro.gi_frame is not None:
                yield coro.gi_frame, coro.gi_frame.f_lineno
            coro = coro.gi_yieldfrom
        elif type(coro).__name__ in ("async_generator_asend", "async_generator_athrow"):
            # the async generator is only reachable through the gc
            for referent in gc.get_referents(coro):
                if hasattr(referent, "ag_frame"):
                    if referent.ag_frame is not None:
                        yield referent.ag_frame, referent.ag_frame.f_lineno
                    coro = referent.ag_await
                    break
            else:
                return
        else:
            return


def _coro_state(coro: Any) -> str:
    """not started / waiting / running / finished, for coroutines and generators."""
    for prefix in ("cr", "gi"):
        if hasattr(coro, f"{prefix}_frame"):
            if getattr(coro, f"{prefix}_running", False):
                return "running"
            if getattr(coro, f"{prefix}_suspended", False):
                return "waiting"
            if getattr(coro, f"{prefix}_frame") is None:
                return "finished"
            return "not started"
    return "unknown"


class _TreeWalker:
    """Walk a trio task tree with trio's public API, producing text lines.

    Layout (indentation is structural, two spaces per step): a task line,
    its await frames one level deeper (``at ...``), then each of its
    nurseries one level deeper (``nursery ...``) with their child tasks one
    level below that.
    """

    def __init__(self, trio: Any, frame: Any, observer: bool = False):
        self.trio = trio
        self.frame = frame
        self.observer = observer
        self.n_tasks = 0
        self.n_nurseries = 0
        self._seen: set[int] = set()
        try:
            self.current_task = trio.lowlevel.current_task()
        except RuntimeError:
            self.current_task = None  # the scheduler, not a task, was interrupted
        try:
            self.now = trio.current_time()
        except Exception:
            self.now = None

    def walk(self, root: Any) -> list[str]:
        lines: list[str] = []
        self._task(root, 0, lines, is_root=True)
        return lines

    def _task(self, task: Any, depth: int, lines: list[str], is_root: bool = False) -> None:
        pad = _INDENT * depth
        if id(task) in self._seen or depth > _MAX_DEPTH:
            lines.append(f"{pad}task {_quoted(task.name)} (already shown or too deep)")
            return
        self._seen.add(id(task))
        self.n_tasks += 1
        running = task is self.current_task
        tags = ["root"] if is_root else []
        if running:
            tags.append("observer" if self.observer else "running")
        else:
            tags.append(_coro_state(task.coro))
        extra = ""
        eventual = task.eventual_parent_nursery
        if eventual is not None:
            extra = (
                "  (inside nursery.start(): moves to a nursery of"
                f" {_quoted(eventual.parent_task.name)} on task_status.started())"
            )
        lines.append(f"{pad}task {_quoted(task.name)} [{', '.join(tags)}] id={id(task):#x}{extra}")
        try:
            lines.extend(f"{pad}{_INDENT}{ln}" for ln in self._frames(task, running))
        except Exception as exc:
            lines.extend(f"{pad}{_INDENT}{ln}" for ln in _error_lines("reading await frames", exc))
        nurseries = task.child_nurseries
        for index, nursery in enumerate(nurseries, 1):
            self._nursery(nursery, index, len(nurseries), task, depth + 1, lines)

    def _nursery(self, nursery: Any, index: int, count: int, parent: Any, depth: int, lines: list[str]) -> None:
        self.n_nurseries += 1
        children = sorted(nursery.child_tasks, key=lambda t: (t.name, id(t)))
        n = len(children)
        desc = f"{n} task{'s' if n != 1 else ''}" if n else "no tasks"
        flags = self._scope_flags(nursery.cancel_scope)
        lines.append(
            f"{_INDENT * depth}nursery {index}/{count} of {_quoted(parent.name)} ({desc})"
            + (f" [{', '.join(flags)}]" if flags else "")
        )
        for child in children:
            self._task(child, depth + 1, lines)

    def _scope_flags(self, scope: Any) -> list[str]:
        flags = []
        try:
            if scope.cancel_called:
                flags.append("cancel called")
            if scope.shield:
                flags.append("shielded")
            deadline = scope.deadline
            if deadline != float("inf") and self.now is not None:
                left = deadline - self.now
                flags.append(f"deadline in {left:.3f}s" if left >= 0 else f"deadline passed {-left:.3f}s ago")
        except Exception:
            pass
        return flags

    def _frames(self, task: Any, running: bool) -> Iterator[str]:
        if running and self.frame is not None:
            # A running task's coroutine has no await chain to follow; its
            # live frames are the interrupted stack, from the task's
            # coroutine frame down to where the signal (or caller) was.
            top = getattr(task.coro, "cr_frame", None) or getattr(task.coro, "gi_frame", None)
            chain = []
            f = self.frame
            while f is not None and len(chain) < _MAX_FRAMES:
                chain.append(f)
                if f is top:
                    break
                f = f.f_back
            if chain and chain[-1] is top:
                for f in reversed(chain):
                    yield "at " + _frame_text(f, f.f_lineno)
                return
        for count, (f, lineno) in enumerate(_await_frames(task)):
            if count >= _MAX_FRAMES:
                yield "at ... (more frames not shown)"
                return
            yield "at " + _frame_text(f, lineno)
            peer = _peer_of(f)
            if peer:
                yield "peer: " + peer


# ---------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------


_identity_cache: tuple[int, int, int] | None = None


def _identity() -> tuple[int, int, int]:
    """(pid, start ticks, pid namespace inode) of this process."""
    global _identity_cache
    if _identity_cache is None or _identity_cache[0] != os.getpid():
        _identity_cache = (os.getpid(), _start_ticks(), _pidns_of("self"))
    return _identity_cache


def _armed_line(signum: int, dumps: str) -> bytes:
    pid, start, pidns = _identity()
    return (_ARMED.format(mark=_MARK, pid=pid, start=start, pidns=pidns, sig=signum,
                          dumps=dumps) + "\n").encode("utf-8", "backslashreplace")


def _target_path(path: str | os.PathLike[str] | None) -> str:
    if path is None:
        return default_dump_path()
    return os.fspath(path).replace("{pid}", str(os.getpid()))


def _open_owned(target: str) -> int:
    """An fd for appending to ``target``: created 0600 if missing, never
    through a symlink, refused unless it is a regular file of ours (the
    default name in /tmp is predictable: someone may have planted it)."""
    flags = os.O_RDWR | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(target, flags | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        fd = os.open(target, flags)
    try:
        st = os.fstat(fd)
        if not _stat.S_ISREG(st.st_mode):
            raise PermissionError(f"{target} is not a regular file")
        if st.st_uid != os.geteuid():
            raise PermissionError(f"{target} belongs to uid {st.st_uid}, not to us")
        if st.st_mode & 0o077:
            os.fchmod(fd, 0o600)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _claim(fd: int, header: bytes) -> None:
    """Make ``header`` the file's first line, emptying a file left by an
    earlier process (same pid, other start time) or an older arm()."""
    if os.pread(fd, len(header), 0) != header:
        os.ftruncate(fd, 0)
        _write_all(fd, header)


def _emit(text: str, path: str | os.PathLike[str] | None, to_stderr: bool,
          signum: int = signal.SIGUSR1) -> None:
    """Append ``text`` to the dump file (and stderr); never raises."""
    data = text.encode("utf-8", "backslashreplace")
    target = _target_path(path)
    announced = path is None
    problem = None
    if len(data) > MAX_FILE_BYTES // 2:
        cut = data[: MAX_FILE_BYTES // 2].rsplit(b"\n", 1)[0]
        end = data.rstrip(b"\n").rsplit(b"\n", 1)[-1]
        data = cut + b"\n!!! taskdump truncated: the dump was larger than the file cap\n" + end + b"\n"
    try:
        fd = _open_owned(target)
        try:
            if announced:
                _claim(fd, _armed_line(signum, "-"))
            if os.fstat(fd).st_size + len(data) > MAX_FILE_BYTES:
                # Rotate: the previous file's dumps stay readable as .1.
                os.rename(target, target + ".1")
                os.close(fd)
                fd = _open_owned(target)
                if announced:
                    _claim(fd, _armed_line(signum, "-"))
            # O_APPEND: one write() per block keeps blocks whole even if
            # another writer appends to the same file.
            _write_all(fd, data)
        finally:
            os.close(fd)
    except Exception as exc:
        problem = f"tractor-diag taskdump: cannot append to {target}: {exc!r}\n"
    if to_stderr or problem:
        _to_stderr((problem.encode() if problem else b"") + data)


def _to_stderr(payload: bytes) -> None:
    try:
        # Straight to the fd: sys.stderr's buffer lock may be held by the
        # very code the signal interrupted.
        fileno = sys.stderr.fileno() if sys.stderr is not None else 2
    except Exception:
        fileno = 2
    try:
        _write_all(fileno, payload)
    except Exception:
        pass


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
