"""Fixtures that start REAL process trees for integration tests.

Nothing here imports ``tractor_diag``: processes are found with psutil and
plain ``/proc`` reads (implementation in ``tests/trees/harness.py``; the
programs themselves are in ``tests/trees/``).

Isolation and hygiene
---------------------
Every fixture below depends on ``xdg_runtime_dir``: the test gets its own
``XDG_RUNTIME_DIR`` (a short fresh dir under /tmp, mode 0700), exported in
``os.environ`` for the test process and every tree it starts, so the UDS
bindspace (``$XDG_RUNTIME_DIR/tractor``) only holds that test's sockets.
Every process a fixture starts is torn down after the test: SIGINT to every
tracked pid (the whole tree, including re-parented orphans it created), a
bounded grace (3 s), SIGKILL survivors, reap (init reaps orphans in ~1-2 s
here), then its socket files and ``/tmp/tractor-stackscope-<pid>.log`` dumps
are removed and the XDG dir deleted. Leftovers produce a warning.

Session fixtures
----------------
``tractor_python`` -> Path
    python of the released tractor 0.1.0a5 runtime venv
    (``$TRACTOR_DIAG_TRACTOR_VENV`` or ``<repo>/.venv-tractor``). Created by
    ``tests/trees/harness.ensure_tractor_venv`` when missing; failure to create it is a test
    error, never a skip.

``runtime_trees`` (module scope) -> RuntimeTrees
    ``.start(backend, transport, depth=2, breadth=1, hang='sleep',
    wedge_root=False, titles=True, port=None, netns=False)`` runs
    ``tests/trees/runtime_tree.py`` on today's tractor (``trio``,
    ``mp_spawn``, ``mp_forkserver``: ``$TRACTOR_DIAG_TRACTOR_MAIN_VENV`` or
    ``<repo>/.venv-tractor-main``; ``main_thread_forkserver``:
    ``...MTF_VENV`` / ``.venv-tractor-mtf``), each tree in its own
    ``XDG_RUNTIME_DIR`` (``tree.xdg``), and returns a ``RuntimeTree`` whose
    ``.actors`` is the ``{name: pid}`` the root reported. A missing venv
    skips the test with one line saying what to set. ``titles=False``:
    ``setproctitle`` cannot be imported in the tree; ``stall_leaves=True``:
    every leaf blocks in its boot window, before its title is set (use
    ``wait=False``: the tree never gets READY); ``netns=True``: the tree
    gets a network namespace of its own (root needed); ``armed=True``: our
    task dumper is armed in every process (as ``tractor-diag run`` does).

Function fixtures
-----------------
``xdg_runtime_dir`` -> Path,  ``bindspace`` -> Path (``$XDG_RUNTIME_DIR/tractor``,
    created), ``free_port`` -> int (a TCP port free right now).

``released_tree(depth=2, breadth=2, hang='sleep', timeout=60, port=None,
loglevel='error', wait=True) -> Tree``
    ``tests/trees/released_tree.py`` on the released runtime: the root (an
    ordinary python script, registry on ``127.0.0.1:tree.port``) and
    sub-actors with the exact cmdline
    ``<venv>/bin/python -m tractor._child --uid ('<name>', '<uuid4>')
    --parent_addr ('127.0.0.1', <port>) --loglevel ERROR``.
    hang: ``sleep`` (leaves in sync ``time.sleep``), ``wait-child``
    (``leaf_0_0`` never exits, its parent waits on it), ``runaway``
    (``leaf_0_0`` burns CPU), ``none``.

``current_tree(depth=2, breadth=2, hang='sleep', timeout=60, registry=False,
unarmed=(), root_name='root', python=None, wait=True) -> Tree``
    ``tests/trees/current_tree.py`` (this venv's python unless ``python``):
    sub-actors titled ``_subactor[<name>@<pid>]`` (cmdline = title padded
    with NULs to the original argv length, comm = title[:15]), each listening
    on ``<bindspace>/<name>@<pid>.sock``, root on ``<root_name>@<pid>.sock``
    (+ ``registry@1616.sock`` with ``registry=True``); a SIGUSR1 handler
    appending the trio task tree to ``/tmp/tractor-stackscope-<pid>.log`` in
    every actor not named in ``unarmed`` (the root included).
    hang: as above plus ``wait-child-sync`` (the parent of ``leaf_0_0``
    blocked in a sync ``os.waitpid``, wchan ``do_wait``).

``Tree`` (both): ``.root`` pid, ``.popen``, ``.kind``, ``.depth``,
    ``.breadth``, ``.hang``, ``.port`` (released), ``.bindspace``,
    ``.expected`` (sub-actor names), ``.stderr_path``;
    ``.pids()`` root + current descendants; ``.tracked()`` every pid seen
    that still exists (orphans too); ``.actors()`` -> {name: pid} from /proc
    (root under ``root_name``); ``.pid_of(name)``; ``.wait_ready(timeout)``
    (done by the factory unless ``wait=False``: READY seen and every expected
    actor visible); ``.kill_pid(pid, sig=SIGKILL)`` (tracks the pid's subtree
    first); ``.orphan(name)`` -> pids of the SIGKILLed actor's children, now
    re-parented (to pid 1 or a subreaper; use hang='sleep' so they stay);
    ``.stop()`` -> leftover pids (teardown calls it anyway).

Other hangs (each returns a ``ProcTree``: ``.root``, ``.popen``, ``.pids()``,
``.tracked()``, ``.kill_pid()``, ``.stop()``, ``.ready_line``):

``zombie_maker(count=1, code=3, title=None)``
    a python parent whose ``count`` children exited with ``code`` and are
    never reaped: ``.zombies`` lists their pids (state Z, ppid = ``.root``).
    ``title``: the children first set ``_subactor[<title>_<i>@pid]`` so the
    zombies' comm looks like current actors'.
``sleep_tree()``
    ``sh -c 'sleep 600 & sleep 600'``: a non-actor tree (sh + 2 sleeps, both
    exec'd when returned).
``runaway(title=None)``
    a python process burning a core (``title`` -> ``_subactor[title@pid]``).
``listener(port=None, title=None)``
    a leftover process listening on TCP ``127.0.0.1:port`` (a free port when
    None; pass a registry port). ``.port``.
``uds_socket(name='ghost', live=True, title=False, filename=None)``
    a socket file in the bindspace: ``live`` -> ``<name>@<pid>.sock`` bound
    and listened on by a running helper (``title`` makes it look like a
    current actor); ``live=False`` -> a stale file whose binder was
    SIGKILLed and reaped (its pid in the name is dead). ``filename`` binds
    that exact name instead (``registry@1616.sock``). Returns ``UdsSocket``
    with ``.path``, ``.pid`` (binder, dead for stale), ``.proc``.
``spawn(argv, ready='READY', timeout=30, label='proc')``
    any command, torn down like the rest; waits for a stdout line starting
    with ``ready`` unless ``ready`` is None.

``ns`` -> ``_reap_helpers.NsInit``
    a private PID namespace whose init starts, lists and signals processes
    on request (root needed); closed, with everything in it, after the test.
``fake_pkg`` -> str
    a world-readable dir holding a package shaped like the released
    runtime (``_reap_helpers.fake_released_pkg``), for PYTHONPATH.
"""
from __future__ import annotations

import atexit
import os
import shutil
import signal
import sys
import tempfile
import threading
import warnings
import weakref
from dataclasses import dataclass
from pathlib import Path

import pytest

from trees.harness import (
    BACKEND_RUNTIME,
    CURRENT_SCRIPT,
    RuntimeTree,
    runtime_missing_reason,
    runtime_python,
    HELPERS_SCRIPT,
    RELEASED_SCRIPT,
    ProcTree,
    Tree,
    TreeError,
    _wait_until,
    ensure_tractor_venv,
    free_port as _free_port,
    read_comm,
)

# Safety net: handles not stopped by their fixture (pytest killed mid-test)
# are stopped at interpreter exit, and SIGTERM (e.g. from `timeout`) becomes
# KeyboardInterrupt so that pytest runs the pending fixture teardowns.
_LIVE_HANDLES: weakref.WeakSet[ProcTree] = weakref.WeakSet()


@atexit.register
def _stop_leftover_handles() -> None:
    for h in list(_LIVE_HANDLES):
        try:
            h.stop(grace=1.0)
        except Exception:
            pass


def _sigterm_to_ki(signum, frame):
    raise KeyboardInterrupt('SIGTERM')


def pytest_configure(config) -> None:
    if (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL):
        signal.signal(signal.SIGTERM, _sigterm_to_ki)


# A test that starts a current-runtime tree may pay for two starts of it
# (`RuntimeTrees.start` tries once more when the runtime's fork-server boot
# hangs, 90 s each): pytest-timeout's 120 s cut the second start short.
RUNTIME_TREE_TIMEOUT = 300


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if 'runtime_trees' not in getattr(item, 'fixturenames', ()):
            continue
        marker = item.get_closest_marker('timeout')
        if marker is None or not marker.args or marker.args[0] < RUNTIME_TREE_TIMEOUT:
            item.add_marker(pytest.mark.timeout(RUNTIME_TREE_TIMEOUT), append=False)


@pytest.fixture(scope='session')
def tractor_python() -> Path:
    try:
        return ensure_tractor_venv()
    except TreeError as err:
        pytest.fail(f'released tractor runtime unavailable: {err}')


class RuntimeTrees:
    """Starts `RuntimeTree`s on the current tractor runtimes, each in its own
    ``XDG_RUNTIME_DIR``; stops them all at the end of its scope."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.handles: list[RuntimeTree] = []

    def python(self, backend: str) -> Path:
        which = BACKEND_RUNTIME[backend]
        py = runtime_python(which)
        if py is None:
            pytest.skip(runtime_missing_reason(which))
        return py

    def start(self, backend: str, transport: str, *, wait: bool = True,
              timeout: float = 90, **kw) -> RuntimeTree:
        py = self.python(backend)
        for attempt in (1, 2):
            xdg = Path(tempfile.mkdtemp(prefix='tdr-', dir='/tmp'))
            xdg.chmod(0o700)
            tree = RuntimeTree(py, backend=backend, transport=transport, xdg=xdg,
                               log_dir=self.log_dir, **kw)
            self.handles.append(tree)
            _LIVE_HANDLES.add(tree)
            if not wait:
                return tree
            try:
                tree.wait_ready(timeout)
                return tree
            except TreeError as err:
                # Seen once on a loaded box: a main_thread_forkserver tree
                # that never finished spawning (the runtime's, not ours).
                # One more try, said out loud; a second failure fails.
                if attempt == 2:
                    raise
                warnings.warn(f'{tree!r} did not come up, trying once more: {err}')
                tree.stop()

    def stop_all(self) -> None:
        for h in reversed(self.handles):
            left = h.stop()
            if left:
                warnings.warn(f'{h!r}: processes left after teardown: {left}')
            shutil.rmtree(h.xdg, ignore_errors=True)


@pytest.fixture(scope='module')
def runtime_trees(tmp_path_factory) -> RuntimeTrees:
    """Module-scoped: real trees are shared by the tests of a module (see
    `RuntimeTrees.start`); a missing runtime venv skips with one line."""
    trees = RuntimeTrees(tmp_path_factory.mktemp('runtime-trees'))
    yield trees
    trees.stop_all()


@pytest.fixture
def xdg_runtime_dir(monkeypatch) -> Path:
    # short path: UDS paths must stay under 108 bytes
    d = Path(tempfile.mkdtemp(prefix='tdx-', dir='/tmp'))
    d.chmod(0o700)
    monkeypatch.setenv('XDG_RUNTIME_DIR', str(d))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def bindspace(xdg_runtime_dir) -> Path:
    d = xdg_runtime_dir / 'tractor'
    d.mkdir(mode=0o700, exist_ok=True)
    return d


@pytest.fixture
def free_port() -> int:
    return _free_port()


class _Procs:
    """Per-test registry of started handles; stops them all at teardown."""

    def __init__(self, log_dir: Path, bindspace: Path) -> None:
        self.log_dir = log_dir
        self.bindspace = bindspace
        self.handles: list[ProcTree] = []

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(extra)
        return env

    def add(self, handle: ProcTree) -> ProcTree:
        self.handles.append(handle)
        _LIVE_HANDLES.add(handle)
        return handle

    def start(self, argv, *, ready='READY', timeout=30.0, label='proc',
              env=None) -> ProcTree:
        h = self.add(ProcTree(argv, env=env or self.env(),
                              log_dir=self.log_dir, label=label,
                              bindspace=self.bindspace))
        if ready is not None:
            h.wait_line(ready, timeout)
        return h

    def stop_all(self) -> None:
        for h in reversed(self.handles):
            left = h.stop()
            if left:
                warnings.warn(f'{h!r}: processes left after teardown: {left}')


@pytest.fixture
def _procs(tmp_path, bindspace) -> _Procs:
    procs = _Procs(tmp_path, bindspace)
    yield procs
    procs.stop_all()


@pytest.fixture
def spawn(_procs):
    def spawn(argv, ready='READY', timeout=30.0, label='proc') -> ProcTree:
        return _procs.start(argv, ready=ready, timeout=timeout, label=label)
    return spawn


@pytest.fixture
def ns(tmp_path):
    from _reap_helpers import NsInit

    box = NsInit(sys.executable, str(tmp_path / 'ns-init.log'))
    yield box
    box.close()


@pytest.fixture
def fake_pkg():
    from _reap_helpers import fake_released_pkg

    d = tempfile.mkdtemp(prefix='tdiag-fake-', dir='/tmp')
    os.chmod(d, 0o755)  # uid 65534 imports it
    yield fake_released_pkg(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def released_tree(tractor_python, _procs):
    def start(depth: int = 2, breadth: int = 2, hang: str = 'sleep',
              timeout: float = 60, port: int | None = None,
              loglevel: str = 'error', wait: bool = True) -> Tree:
        port = port or _free_port()
        argv = [tractor_python, RELEASED_SCRIPT, str(port),
                '--depth', str(depth), '--breadth', str(breadth),
                '--hang', hang, '--loglevel', loglevel]
        tree = _procs.add(Tree(
            argv, kind='released', depth=depth, breadth=breadth, hang=hang,
            port=port, env=_procs.env(PYTHONWARNINGS='ignore'),
            log_dir=_procs.log_dir, bindspace=_procs.bindspace))
        if wait:
            tree.wait_ready(timeout)
        return tree
    return start


@pytest.fixture
def current_tree(_procs):
    def start(depth: int = 2, breadth: int = 2, hang: str = 'sleep',
              timeout: float = 60, registry: bool = False,
              unarmed=(), root_name: str = 'root',
              python: str | None = None, wait: bool = True) -> Tree:
        argv = [python or sys.executable, CURRENT_SCRIPT,
                '--depth', str(depth), '--breadth', str(breadth),
                '--hang', hang, '--root-name', root_name]
        if registry:
            argv.append('--registry')
        for name in unarmed:
            argv += ['--unarmed', name]
        tree = _procs.add(Tree(
            argv, kind='current', depth=depth, breadth=breadth, hang=hang,
            root_name=root_name, registry=registry, unarmed=unarmed,
            env=_procs.env(), log_dir=_procs.log_dir,
            bindspace=_procs.bindspace))
        if registry:
            tree.files.add(_procs.bindspace / 'registry@1616.sock')
        if wait:
            tree.wait_ready(timeout)
        return tree
    return start


@pytest.fixture
def zombie_maker(_procs):
    def start(count: int = 1, code: int = 3, title: str | None = None,
              timeout: float = 30) -> ProcTree:
        argv = [sys.executable, HELPERS_SCRIPT, 'zombie',
                '--count', str(count), '--code', str(code)]
        if title:
            argv += ['--title', title]
        h = _procs.start(argv, timeout=timeout, label='zombie')
        h.zombies = [int(p) for p in h.ready_line.split()[1:]]
        return h
    return start


@pytest.fixture
def sleep_tree(_procs):
    def start(timeout: float = 10) -> ProcTree:
        h = _procs.start(['sh', '-c', 'sleep 600 & sleep 600'], ready=None,
                         label='sleep-tree')
        def up() -> bool:
            pids = h.pids()
            return (len(pids) >= 3
                    and all(read_comm(p) == 'sleep' for p in pids[1:]))
        if not _wait_until(up, timeout):
            raise TreeError(f'sleep tree did not come up: {h.pids()}')
        return h
    return start


@pytest.fixture
def runaway(_procs):
    def start(title: str | None = None, timeout: float = 30) -> ProcTree:
        argv = [sys.executable, HELPERS_SCRIPT, 'runaway']
        if title:
            argv += ['--title', title]
        return _procs.start(argv, timeout=timeout, label='runaway')
    return start


@pytest.fixture
def listener(_procs):
    def start(port: int | None = None, title: str | None = None,
              timeout: float = 30) -> ProcTree:
        port = port or _free_port()
        argv = [sys.executable, HELPERS_SCRIPT, 'listen-tcp', str(port)]
        if title:
            argv += ['--title', title]
        h = _procs.start(argv, timeout=timeout, label='listener')
        h.port = port
        return h
    return start


@dataclass
class UdsSocket:
    path: Path
    pid: int          # the binder (dead for a stale socket)
    proc: ProcTree
    live: bool


@pytest.fixture
def uds_socket(_procs):
    def make(name: str = 'ghost', live: bool = True, title: bool = False,
             filename: str | None = None, timeout: float = 30) -> UdsSocket:
        argv = [sys.executable, HELPERS_SCRIPT, 'listen-uds',
                _procs.bindspace, name]
        if title:
            argv.append('--title')
        if filename:
            argv += ['--file', filename]
        h = _procs.start(argv, timeout=timeout, label='uds')
        path = Path(h.ready_line.split(None, 1)[1])
        h.files.add(path)
        pid = h.root
        if not live:
            h.kill_pid(pid, signal.SIGKILL)
            h.popen.wait(timeout)  # reaped: the pid is gone
        return UdsSocket(path=path, pid=pid, proc=h, live=live)
    return make
