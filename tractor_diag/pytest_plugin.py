"""pytest integration: hung-dump bundles of the test's own process tree.

- ``fail_after_w_trace(seconds, label=None)``: async context manager, like
  ``trio.fail_after``, that writes a `dump-all` bundle of the test's tree
  *at the deadline*, before cancelling the body (so the bundle shows the
  hang, not the cancellation that follows), then raises ``trio.TooSlowError``
  naming the bundle.
- ``afk_alarm_w_trace(seconds, label=None)``: sync context manager, the
  outer guard for a wedged main thread (a trio loop blocked in sync code
  never reaches its deadline): SIGALRM writes a bundle and raises
  `AfkAlarmTimeout` in the main thread.
- fixtures ``fail_after_w_trace_factory`` / ``afk_alarm_w_trace_factory``:
  the same with the label defaulting to the test's node id.
- the plugin (entry point ``pytest11: tractor_diag``) lists every bundle
  taken in the terminal summary, and adds ``--hung-dump-dir``.

Opt-in checks (off unless asked for)
------------------------------------
``--tractor-leak-check=off|warn|fail`` (ini: ``tractor_leak_check``; the
command line wins; default ``off``)
    Before each test's setup, a baseline: every process (pid + create time)
    and the socket files of the bindspace dir. After its teardown, what the
    test left behind:

    - *orphaned actors* of the current user (`reap.make_plan`'s default
      mode: adopted by init or a subreaper, with their actor subtrees) that
      were not in the baseline and share pytest's session id (so an orphan
      made meanwhile by an unrelated program in another terminal, CI job or
      test run is not blamed on this test);
    - actors below the pytest process still running;
    - socket files new in the bindspace dir (resolved as the runtime does,
      with ``XDG_RUNTIME_DIR`` as it is at the time of the check).

    Leftovers get `LEAK_SETTLE` seconds to go away on their own (a normal
    async teardown finishes in that time) before they count as leaked.
    ``warn`` emits a `TractorLeakWarning` naming each pid, actor name and
    socket file; ``fail`` makes the test ERROR at teardown with the same
    text (when the teardown itself already failed, the leaks come as a
    warning instead). The check only looks: it never signals a process or
    unlinks a file. ``@pytest.mark.tractor_allow_leaks`` skips it for one
    test (a wider-scoped fixture that keeps an actor running across tests
    would otherwise be blamed on the first test that requested it).

``--tractor-reap-at-end`` (flag, default off)
    At session end, the safe reaper (`reap.execute`: SIGINT,
    `REAP_GRACE` seconds, SIGKILL; every target re-identified by pid,
    create time, uid and actor-ness right before each signal) is run on:
    actors below the pytest process, and orphaned actors that appeared
    during the session in pytest's session id (the leak check's recorded
    leaks included). Then the UDS sweep unlinks the socket files that
    appeared during the session and whose binder is gone (``orphaned-dead``).
    Nothing that existed when the session started is signalled or
    unlinked, nor any non-actor process. The terminal summary lists what
    was reaped and unlinked.

    Under pytest-xdist each worker checks and reaps on its own; an orphan
    made by one worker's test can be reported (and reaped) by another.

The capture always runs in a separate thread with a wall-clock bound (and
every py-spy dump has its own timeout and is killed with its process group),
so a wedged py-spy can delay a failing test by at most the bound, never hang
it.

Loaded into every pytest run of an environment with tractor-diag installed,
so it stays inert unless used: importing it imports neither trio, msgspec,
psutil nor platformdirs, nor any other part of tractor-diag; the library is
imported inside the hooks only once an option asks for it, and the hooks do
nothing until then.
"""
from __future__ import annotations

import os
import signal
import stat
import threading
import time
from contextlib import asynccontextmanager, contextmanager

import pytest

#: Wall-clock bound on one capture (snapshot + stacks + task trees + write).
CAPTURE_TIMEOUT = 20.0
#: Bound on each py-spy dump inside a capture.
DUMP_TIMEOUT = 5.0
#: Where bundles go when neither an ``out_dir`` nor ``--hung-dump-dir`` is given.
DUMP_DIR_ENV = "TRACTOR_DIAG_DUMP_DIR"
#: ``--tractor-leak-check`` values.
LEAK_MODES = ("off", "warn", "fail")
#: Seconds a test's leftovers get to exit (or unlink their sockets) on their
#: own before they count as leaked.
LEAK_SETTLE = 1.0
_SETTLE_POLL = 0.05
#: SIGINT-to-SIGKILL grace of the session-end reap.
REAP_GRACE = 2.0
ALLOW_MARK = "tractor_allow_leaks"


class Taken:
    """One capture attempt, for the terminal summary."""

    def __init__(self, label: str, path: str | None, error: str | None):
        self.label = label
        self.path = path
        self.error = error

    def __repr__(self) -> str:
        return f"Taken({self.label!r}, path={self.path!r}, error={self.error!r})"


#: Every capture attempt of this session, in order.
TAKEN: list[Taken] = []
_options: dict[str, str | None] = {"dir": None}


class AfkAlarmTimeout(TimeoutError):
    """Raised in the main thread by `afk_alarm_w_trace` when time is up."""


def current_test_label() -> str | None:
    """The running test's node id (from ``$PYTEST_CURRENT_TEST``)."""
    current = os.environ.get("PYTEST_CURRENT_TEST")
    if not current:
        return None
    return current.rsplit(" (", 1)[0]


def _out_dir(out_dir: str | None) -> str | None:
    return out_dir or _options["dir"] or os.environ.get(DUMP_DIR_ENV) or None


def own_task_tree(reason: str, frame=None, *, observer: bool = False):
    """This process's trio task tree, written in-process (no signal), as a
    `TaskTree` for a bundle. Call it on the thread running trio (a task, or
    a signal handler interrupting it); elsewhere it says no run is active."""
    import sys

    from .stackmodel import TaskTree
    from .taskdump import format_dump, parse_dumps
    from .tasks import parse_task_lines

    text = format_dump(reason, frame=frame or sys._getframe(1), observer=observer)
    blocks = parse_dumps(text)
    body = blocks[0].body if blocks else text
    return TaskTree(status="collected", text=body, format="tractor-diag",
                    complete=bool(blocks and blocks[0].complete),
                    tasks=parse_task_lines(body), reason=f"written in-process: {reason}")


def capture_bundle(label: str, *, out_dir: str | None = None,
                   timeout: float = CAPTURE_TIMEOUT, root: int | None = None,
                   known_tasks: dict | None = None,
                   hints: dict[int, str] | None = None) -> Taken:
    """Write a bundle of the tree under ``root`` (default: this process) in
    a worker thread, waiting at most ``timeout`` seconds for it.
    ``known_tasks`` (pid -> `TaskTree`, e.g. `own_task_tree`) are used as
    they are; ``hints`` (pid -> why it is stuck) lead the summary.

    Safe from any thread, including a signal handler's. Never raises: a
    failure (or a capture still running at the bound, which is abandoned)
    is recorded in the returned `Taken` and in the terminal summary.
    """
    root = os.getpid() if root is None else root
    box: dict[str, object] = {}
    started = time.monotonic()

    def work() -> None:
        try:
            from .bundle import dump_all
            from .stackmodel import StacksOptions

            # Leave the capture room to finish its writes before the bound.
            deadline = started + timeout - max(0.25, timeout / 4)
            options = StacksOptions(timeout=min(DUMP_TIMEOUT, timeout / 2),
                                    task_timeout=min(2.0, timeout / 4))
            box["meta"] = dump_all([root], label=label, out_dir=_out_dir(out_dir),
                                   options=options, deadline=deadline,
                                   known_tasks=known_tasks, hints=hints)
        except BaseException as exc:  # noqa: BLE001 - reported, never raised
            box["error"] = f"{type(exc).__name__}: {exc}"

    worker = threading.Thread(target=work, name="tractor-diag-capture", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        taken = Taken(label, None, f"capture still running after {timeout:.0f}s: abandoned")
    elif "meta" in box:
        taken = Taken(label, box["meta"].path, None)  # type: ignore[attr-defined]
    else:
        taken = Taken(label, None, str(box.get("error", "capture failed")))
    TAKEN.append(taken)
    return taken


def _describe(taken: Taken) -> str:
    return f"hung-dump bundle: {taken.path}" if taken.path else f"no hung-dump bundle ({taken.error})"


@asynccontextmanager
async def fail_after_w_trace(seconds: float, label: str | None = None, *,
                             out_dir: str | None = None,
                             capture_timeout: float = CAPTURE_TIMEOUT):
    """``trio.fail_after(seconds)`` that writes a bundle of the test's
    process tree when the deadline passes, then cancels the body and raises
    ``trio.TooSlowError`` (its message names the bundle).

    The deadline is on trio's clock. A system task waits for it and hands
    the capture to a worker thread, so the trio loop keeps running during
    the capture and user exceptions are not wrapped in exception groups.
    """
    import trio

    label = label or current_test_label() or "fail_after_w_trace"
    deadline = trio.current_time() + seconds
    body = trio.CancelScope()
    watch = trio.CancelScope()
    result: list[Taken] = []
    guarded = trio.lowlevel.current_task().name

    async def watchdog() -> None:
        with watch:
            await trio.sleep_until(deadline)
            why = f"fail_after_w_trace({seconds}s) ran out in task {guarded!r}"
            try:
                # The test's own tree, taken here on the trio thread: this
                # process has no dumper for the capture to ask.
                known = {os.getpid(): own_task_tree(why, observer=True)}
            except Exception as exc:  # noqa: BLE001 - the bundle says what is missing
                from .stackmodel import TaskTree

                known = {os.getpid(): TaskTree(status="error", reason=f"in-process dump: {exc!r}")}
            try:
                taken = await trio.to_thread.run_sync(
                    lambda: capture_bundle(label, out_dir=out_dir, timeout=capture_timeout,
                                           known_tasks=known, hints={os.getpid(): why}))
            except Exception as exc:  # noqa: BLE001 - a system task must not raise
                taken = Taken(label, None, f"{type(exc).__name__}: {exc}")
            result.append(taken)
            body.cancel()

    trio.lowlevel.spawn_system_task(watchdog, name=f"tractor-diag watchdog {label}")
    try:
        with body:
            yield
    finally:
        watch.cancel()
    if body.cancelled_caught:
        what = _describe(result[0]) if result else "no hung-dump bundle"
        raise trio.TooSlowError(f"{label}: still running after {seconds}s; {what}")


@contextmanager
def afk_alarm_w_trace(seconds: float, label: str | None = None, *,
                      out_dir: str | None = None,
                      capture_timeout: float = CAPTURE_TIMEOUT):
    """A SIGALRM guard around a block: after ``seconds`` of wall time, write
    a bundle of the test's tree and raise `AfkAlarmTimeout` in the main
    thread (interrupting a ``time.sleep``, a blocking wait, a wedged loop).

    Main thread only (a POSIX/Python rule for signal handlers). The handler
    waits for the capture, bounded by ``capture_timeout``. A timer that was
    armed before is restored afterwards with its remaining time.
    """
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("afk_alarm_w_trace needs the main thread (it uses SIGALRM)")
    if seconds <= 0:
        raise ValueError("afk_alarm_w_trace needs a positive number of seconds")
    label = label or current_test_label() or "afk_alarm_w_trace"
    fired: list[Taken] = []

    def on_alarm(signum, frame):
        if fired:
            return
        why = f"afk_alarm_w_trace({seconds}s) went off"
        try:
            # In the handler, on the main thread: a trio run wedged in sync
            # code shows the task that holds it as running, with its stack.
            known = {os.getpid(): own_task_tree(why, frame)}
        except Exception:  # noqa: BLE001 - the capture asks the usual way
            known = None
        taken = capture_bundle(label, out_dir=out_dir, timeout=capture_timeout,
                               known_tasks=known, hints={os.getpid(): why})
        fired.append(taken)
        raise AfkAlarmTimeout(f"{label}: still running after {seconds}s; {_describe(taken)}")

    entered = time.monotonic()
    previous = signal.signal(signal.SIGALRM, on_alarm)
    outer_left, outer_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer_left > 0:
            left = max(0.001, outer_left - (time.monotonic() - entered))
            signal.setitimer(signal.ITIMER_REAL, left, outer_interval)


# ---------------------------------------------------------------------------
# the plugin
# ---------------------------------------------------------------------------

def _labelled(guard, request):
    def factory(seconds: float, label: str | None = None, **kw):
        return guard(seconds, label or request.node.nodeid, **kw)

    return factory


@pytest.fixture
def fail_after_w_trace_factory(request):
    """``factory(seconds, label=None, **kw)`` -> `fail_after_w_trace` with the
    label defaulting to this test's node id."""
    return _labelled(fail_after_w_trace, request)


@pytest.fixture
def afk_alarm_w_trace_factory(request):
    """``factory(seconds, label=None, **kw)`` -> `afk_alarm_w_trace` with the
    label defaulting to this test's node id."""
    return _labelled(afk_alarm_w_trace, request)


def pytest_addoption(parser):
    group = parser.getgroup("tractor-diag")
    group.addoption(
        "--hung-dump-dir", default=None, metavar="DIR",
        help="where fail_after_w_trace/afk_alarm_w_trace write hung-dump bundles "
             f"(default: ${DUMP_DIR_ENV}, else $XDG_CACHE_HOME/tractor/hung-dumps)",
    )
    group.addoption(
        "--tractor-leak-check", default=None, choices=LEAK_MODES, dest="tractor_leak_check",
        help="after each test, look for tractor actors and bindspace socket files it left "
             "behind: 'warn' emits a TractorLeakWarning, 'fail' makes the test error at "
             "teardown (default: the tractor_leak_check ini value, else off)",
    )
    group.addoption(
        "--tractor-reap-at-end", action="store_true", default=False, dest="tractor_reap_at_end",
        help="at session end, SIGINT (then SIGKILL) the tractor actors this session left "
             "running (below pytest, or orphaned during the session) and unlink their stale "
             "socket files; never anything that existed before the session",
    )
    parser.addini("tractor_leak_check", default="off",
                  help="default of --tractor-leak-check: off, warn or fail")
    group.addoption(
        "--tractor-dump-on-timeout", action="store_true", default=None,
        dest="tractor_dump_on_timeout",
        help="when pytest-timeout is about to end a hung test, first write a hung-dump "
             "bundle of the test's tree (implies --tractor-arm-tasks)",
    )
    group.addoption(
        "--tractor-arm-tasks", action="store_true", default=None, dest="tractor_arm_tasks",
        help="arm tractor-diag's SIGUSR1 task dumper in pytest and in every Python "
             "process the tests start (an environment variable and a start-up hook), "
             "so hung-dump bundles hold every actor's full trio task tree",
    )
    parser.addini("tractor_dump_on_timeout", type="bool", default=False,
                  help="default of --tractor-dump-on-timeout")
    parser.addini("tractor_arm_tasks", type="bool", default=False,
                  help="default of --tractor-arm-tasks")


def _flag(config, name: str) -> bool:
    value = config.getoption(name, None)
    return bool(config.getini(name)) if value is None else bool(value)


def pytest_configure(config):
    _options["dir"] = config.getoption("hung_dump_dir", None)
    dump_on_timeout = _flag(config, "tractor_dump_on_timeout")
    if dump_on_timeout or _flag(config, "tractor_arm_tasks"):
        _arm_tasks(config)
    if dump_on_timeout:
        if not config.pluginmanager.hasplugin("timeout"):
            config.issue_config_time_warning(pytest.PytestWarning(
                "tractor-diag: --tractor-dump-on-timeout needs pytest-timeout "
                "(pip install pytest-timeout): no bundle will be taken on timeouts"),
                stacklevel=2)
        config.stash[_DUMP_ON_TIMEOUT] = True
    config.addinivalue_line(
        "markers", f"{ALLOW_MARK}: skip tractor-diag's per-test leak check for this test")
    mode = config.getoption("tractor_leak_check", None)
    if mode is None:
        mode = (config.getini("tractor_leak_check") or "off").strip().lower()
        if mode not in LEAK_MODES:
            raise pytest.UsageError(
                f"tractor_leak_check: {mode!r} is not one of {', '.join(LEAK_MODES)}")
    reap_at_end = bool(config.getoption("tractor_reap_at_end", False))
    if mode == "off" and not reap_at_end:
        return  # inert: nothing imported, nothing recorded
    from . import procfs

    if not procfs.HAVE_PROCFS:
        config.issue_config_time_warning(pytest.PytestWarning(
            "tractor-diag: leak checks and session-end reaping need Linux /proc; disabled"),
            stacklevel=2)
        return
    state = _SessionState(mode, reap_at_end)
    if reap_at_end:
        state.procs = _proc_keys(procfs.scan(detail_actors=False))
        state.socks = _sock_listing()
    config.stash[_STATE] = state


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_setup(item):
    state = item.config.stash.get(_STATE, None)
    if (state is not None and state.leak_mode != "off"
            and item.get_closest_marker(ALLOW_MARK) is None):
        # before any fixture runs: what the fixtures start counts as the test's
        try:
            item.stash[_BASELINE] = _take_baseline()
        except Exception as exc:  # noqa: BLE001 - never break the run over a check
            item.warn(pytest.PytestWarning(f"tractor-diag leak check: no baseline: {exc}"))
    return (yield)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_teardown(item, nextitem):
    # tryfirst makes this the outermost wrapper: every fixture finalizer has
    # run when the check starts.
    try:
        result = yield
    except KeyboardInterrupt:
        raise  # the user is stopping the run: no settle window now
    except BaseException:
        try:
            _leak_check(item, may_fail=False)  # the teardown's own error comes first
        except Exception:  # noqa: BLE001 - e.g. -W error turned the warning into one
            pass
        raise
    _leak_check(item, may_fail=True)
    return result


def pytest_sessionfinish(session):
    state = session.config.stash.get(_STATE, None)
    if state is None or not state.reap_at_end:
        return
    try:
        state.reap_lines = _reap_session(state)
    except Exception as exc:  # noqa: BLE001 - reported in the summary, never raised
        state.reap_lines = [f"session-end reap failed: {type(exc).__name__}: {exc}"]


# ---------------------------------------------------------------------------
# task dumpers everywhere, and a bundle before pytest-timeout strikes
# ---------------------------------------------------------------------------

_DUMP_ON_TIMEOUT = pytest.StashKey[bool]()
_ENV_BEFORE = pytest.StashKey[dict]()
_TIMER = pytest.StashKey[threading.Timer]()
#: Share of pytest-timeout's timeout left for the bundle (bounded to
#: [TIMEOUT_LEAD_MIN, TIMEOUT_LEAD_MAX] seconds): the capture starts that
#: long before the timeout and must end before it.
TIMEOUT_LEAD_SHARE = 0.25
TIMEOUT_LEAD_MIN = 0.5
TIMEOUT_LEAD_MAX = 10.0


def _arm_tasks(config) -> None:
    """Arm the dumper here and, through the environment, in every Python
    process started from now on (taskdump's start-up hook)."""
    from .taskdump import ENV_VAR, arm_watched, startup_env

    before = {k: os.environ.get(k) for k in (ENV_VAR, "PYTHONPATH")}
    config.stash[_ENV_BEFORE] = before
    os.environ.update({k: v for k, v in startup_env().items() if k in before})
    if (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL):
        arm_watched()


def pytest_unconfigure(config):
    before = config.stash.get(_ENV_BEFORE, None)
    for key, value in (before or {}).items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    if before is not None:
        from .taskdump import sweep_stale

        sweep_stale()  # empty dump files of armed processes that were killed


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_timeout_set_timer(item, settings):
    """Start our own timer a little before pytest-timeout's; returns None so
    pytest-timeout still sets its own."""
    if not item.config.stash.get(_DUMP_ON_TIMEOUT, False):
        return None
    timeout = float(settings.timeout or 0)
    if timeout <= 0:
        return None
    lead = min(max(timeout * TIMEOUT_LEAD_SHARE, TIMEOUT_LEAD_MIN), TIMEOUT_LEAD_MAX)
    label = f"timeout-{item.nodeid}"
    why = f"pytest-timeout ({timeout:g}s) about to end {item.nodeid}"

    def fire() -> None:
        # From this thread the capture asks the test's process like any
        # other (its dumper is armed): the main thread answers even when a
        # sync call wedges it.
        capture_bundle(label, timeout=lead * 0.8, hints={os.getpid(): why})

    timer = threading.Timer(max(0.05, timeout - lead), fire)
    timer.name = f"tractor-diag dump-on-timeout {item.nodeid}"
    timer.daemon = True
    item.stash[_TIMER] = timer
    timer.start()
    return None


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_timeout_cancel_timer(item):
    timer = item.stash.get(_TIMER, None)
    if timer is not None:
        timer.cancel()
        del item.stash[_TIMER]
    return None


def pytest_terminal_summary(terminalreporter, config):
    from .safetext import escape  # titles and file names are other people's

    if TAKEN:
        terminalreporter.section("tractor-diag hung-dump bundles")
        for taken in TAKEN:
            terminalreporter.write_line(escape(f"{taken.label}: {taken.path or taken.error}"))
    state = config.stash.get(_STATE, None)
    if state is not None and state.reap_lines is not None:
        terminalreporter.section("tractor-diag session-end reap")
        for line in state.reap_lines or ["nothing left behind"]:
            terminalreporter.write_line(escape(line))


# ---------------------------------------------------------------------------
# leak checks and session-end reaping (the library is imported lazily: these
# run only when an option asked for them)
# ---------------------------------------------------------------------------

# A socket file is stamped when it is bound; a coarse file-system clock can
# stamp it slightly before the wall-clock reading taken just before.
_MTIME_SLACK = 0.1


class TractorLeakWarning(pytest.PytestWarning):
    """A test left tractor actors or bindspace socket files behind."""


ProcKey = tuple[int, float]  # (pid, create time rounded to 10 ms)


class _SockListing:
    """Socket files of the bindspace dir at one moment: name -> inode."""

    def __init__(self, dir: str | None, files: dict[str, int], taken_at: float):
        self.dir = dir
        self.files = files
        self.taken_at = taken_at

    def new_in(self, now: _SockListing) -> dict[str, int]:
        """The files of ``now`` that are not in this earlier listing. When the
        dir moved in between (``XDG_RUNTIME_DIR`` changed), a file is new if
        it was created after this listing was taken."""
        if now.dir is None:
            return {}
        if now.dir == self.dir:
            return {n: i for n, i in now.files.items() if self.files.get(n) != i}
        out = {}
        for name, ino in now.files.items():
            try:
                st = os.stat(os.path.join(now.dir, name), follow_symlinks=False)
            except OSError:
                continue
            if st.st_ino == ino and st.st_mtime >= self.taken_at - _MTIME_SLACK:
                out[name] = ino
        return out


class _Baseline:
    def __init__(self, procs: set[ProcKey], socks: _SockListing):
        self.procs = procs
        self.socks = socks


class _Leak:
    """One leftover: a process (`reap.Target`) or a socket file."""

    def __init__(self, kind: str, target=None, path: str | None = None, ino: int = 0):
        self.kind = kind  # "orphan", "child" or "socket"
        self.target = target
        self.path = path
        self.ino = ino
        self.detail = ""

    def describe(self) -> str:
        if self.kind == "socket":
            return f"socket file {self.path}" + (f" ({self.detail})" if self.detail else "")
        t = self.target
        name = t.actor or t.title
        if self.kind == "child":
            return f"actor {name} (pid {t.pid}) still running below pytest (parent {t.ppid})"
        where = "" if t.depth == 0 else f", in the orphaned subtree of {t.top}"
        return f"orphaned actor {name} (pid {t.pid}{where})"


class _SessionState:
    def __init__(self, leak_mode: str, reap_at_end: bool):
        self.leak_mode = leak_mode
        self.reap_at_end = reap_at_end
        self.sid = _sid(0)
        self.procs: set[ProcKey] = set()  # what ran when the session started
        self.socks: _SockListing | None = None
        self.leaked: dict[ProcKey, object] = {}  # Targets the leak check reported
        self.reap_lines: list[str] | None = None


_STATE = pytest.StashKey[_SessionState]()
_BASELINE = pytest.StashKey[_Baseline]()


def _key(pid: int, create_time: float) -> ProcKey:
    return (pid, round(create_time, 2))


def _proc_keys(procs: dict) -> set[ProcKey]:
    return {_key(pid, p.create_time) for pid, p in procs.items()}


def _sid(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None


def _sock_listing() -> _SockListing:
    from .bindspace import resolve_dir
    from .errors import DiagError

    taken_at = time.time()
    try:
        path, _, _ = resolve_dir()
    except DiagError:
        return _SockListing(None, {}, taken_at)
    files: dict[str, int] = {}
    try:
        with os.scandir(path) as it:
            for entry in it:
                try:
                    if stat.S_ISSOCK(entry.stat(follow_symlinks=False).st_mode):
                        files[entry.name] = entry.inode()
                except OSError:
                    continue
    except OSError:  # missing dir: no sockets yet
        pass
    return _SockListing(path, files, taken_at)


def _take_baseline() -> _Baseline:
    from . import procfs

    return _Baseline(_proc_keys(procfs.scan(detail_actors=False)), _sock_listing())


def _leftover_procs(state: _SessionState, before: set[ProcKey], procs: dict) -> list[_Leak]:
    """Actors the reaper's own rules would pick (orphaned actors of this
    user, actors below pytest) that are not in ``before``; orphans only when
    their subtree's top is in pytest's session."""
    from .reap import make_plan

    out: list[_Leak] = []
    seen: set[int] = set()
    tops: dict[int, bool] = {}
    # only looking: the session-end reap pins whatever it signals itself
    for t in make_plan(procs=procs, pin=False).targets:
        if _key(t.pid, t.create_time) in before:
            continue
        if t.top not in tops:
            tops[t.top] = state.sid is not None and _sid(t.top) == state.sid
        if tops[t.top]:
            seen.add(t.pid)
            out.append(_Leak("orphan", target=t))
    for t in make_plan(os.getpid(), procs=procs, pin=False).targets:
        if t.pid not in seen and _key(t.pid, t.create_time) not in before:
            out.append(_Leak("child", target=t))
    return out


def _running(target) -> bool:
    from . import procfs

    proc = procfs.read_proc(target.pid, detail=False)
    return (proc is not None and proc.state not in ("Z", "X", "x")
            and _key(proc.pid, proc.create_time) == _key(target.pid, target.create_time))


def _still_there(leak: _Leak) -> bool:
    try:
        return os.stat(leak.path, follow_symlinks=False).st_ino == leak.ino
    except OSError:
        return False


def _find_leaks(state: _SessionState, base: _Baseline) -> list[_Leak]:
    from . import procfs

    leaks = _leftover_procs(state, base.procs, procfs.scan(detail_actors=False))
    now = _sock_listing()
    leaks += [_Leak("socket", path=os.path.join(now.dir, name), ino=ino)
              for name, ino in sorted(base.socks.new_in(now).items())]
    # Give a normal async teardown its moment: only what is still there
    # after the settle window counts.
    deadline = time.monotonic() + LEAK_SETTLE
    while leaks:
        leaks = [lk for lk in leaks
                 if (_running(lk.target) if lk.target is not None else _still_there(lk))]
        if not leaks or time.monotonic() >= deadline:
            break
        time.sleep(_SETTLE_POLL)
    _describe_sockets([lk for lk in leaks if lk.kind == "socket"], now.dir)
    return leaks


def _describe_sockets(leaks: list[_Leak], dir: str | None) -> None:
    if not leaks or dir is None:
        return
    from .bindspace import scan

    try:
        entries = {e.name: e for e in scan(dir, must_exist=False, holders=False).entries}
    except Exception:  # noqa: BLE001 - the path alone still names the leak
        return
    for lk in leaks:
        e = entries.get(os.path.basename(lk.path))
        if e is not None:
            lk.detail = e.status + (f": {e.note}" if e.note else "")


def _leak_check(item, *, may_fail: bool) -> None:
    state = item.config.stash.get(_STATE, None)
    base = item.stash.get(_BASELINE, None)
    if state is None or base is None:
        return
    del item.stash[_BASELINE]
    try:
        leaks = _find_leaks(state, base)
    except Exception as exc:  # noqa: BLE001 - never break the run over a check
        item.warn(pytest.PytestWarning(f"tractor-diag leak check failed: {exc}"))
        return
    if not leaks:
        return
    for lk in leaks:
        if lk.target is not None:
            state.leaked[_key(lk.target.pid, lk.target.create_time)] = lk.target
    from .safetext import escape

    # actor names and socket file names: escaped, the warning is printed raw
    text = escape(f"tractor-diag: {item.nodeid} left {len(leaks)} "
                  f"thing{'s' if len(leaks) != 1 else ''} "
                  "behind: " + "; ".join(lk.describe() for lk in leaks))
    if state.leak_mode == "fail" and may_fail:
        pytest.fail(text, pytrace=False)
    item.warn(TractorLeakWarning(text))


def _reap_session(state: _SessionState) -> list[str]:
    """Reap what this session left running, then sweep its stale sockets;
    -> the summary lines."""
    from . import procfs
    from .bindspace import scan, sweep
    from .reap import Plan, execute

    before = state.procs
    procs = procfs.scan(detail_actors=False)
    targets = [lk.target for lk in _leftover_procs(state, before, procs)]
    taken = {t.pid for t in targets}
    for key, t in state.leaked.items():
        # reported by the leak check; still the same process (create time)
        proc = procs.get(t.pid)
        if (t.pid not in taken and key not in before and proc is not None
                and proc.state not in ("Z", "X", "x")
                and _key(proc.pid, proc.create_time) == key):
            taken.add(t.pid)
            targets.append(t)
    lines: list[str] = []
    if targets:
        plan = Plan(mode="parent", uid=os.getuid(), everything=False, targets=targets,
                    parent=os.getpid(), tops=sorted({t.top for t in targets}),
                    scanned_at=time.time())
        outcome = execute(plan, REAP_GRACE)
        why = {t.pid: t.why for t in targets}
        for fate in outcome.fates:
            lines.append(f"pid {fate.pid} {fate.title} ({why.get(fate.pid, '')}): "
                         f"{_fate_text(fate)}")
    now = _sock_listing()
    if now.dir is not None and state.socks is not None:
        new = state.socks.new_in(now)
        if new:
            result = scan(now.dir, must_exist=False, holders=False)
            result.entries = [e for e in result.entries
                              if new.get(e.name) == e.ino and e.status == "orphaned-dead"]
            for r in sweep(result):
                if r.error:
                    lines.append(f"could not unlink {r.path}: {r.error}")
                elif r.removed:
                    lines.append(f"unlinked {r.path} ({r.reason})")
                else:
                    lines.append(f"kept {r.path}: {r.reason}")
    return lines


def _fate_text(fate) -> str:
    text = {
        "exited": "exited after SIGINT",
        "killed": f"killed (SIGKILL after {REAP_GRACE:g}s)",
        "survived": "survived SIGKILL",
        "gone": "exited before it was signalled",
        "reused": "not signalled: its pid was reused",
        "skipped": "not signalled",
        "error": "signal refused",
    }.get(fate.fate, fate.fate)
    return text + (f"; {fate.detail}" if fate.detail else "")
