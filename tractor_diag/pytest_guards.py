"""Hung-dump guards for tests: a `dump-all` bundle of the test's own
process tree, taken when a deadline passes.

- ``fail_after_w_trace(seconds, label=None)``: async context manager, like
  ``trio.fail_after``, that writes a bundle *at the deadline*, before
  cancelling the body (so the bundle shows the hang, not the cancellation
  that follows), then raises ``trio.TooSlowError`` naming the bundle.
- ``afk_alarm_w_trace(seconds, label=None)``: sync context manager, the
  outer guard for a wedged main thread (a trio loop blocked in sync code
  never reaches its deadline): SIGALRM writes a bundle and raises
  `AfkAlarmTimeout` in the main thread.
- fixtures ``fail_after_w_trace_factory`` / ``afk_alarm_w_trace_factory``:
  the same with the label defaulting to the test's node id.
- ``--tractor-arm-tasks`` arms the SIGUSR1 task dumper in pytest and every
  Python process it starts; ``--tractor-dump-on-timeout`` takes a bundle
  shortly before pytest-timeout ends a hung test.

The capture always runs in a separate thread with a wall-clock bound (and
every py-spy dump has its own timeout and is killed with its process group),
so a wedged py-spy can delay a failing test by at most the bound, never hang
it. The library is imported inside the functions that use it.
"""
from __future__ import annotations

import os
import signal
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


def _flag(config, name: str) -> bool:
    value = config.getoption(name, None)
    return bool(config.getini(name)) if value is None else bool(value)


def configure(config) -> None:
    _options["dir"] = config.getoption("hung_dump_dir", None)
    dump_on_timeout = _flag(config, "tractor_dump_on_timeout")
    if dump_on_timeout or _flag(config, "tractor_arm_tasks"):
        _arm_tasks(config)
    if dump_on_timeout:
        if not config.pluginmanager.hasplugin("timeout"):
            config.issue_config_time_warning(pytest.PytestWarning(
                "tractor-diag: --tractor-dump-on-timeout needs pytest-timeout "
                "(pip install pytest-timeout): no bundle will be taken on timeouts"),
                stacklevel=3)
        config.stash[_DUMP_ON_TIMEOUT] = True


def unconfigure(config) -> None:
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


def summarize(terminalreporter) -> None:
    """The bundles this session took, for the terminal summary."""
    if not TAKEN:
        return
    from .safetext import escape  # labels and paths can carry anything

    terminalreporter.section("tractor-diag hung-dump bundles")
    for taken in TAKEN:
        terminalreporter.write_line(escape(f"{taken.label}: {taken.path or taken.error}"))
