"""Opt-in leak checks: what each test left behind.

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

The session's state (`SessionState`: what ran when it started, what the
checks reported) is also what the session-end reap (`pytest_reap`) works
from. The library is imported lazily: nothing here runs unless an option
asked for it.
"""
from __future__ import annotations

import os
import stat
import time

import pytest

#: ``--tractor-leak-check`` values.
LEAK_MODES = ("off", "warn", "fail")
#: Seconds a test's leftovers get to exit (or unlink their sockets) on their
#: own before they count as leaked.
LEAK_SETTLE = 1.0
_SETTLE_POLL = 0.05
ALLOW_MARK = "tractor_allow_leaks"

# A socket file is stamped when it is bound; a coarse file-system clock can
# stamp it slightly before the wall-clock reading taken just before.
_MTIME_SLACK = 0.1


class TractorLeakWarning(pytest.PytestWarning):
    """A test left tractor actors or bindspace socket files behind."""


ProcKey = tuple[int, float]  # (pid, create time rounded to 10 ms)


class SockListing:
    """Socket files of the bindspace dir at one moment: name -> inode."""

    def __init__(self, dir: str | None, files: dict[str, int], taken_at: float):
        self.dir = dir
        self.files = files
        self.taken_at = taken_at

    def new_in(self, now: SockListing) -> dict[str, int]:
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
    def __init__(self, procs: set[ProcKey], socks: SockListing):
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


class SessionState:
    def __init__(self, leak_mode: str, reap_at_end: bool):
        self.leak_mode = leak_mode
        self.reap_at_end = reap_at_end
        self.sid = _sid(0)
        self.procs: set[ProcKey] = set()  # what ran when the session started
        self.socks: SockListing | None = None
        self.leaked: dict[ProcKey, object] = {}  # Targets the leak check reported
        self.reap_lines: list[str] | None = None
        # A cgroup pytest moved into at the start (--tractor-reap-at-end):
        # an orphan is this session's exactly when it is a member. Without
        # one (``cgroup_why`` says why) orphans are named, never signalled.
        self.cgroup = None
        self.cgroup_why = ""


STATE = pytest.StashKey[SessionState]()
_BASELINE = pytest.StashKey[_Baseline]()


def proc_key(pid: int, create_time: float) -> ProcKey:
    return (pid, round(create_time, 2))


def proc_keys(procs: dict) -> set[ProcKey]:
    return {proc_key(pid, p.create_time) for pid, p in procs.items()}


def _sid(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None


def sock_listing() -> SockListing:
    from .bindspace import resolve_dir
    from .errors import DiagError

    taken_at = time.time()
    try:
        path, _, _ = resolve_dir()
    except DiagError:
        return SockListing(None, {}, taken_at)
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
    return SockListing(path, files, taken_at)


def _take_baseline() -> _Baseline:
    from . import procfs

    return _Baseline(proc_keys(procfs.scan(detail_actors=False)), sock_listing())


def session_cgroup():
    """Move pytest into a cgroup of its own -> (`cgroup.LaunchCgroup`, "") or
    (None, why not). Every process the session starts is born a member and
    stays one when orphaned, re-titled or moved to a new session: the one
    mark of "this session's" that no side-by-side run shares."""
    from .cgroup import LaunchCgroup, Unavailable, disabled_by_env

    if disabled_by_env():
        return None, "cgroups are turned off (TRACTOR_DIAG_NO_CGROUP)"
    try:
        cg = LaunchCgroup.create()
    except Unavailable as exc:
        return None, str(exc)
    try:
        cg.join_self()
    except OSError as exc:
        cg.remove(wait=0)
        return None, f"cannot move pytest into {cg.path}: {exc.strerror}"
    cg.done_joining()
    return cg, ""


def leave_session_cgroup(state: SessionState) -> None:
    """Back where pytest came from; the cgroup goes once its last member
    has (a leftover the reap could not take keeps it until then)."""
    if state.cgroup is not None:
        if state.cgroup.leave():
            state.cgroup.remove(wait=0)
        state.cgroup = None


def ours(state: SessionState, top: int) -> bool:
    """Is the orphaned subtree at ``top`` this session's? Exact with the
    session's cgroup; without one, sharing pytest's session id is all there
    is (enough to name a leak, never to signal)."""
    if state.cgroup is not None:
        return state.cgroup.contains(top)
    return state.sid is not None and _sid(top) == state.sid


def leftover_procs(state: SessionState, before: set[ProcKey], procs: dict) -> list[_Leak]:
    """Actors the reaper's own rules would pick (orphaned actors of this
    user, actors below pytest) that are not in ``before``; orphans only when
    their subtree's top is this session's (`ours`)."""
    from .reap import make_plan

    out: list[_Leak] = []
    seen: set[int] = set()
    tops: dict[int, bool] = {}
    # only looking: the session-end reap pins whatever it signals itself
    for t in make_plan(procs=procs, pin=False).targets:
        if proc_key(t.pid, t.create_time) in before:
            continue
        if t.top not in tops:
            tops[t.top] = ours(state, t.top)
        if tops[t.top]:
            seen.add(t.pid)
            out.append(_Leak("orphan", target=t))
    for t in make_plan(os.getpid(), procs=procs, pin=False).targets:
        if t.pid not in seen and proc_key(t.pid, t.create_time) not in before:
            out.append(_Leak("child", target=t))
    return out


def _running(target) -> bool:
    from . import procfs

    proc = procfs.read_proc(target.pid, detail=False)
    return (proc is not None and proc.state not in ("Z", "X", "x")
            and proc_key(proc.pid, proc.create_time) == proc_key(target.pid, target.create_time))


def _still_there(leak: _Leak) -> bool:
    try:
        return os.stat(leak.path, follow_symlinks=False).st_ino == leak.ino
    except OSError:
        return False


def _find_leaks(state: SessionState, base: _Baseline) -> list[_Leak]:
    from . import procfs

    leaks = leftover_procs(state, base.procs, procfs.scan(detail_actors=False))
    now = sock_listing()
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
    state = item.config.stash.get(STATE, None)
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
            state.leaked[proc_key(lk.target.pid, lk.target.create_time)] = lk.target
    from .safetext import escape

    # actor names and socket file names: escaped, the warning is printed raw
    text = escape(f"tractor-diag: {item.nodeid} left {len(leaks)} "
                  f"thing{'s' if len(leaks) != 1 else ''} "
                  "behind: " + "; ".join(lk.describe() for lk in leaks))
    if state.leak_mode == "fail" and may_fail:
        pytest.fail(text, pytrace=False)
    item.warn(TractorLeakWarning(text))


def configure(config) -> None:
    """Read the mode; set up the session's state when a check or the
    session-end reap was asked for (otherwise nothing is imported)."""
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
            stacklevel=3)
        return
    state = SessionState(mode, reap_at_end)
    if reap_at_end:
        state.cgroup, state.cgroup_why = session_cgroup()
        state.procs = proc_keys(procfs.scan(detail_actors=False))
        state.socks = sock_listing()
    config.stash[STATE] = state


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_setup(item):
    state = item.config.stash.get(STATE, None)
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
