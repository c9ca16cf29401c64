"""pytest integration (entry point ``pytest11: tractor_diag``): this module
registers the hooks and fixtures; each job lives in its own module.

- `pytest_guards`: hung-dump bundles of the test's own process tree
  (``fail_after_w_trace``, ``afk_alarm_w_trace``, their fixtures,
  ``--hung-dump-dir``, ``--tractor-arm-tasks``, ``--tractor-dump-on-timeout``);
  every bundle taken is listed in the terminal summary.
- `pytest_leaks`: the opt-in per-test leak check (``--tractor-leak-check``).
- `pytest_reap`: the opt-in session-end reap (``--tractor-reap-at-end``).

Loaded into every pytest run of an environment with tractor-diag installed,
so it stays inert unless used: importing it imports neither trio, msgspec,
psutil nor platformdirs, nor any part of tractor-diag outside these plugin
modules; the library is imported inside the hooks only once an option asks
for it, and the hooks do nothing until then.
"""
from __future__ import annotations

from . import pytest_guards, pytest_leaks, pytest_reap
from .pytest_guards import (  # noqa: F401 - the public names, and hooks to register
    CAPTURE_TIMEOUT,
    DUMP_DIR_ENV,
    DUMP_TIMEOUT,
    TAKEN,
    AfkAlarmTimeout,
    Taken,
    afk_alarm_w_trace,
    afk_alarm_w_trace_factory,
    capture_bundle,
    current_test_label,
    fail_after_w_trace,
    fail_after_w_trace_factory,
    own_task_tree,
    pytest_timeout_cancel_timer,
    pytest_timeout_set_timer,
)
from .pytest_leaks import (  # noqa: F401
    ALLOW_MARK,
    LEAK_MODES,
    LEAK_SETTLE,
    TractorLeakWarning,
    pytest_runtest_setup,
    pytest_runtest_teardown,
)
from .pytest_reap import REAP_GRACE, pytest_sessionfinish  # noqa: F401


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


def pytest_configure(config):
    pytest_guards.configure(config)
    pytest_leaks.configure(config)


def pytest_unconfigure(config):
    pytest_guards.unconfigure(config)
    state = config.stash.get(pytest_leaks.STATE, None)
    if state is not None:
        pytest_leaks.leave_session_cgroup(state)


def pytest_terminal_summary(terminalreporter, config):
    pytest_guards.summarize(terminalreporter)
    pytest_reap.summarize(terminalreporter, config)
