"""Start, inspect and tear down real process trees for the test-suite.

Pure helpers behind the fixtures in ``tests/conftest.py`` (see its docstring
for the fixture API). Nothing here imports ``tractor_diag``: pids are found
with psutil and plain ``/proc`` reads, so the fixtures work while the library
is incomplete and never share its bugs.
"""
from __future__ import annotations

import ast
import itertools
import os
import re
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterable, Sequence

import psutil

from _poll import poll as _wait_until
from _proc import stat_fields

TREES_DIR = Path(__file__).resolve().parent
REPO = TREES_DIR.parent.parent
RELEASED_SCRIPT = TREES_DIR / 'released_tree.py'
CURRENT_SCRIPT = TREES_DIR / 'current_tree.py'
HELPERS_SCRIPT = TREES_DIR / 'helpers.py'
STACKSCOPE_LOG = '/tmp/tractor-stackscope-{pid}.log'
# tractor_diag.taskdump's own dump files (namespace inode, pid; .1: rotated)
TASKDUMP_LOG = '/tmp/tractor-diag-taskdump-{ns}-{pid}.log'
REGISTRY_SOCK = 'registry@1616.sock'

TITLE_RE = re.compile(r'^_subactor\[(?P<name>.+)@(?P<pid>\d+)\]$')

_counter = itertools.count()


class TreeError(RuntimeError):
    """A fixture process did not come up as promised."""


# --- plain /proc reads --------------------------------------------------------

def free_port(host: str = '127.0.0.1') -> int:
    """A TCP port nothing listens on right now (bind to 0, read, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def read_cmdline(pid: int) -> bytes | None:
    try:
        with open(f'/proc/{pid}/cmdline', 'rb') as f:
            return f.read()
    except OSError:
        return None


def argv_of(pid: int) -> list[str] | None:
    """``/proc/<pid>/cmdline`` split on NUL (trailing padding dropped)."""
    raw = read_cmdline(pid)
    if raw is None:
        return None
    parts = raw.split(b'\0')
    while parts and parts[-1] == b'':
        parts.pop()
    return [p.decode(errors='replace') for p in parts]


def read_comm(pid: int) -> str | None:
    try:
        with open(f'/proc/{pid}/comm', 'rb') as f:
            return f.read().rstrip(b'\n').decode(errors='replace')
    except OSError:
        return None


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, ppid) from ``/proc/<pid>/stat``; None when gone."""
    rest = stat_fields(pid)
    return None if rest is None else (rest[0].decode(), int(rest[1]))


def status_field(pid: int, field: str) -> str | None:
    try:
        # a comm cut at 15 bytes can end inside a UTF-8 character
        with open(f'/proc/{pid}/status', encoding='utf-8', errors='replace') as f:
            for line in f:
                if line.startswith(field + ':'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        return None
    return None


def handles_signal(pid: int, sig: int) -> bool:
    """Whether ``SigCgt`` of ``pid`` has the bit for ``sig`` (caught)."""
    cgt = status_field(pid, 'SigCgt')
    return cgt is not None and bool(int(cgt, 16) & (1 << (sig - 1)))


def released_actor_name(argv: Sequence[str]) -> str | None:
    """Name from ``python -m tractor._child --uid ('name', 'uuid') ...``."""
    if len(argv) < 5 or argv[1:3] != ['-m', 'tractor._child']:
        return None
    try:
        i = argv.index('--uid')
        name, _uuid = ast.literal_eval(argv[i + 1])
    except (ValueError, IndexError, SyntaxError, TypeError):
        return None
    return str(name)


def current_actor_name(raw: bytes, pid: int) -> str | None:
    """Name from a ``_subactor[<name>@<pid>]`` title (padded cmdline)."""
    title = raw.split(b'\0', 1)[0].rstrip(b' ').decode(errors='replace')
    m = TITLE_RE.match(title)
    if m is None or int(m['pid']) != pid:
        return None
    return m['name']


def actor_name_of(pid: int) -> str | None:
    """The actor name of ``pid`` from either shape (current title, released
    ``tractor._child`` argv), else None."""
    raw = read_cmdline(pid)
    if not raw:
        return None
    name = current_actor_name(raw, pid)
    if name is not None:
        return name
    argv = argv_of(pid) or []
    return released_actor_name(argv)


def unix_listening_paths() -> dict[str, int]:
    """{path: inode} of listening UDS sockets in ``/proc/net/unix``."""
    out: dict[str, int] = {}
    with open('/proc/net/unix') as f:
        next(f)
        for line in f:
            parts = line.split()
            # Num RefCount Protocol Flags Type St Inode Path
            if len(parts) >= 8 and int(parts[3], 16) & 0x10000:  # __SO_ACCEPTCON
                out[parts[7]] = int(parts[6])
    return out


def expected_names(depth: int, breadth: int) -> list[str]:
    """Actor names a tree script gives for ``depth`` x ``breadth``."""
    names = []

    def walk(path: tuple[int, ...]) -> None:
        for i in range(breadth):
            child = path + (i,)
            kind = 'leaf' if len(child) == depth else 'spawner'
            names.append(kind + '_' + '_'.join(map(str, child)))
            if len(child) < depth:
                walk(child)
    walk(())
    return names


# --- process handles ----------------------------------------------------------

def _ignores(pid: int, sig: int) -> bool:
    ign = status_field(pid, 'SigIgn')
    return ign is not None and bool(int(ign, 16) & (1 << (sig - 1)))


def _reset_signals() -> None:  # preexec_fn: undo an ignored SIGINT (bg jobs)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def _send(p: psutil.Process, sig: int) -> None:
    """Signal the process ``p`` was made for, through a pidfd: opened first,
    then ``p``'s start time checked against the pid's (psutil's
    ``is_running``), so a pid reused at any moment gets nothing (psutil's
    own ``send_signal`` checks, then signals by pid)."""
    try:
        fd = os.pidfd_open(p.pid)
    except ProcessLookupError:
        raise psutil.NoSuchProcess(p.pid) from None
    try:
        if not p.is_running():
            raise psutil.NoSuchProcess(p.pid)
        signal.pidfd_send_signal(fd, sig)
    except ProcessLookupError:
        raise psutil.NoSuchProcess(p.pid) from None
    finally:
        os.close(fd)


def _exists(p: psutil.Process) -> bool:
    """Still a process with that identity (zombies count)."""
    try:
        return p.is_running()
    except psutil.Error:
        return False


def _alive(p: psutil.Process) -> bool:
    """Running and not a zombie."""
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class ProcTree:
    """A process started by a fixture plus everything it spawns.

    Every pid the handle ever sees (descendants at each query, subtrees of
    pids it kills) is tracked, so re-parented orphans still get torn down.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        log_dir: Path,
        label: str,
        bindspace: Path | None = None,
    ) -> None:
        self.argv = [str(a) for a in argv]
        self.label = label
        self.bindspace = bindspace
        self.stderr_path = Path(log_dir) / f'{label}-{next(_counter)}.stderr'
        self._stderr = open(self.stderr_path, 'wb')
        self.popen = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=self._stderr, env=env, preexec_fn=_reset_signals,
        )
        self.root: int = self.popen.pid
        self._tracked: dict[int, psutil.Process] = {}
        self._buf = b''
        self.ready_line: str | None = None
        self.files: set[Path] = set()  # extra files to remove on stop
        self.stopped = False
        self.leftovers: list[int] = []
        try:
            self._track(psutil.Process(self.root))
        except psutil.NoSuchProcess:
            pass

    def __repr__(self) -> str:
        return f'<{type(self).__name__} {self.label} root={self.root}>'

    # -- tracking --
    def _track(self, p: psutil.Process) -> None:
        self._tracked.setdefault(p.pid, p)

    def _refresh(self) -> None:
        """Track the current descendants of every tracked live process."""
        for p in list(self._tracked.values()):
            try:
                for c in p.children(recursive=True):
                    self._track(c)
            except psutil.Error:
                pass

    def track_pid(self, pid: int) -> None:
        """Also tear ``pid`` (and what it spawns) down at stop."""
        try:
            self._track(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass

    def pids(self) -> list[int]:
        """Root and all its current descendants (zombies included)."""
        try:
            root = self._tracked[self.root]
            if not _exists(root):
                return []
            kids = root.children(recursive=True)
        except (KeyError, psutil.Error):
            return []
        for c in kids:
            self._track(c)
        return [self.root] + [c.pid for c in kids]

    def tracked(self) -> list[int]:
        """Every pid this handle has seen that still exists (zombies too),
        including re-parented orphans."""
        self.pids()
        self._refresh()
        return sorted(p.pid for p in self._tracked.values() if _exists(p))

    # -- stdout protocol --
    def wait_line(self, prefix: str = 'READY', timeout: float = 60) -> str:
        """Wait for a stdout line starting with ``prefix``; return it."""
        fd = self.popen.stdout.fileno()
        deadline = time.monotonic() + timeout
        while True:
            while b'\n' in self._buf:
                line, self._buf = self._buf.split(b'\n', 1)
                text = line.decode(errors='replace').strip()
                if text.startswith(prefix):
                    self.ready_line = text
                    return text
            left = deadline - time.monotonic()
            if left <= 0:
                raise TreeError(
                    f'{self.label}: no {prefix!r} line within {timeout}s'
                    + self._stderr_tail())
            r, _, _ = select.select([fd], [], [], min(left, 0.2))
            if r:
                chunk = os.read(fd, 65536)
                if chunk:
                    self._buf += chunk
                    continue
                try:  # EOF: the root closed stdout, most likely exiting
                    self.popen.wait(0.5)
                except subprocess.TimeoutExpired:
                    pass
                raise TreeError(
                    f'{self.label}: stdout closed (rc={self.popen.returncode})'
                    f' before {prefix!r}' + self._stderr_tail())
            if self.popen.poll() is not None:
                raise TreeError(
                    f'{self.label}: exited with {self.popen.returncode} '
                    f'before {prefix!r}' + self._stderr_tail())

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text(errors='replace')
        except OSError:
            return ''

    def _stderr_tail(self, n: int = 40) -> str:
        lines = self.stderr_text().splitlines()[-n:]
        return ('\n--- stderr tail ---\n' + '\n'.join(lines)) if lines else ''

    # -- signals --
    def kill_pid(self, pid: int, sig: int = signal.SIGKILL) -> None:
        """Signal ``pid`` (a member of this tree), tracking its subtree first
        so that children it leaves behind are still torn down."""
        p = self._tracked.get(pid)
        if p is None:
            p = psutil.Process(pid)
            self._track(p)
        try:
            for c in p.children(recursive=True):
                self._track(c)
        except psutil.Error:
            pass
        _send(p, sig)

    def stop(self, grace: float = 3.0, kill_timeout: float = 5.0,
             reap_timeout: float = 10.0) -> list[int]:
        """SIGINT everything tracked, wait ``grace``, SIGKILL survivors, reap,
        remove socket/dump files of tracked pids. Returns pids that still
        exist afterwards (should be empty). Idempotent."""
        if self.stopped:
            return self.leftovers
        self.stopped = True
        self.pids()
        self._refresh()
        procs = list(self._tracked.values())
        for p in procs:
            if _alive(p):
                try:
                    if _ignores(p.pid, signal.SIGINT):
                        _send(p, signal.SIGKILL)  # no use waiting for it
                    else:
                        _send(p, signal.SIGINT)
                except psutil.Error:
                    pass
        _wait_until(lambda: not any(_alive(p) for p in procs), grace)
        # anything spawned meanwhile, then the hard kill
        self._refresh()
        procs = list(self._tracked.values())
        for p in procs:
            if _alive(p):
                try:
                    _send(p, signal.SIGKILL)
                except psutil.Error:
                    pass
        _wait_until(lambda: not any(_alive(p) for p in procs), kill_timeout)
        try:
            self.popen.wait(timeout=kill_timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=kill_timeout)
        # zombies get reaped by their (dying) parents or by init/subreaper
        _wait_until(lambda: not any(_exists(p) for p in procs), reap_timeout)
        self.leftovers = [p.pid for p in procs if _exists(p)]
        self._remove_files(p.pid for p in procs)
        if self.popen.stdout:
            self.popen.stdout.close()
        self._stderr.close()
        return self.leftovers

    def _remove_files(self, pids: Iterable[int]) -> None:
        pids = set(pids)
        try:
            ns = os.stat('/proc/self/ns/pid').st_ino
        except OSError:
            ns = 0
        for pid in pids:
            for path in (STACKSCOPE_LOG.format(pid=pid), TASKDUMP_LOG.format(ns=ns, pid=pid),
                         TASKDUMP_LOG.format(ns=ns, pid=pid) + '.1'):
                try:
                    os.unlink(path)
                except OSError:
                    pass
        candidates = set(self.files)
        if self.bindspace is not None and self.bindspace.is_dir():
            for entry in self.bindspace.iterdir():
                m = re.search(r'@(\d+)\.sock$', entry.name)
                if m and int(m[1]) in pids:
                    candidates.add(entry)
        for path in candidates:
            try:
                if stat.S_ISSOCK(os.lstat(path).st_mode):
                    os.unlink(path)
            except OSError:
                pass


class Tree(ProcTree):
    """A real actor tree (released ``tractor._child`` or current-runtime
    emulation) started by ``released_tree``/``current_tree``."""

    def __init__(self, argv, *, kind: str, depth: int, breadth: int,
                 hang: str, root_name: str = 'root', port: int | None = None,
                 registry: bool = False, unarmed: Sequence[str] = (),
                 **kw) -> None:
        self.kind = kind
        self.depth = depth
        self.breadth = breadth
        self.hang = hang
        self.root_name = root_name
        self.port = port
        self.registry = registry
        self.unarmed = tuple(unarmed)
        self.expected = expected_names(depth, breadth)
        super().__init__(argv, label=f'{kind}-tree', **kw)

    def actors(self) -> dict[str, int]:
        """{actor name: pid} of this tree's live actors as /proc shows them
        (released: the ``--uid`` name; current: the title), plus the root
        under its name. Includes tracked re-parented orphans."""
        found: dict[str, int] = {}
        for pid in self.tracked():
            if pid == self.root:
                st = proc_stat(pid)
                if st and st[0] not in 'ZX':
                    found[self.root_name] = pid
                continue
            name = actor_name_of(pid)
            if name is not None:
                found[name] = pid
        return found

    def wait_ready(self, timeout: float = 60) -> dict[str, int]:
        """Wait for ``READY`` and for every expected actor to be visible in
        /proc; return ``actors()``."""
        start = time.monotonic()
        self.wait_line('READY', timeout)
        want = set(self.expected) | {self.root_name}
        found: dict[str, int] = {}

        def all_seen() -> bool:
            nonlocal found
            found = self.actors()
            return want <= set(found)
        if not _wait_until(all_seen, max(1.0, timeout - (time.monotonic() - start))):
            raise TreeError(
                f'{self.label}: READY but actors missing: '
                f'{sorted(want - set(found))}' + self._stderr_tail())
        return found

    def pid_of(self, name: str) -> int:
        return self.actors()[name]

    def children_of(self, pid: int) -> list[int]:
        try:
            return [c.pid for c in psutil.Process(pid).children()]
        except psutil.Error:
            return []

    def orphan(self, name: str, timeout: float = 10) -> list[int]:
        """SIGKILL actor ``name`` so its children get re-parented (to init or
        a subreaper); return the pids of those children still alive, all
        tracked for teardown. Use a hang whose leaves cannot notice the lost
        parent (``sleep``) if the orphans must stay around."""
        pid = self.pid_of(name)
        kids = self.children_of(pid)
        self.kill_pid(pid, signal.SIGKILL)

        def reparented() -> bool:
            for k in kids:
                st = proc_stat(k)
                if st is not None and st[1] == pid:
                    return False
            st = proc_stat(pid)
            return st is None or st[0] in 'ZX'
        if not _wait_until(reparented, timeout):
            raise TreeError(f'children of {name} ({pid}) not re-parented')
        return [k for k in kids if (s := proc_stat(k)) and s[0] not in 'ZX']


# --- released runtime venv ------------------------------------------------------

RELEASED_PKGS = ['trio==0.21.0', 'async_generator', 'trio_typing',
                 'tricycle<0.3', 'colorlog', 'wrapt', 'msgspec', 'pdbpp']


def tractor_venv_dir() -> Path:
    return Path(os.environ.get('TRACTOR_DIAG_TRACTOR_VENV')
                or REPO / '.venv-tractor')


def _venv_works(py: Path) -> bool:
    if not py.is_file():
        return False
    try:
        r = subprocess.run(
            [str(py), '-c', 'import tractor, trio; '
             'assert trio.__version__.startswith("0.21")'],
            capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def _find_python311() -> str | None:
    exe = shutil.which('python3.11')
    if exe:
        return exe
    if sys.version_info[:2] == (3, 11):
        return getattr(sys, '_base_executable', None) or sys.executable
    return None


def ensure_tractor_venv(venv: Path | None = None) -> Path:
    """Path of the released runtime's python, creating the venv (python3.11,
    tractor 0.1.0a5 and its pinned dependencies: ``./dev``'s ``tractor_venv``) when it
    is missing or broken. Raises ``TreeError`` when that fails."""
    venv = Path(venv or tractor_venv_dir())
    py = venv / 'bin' / 'python'
    if _venv_works(py):
        return py
    base = _find_python311()
    if base is None:
        raise TreeError('no python3.11 on PATH to create the released '
                        f'tractor runtime venv at {venv}')
    lock_path = Path(str(venv) + '.lock')
    import fcntl
    with open(lock_path, 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _venv_works(py):  # made by someone else meanwhile
            return py
        shutil.rmtree(venv, ignore_errors=True)
        steps = [
            [base, '-m', 'venv', str(venv)],
            [str(venv / 'bin' / 'pip'), 'install', '-q', '--no-deps',
             'tractor==0.1.0a5'],
            [str(venv / 'bin' / 'pip'), 'install', '-q', *RELEASED_PKGS],
        ]
        for cmd in steps:
            r = subprocess.run(cmd, capture_output=True, text=True,
                               timeout=900)
            if r.returncode != 0:
                raise TreeError(f'creating {venv} failed at {cmd}:\n'
                                f'{r.stdout}\n{r.stderr}')
        (venv / '.installed').touch()
    if not _venv_works(py):
        raise TreeError(f'{venv} created but `import tractor` fails')
    return py



# --- current runtimes (repo main, the main_thread_forkserver branch) ------------

RUNTIME_SCRIPT = TREES_DIR / 'runtime_tree.py'
RUNTIME_VENV_ENV = {'main': 'TRACTOR_DIAG_TRACTOR_MAIN_VENV',
                    'mtf': 'TRACTOR_DIAG_TRACTOR_MTF_VENV'}
# Which runtime each spawn method needs.
BACKEND_RUNTIME = {'trio': 'main', 'mp_spawn': 'main', 'mp_forkserver': 'main',
                   'main_thread_forkserver': 'mtf'}
# Put first on PYTHONPATH, this makes ``import setproctitle`` fail in every
# process of a tree (children inherit the environment): the runtime without
# its optional title dependency, without touching the venv.
NO_SETPROCTITLE = TREES_DIR / 'no_setproctitle'
# Same way: every leaf stalls in its boot window, before its title is set.
STALL_LEAF_TITLE = TREES_DIR / 'stall_leaf_title'


def runtime_python(which: str) -> Path | None:
    """Python of the current-runtime venv ``which`` (``main``/``mtf``), or
    None when it is not installed."""
    venv = os.environ.get(RUNTIME_VENV_ENV[which]) or REPO / f'.venv-tractor-{which}'
    py = Path(venv) / 'bin' / 'python'
    return py if py.is_file() else None


def runtime_missing_reason(which: str) -> str:
    return (f'current tractor runtime ({which}) not installed: run ./dev test, '
            f'or set TRACTOR_DIAG_RUNTIMES to a directory of tractor source '
            f'snapshots (or {RUNTIME_VENV_ENV[which]} to a venv)')


class RuntimeTree(ProcTree):
    """``runtime_tree.py`` on a current runtime: ``.actors`` is the
    ``{name: pid}`` the root reported (the truth, not read from /proc)."""

    def __init__(self, python: Path, *, backend: str, transport: str,
                 depth: int = 2, breadth: int = 1, hang: str = 'sleep',
                 wedge_root: bool = False, titles: bool = True,
                 xdg: Path, log_dir: Path, port: int | None = None,
                 label: str | None = None, netns: bool = False,
                 stall_leaves: bool = False, armed: bool = False) -> None:
        self.backend = backend
        self.transport = transport
        self.xdg = xdg
        self.port = port if port is not None else (free_port() if transport == 'tcp' else None)
        argv = [python, RUNTIME_SCRIPT, '--start-method', backend,
                '--transport', transport, '--depth', str(depth),
                '--breadth', str(breadth), '--hang', hang]
        if self.port is not None:
            argv += ['--port', str(self.port)]
        if wedge_root:
            argv.append('--wedge-root')
        self.env = dict(os.environ, XDG_RUNTIME_DIR=str(xdg),
                        PYTHONWARNINGS='ignore')
        first = ([NO_SETPROCTITLE] if not titles else []) + (
            [STALL_LEAF_TITLE] if stall_leaves else [])
        if first:
            self.env['PYTHONPATH'] = os.pathsep.join(
                [str(d) for d in first]
                + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p])
        if armed:
            # our task dumper in every Python process of the tree, as
            # `tractor-diag run` arms it
            from tractor_diag.taskdump import startup_env
            self.env = startup_env(self.env)
        if netns:
            # a network namespace of its own (loopback up): free to hold
            # the default registry port 127.0.0.1:1616
            argv = ['unshare', '--net', 'sh', '-c',
                    'ip link set lo up && exec "$0" "$@"', *argv]
        self.actors: dict[str, int] = {}
        super().__init__(argv, env=self.env, log_dir=log_dir,
                         label=label or f'{backend}-{transport}',
                         bindspace=xdg / 'tractor')

    def wait_ready(self, timeout: float = 90) -> dict[str, int]:
        import json
        line = self.wait_line('READY', timeout)
        self.actors = json.loads(line.split(None, 1)[1])
        for pid in self.actors.values():
            self.track_pid(pid)
        self.tracked()
        return self.actors
