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

The capture always runs in a separate thread with a wall-clock bound (and
every py-spy dump has its own timeout and is killed with its process group),
so a wedged py-spy can delay a failing test by at most the bound, never hang
it.

Loaded into every pytest run of an environment with tractor-diag installed,
so it stays inert unless used: importing it imports neither trio nor the
capture machinery, and its hooks do nothing until a bundle was taken.
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


def capture_bundle(label: str, *, out_dir: str | None = None,
                   timeout: float = CAPTURE_TIMEOUT, root: int | None = None) -> Taken:
    """Write a bundle of the tree under ``root`` (default: this process) in
    a worker thread, waiting at most ``timeout`` seconds for it.

    Safe from any thread, including a signal handler's. Never raises: a
    failure (or a capture still running at the bound, which is abandoned)
    is recorded in the returned `Taken` and in the terminal summary.
    """
    root = os.getpid() if root is None else root
    box: dict[str, object] = {}
    started = time.monotonic()

    def work() -> None:
        try:
            from .snapshot import dump_all
            from .stackmodel import StacksOptions

            # Leave the capture room to finish its writes before the bound.
            deadline = started + timeout - max(0.25, timeout / 4)
            options = StacksOptions(timeout=min(DUMP_TIMEOUT, timeout / 2),
                                    task_timeout=min(2.0, timeout / 4))
            box["meta"] = dump_all([root], label=label, out_dir=_out_dir(out_dir),
                                   options=options, deadline=deadline)
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

    async def watchdog() -> None:
        with watch:
            await trio.sleep_until(deadline)
            try:
                taken = await trio.to_thread.run_sync(
                    lambda: capture_bundle(label, out_dir=out_dir, timeout=capture_timeout))
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
        taken = capture_bundle(label, out_dir=out_dir, timeout=capture_timeout)
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


def pytest_configure(config):
    _options["dir"] = config.getoption("hung_dump_dir", None)


def pytest_terminal_summary(terminalreporter):
    if not TAKEN:
        return
    terminalreporter.section("tractor-diag hung-dump bundles")
    for taken in TAKEN:
        terminalreporter.write_line(f"{taken.label}: {taken.path or taken.error}")
