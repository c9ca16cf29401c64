"""Who is a tractor process, from evidence beyond its own command line.

`actors.parse_actor` reads what one process says about itself (title,
``tractor._child`` argv, a fork thread's name, the fork-server command
line). That misses every backend and set-up where the process does not say
it: this pass looks at the processes of one scan together, at the sockets
they hold and at a few of their files, and fills in `Proc.actor`:

- ``mp_forkserver``: the sidecar and the actors it forks share one command
  line; a process whose parent runs the same line was forked by it (an
  actor, under the sidecar's parent in the actor tree), the other one is
  the sidecar.
- ``mp_spawn``: a multiprocessing spawn child is an actor when its parent
  is a tractor process, or when its environment carries the
  ``PYTHONBREAKPOINT`` a tractor root sets before it spawns and it listens
  on a socket (that is what still marks an orphan).
- bindspace sockets: ``name@pid.sock`` files in the UDS bindspace name the
  actor that holds them (checked: the pid must hold the listening socket,
  a stale file's pid may be reused); a process without any other marker
  holding one is a root actor, and so is the holder of the registry
  (``registry@1616.sock``, or a TCP listener on port 1616).
- a process that is not itself marked but is the parent of tractor
  processes runs the runtime too: a root actor.
- ``subint``: threads named ``subint-driver[N]`` each run one actor inside
  the process; they are listed in `Proc.hosted`.
- ``mp_forkserver``: which actor asked the sidecar for an actor (its
  logical parent) is the other holder of its parent-sentinel pipe.
- an mp actor named by its own stack earlier in this program (`learn_name`,
  from `stacks`) keeps that name.
- ``tractor._child`` argv is the released runtime's shape, and the current
  runtime's trio backend before the title is set: the interpreter tells
  them apart (current tractor needs Python >= 3.13).

Every read here tolerates a process that vanished. Only processes that
already look like candidates get the extra reads, so a pass stays cheap.
"""
from __future__ import annotations

import os
import re
import time
from collections.abc import Callable

from .classify import is_reparented, is_subreaper
from .actors import (
    REGISTRY_SENTINEL_PORT, SUBINT_THREAD_PREFIX, is_mp_spawn_child, parse_sock_name,
)
from .model import ActorInfo, How, Proc
from .model import replace as _replace
from .runtimedir import possible_dirs

REGISTRY_SOCK = f"registry@{REGISTRY_SENTINEL_PORT}.sock"
# ``PYTHONBREAKPOINT`` as a tractor root sets it while its runtime is open
# (``0`` blocks ``breakpoint()``; the other is its greenback hook); every
# child it execs inherits it.
_BREAKPOINT_MARKERS = (b"PYTHONBREAKPOINT=0\0", b"PYTHONBREAKPOINT=tractor.")
_PY_VERSION = re.compile(r"python(\d+)\.(\d+)")
# Roots of tractor processes are looked for among these (a process holding
# the registry socket): the usual names of a Python program.
_PYTHONISH = ("python", "pytest", "pypy", "xonsh", "ipython")


def _is_tractor(proc: Proc | None) -> bool:
    return proc is not None and proc.actor is not None


_subreaper_like = is_subreaper


def recognise(procs: dict[int, Proc], *, bindspace_dir: str | None = None,
              children_of: Callable[[int], list[int]] | None = None,
              tables_max_age: float = 0.0) -> list[int]:
    """Complete `Proc.actor` (and `Proc.hosted`) across ``procs`` in place.

    ``children_of`` answers for pids whose children are not all in
    ``procs`` (a partial scan); by default the children are those in
    ``procs``. Returns the pids newly recognised (they may need detail).
    ``tables_max_age``: how old (in seconds) the socket evidence a repeated
    scan reuses may be (see `_registry_tcp`, `_bindspace`, `_mp_spawn`);
    one-shot scans read it afresh.
    """
    kids: dict[int, list[int]] = {}
    for p in procs.values():
        kids.setdefault(p.ppid, []).append(p.pid)

    def children(pid: int) -> list[int]:
        if children_of is not None:
            return children_of(pid)
        return kids.get(pid, [])

    before = {pid for pid, p in procs.items() if p.actor is not None}
    _generations(procs)
    _forkservers(procs)
    _bindspace(procs, bindspace_dir, tables_max_age)
    _registry_tcp(procs, tables_max_age)
    # mp_spawn children and the roots above them know each other: the
    # environment marks the children, a marked child marks its parent, a
    # marked parent marks the unmarked rest of its children.
    _mp_spawn(procs, by_parent=False, max_age=tables_max_age)
    _parents_of_actors(procs, children)
    _mp_spawn(procs, by_parent=True)
    _parents_of_actors(procs, children)
    _subint_threads(procs)
    _recall_names(procs)
    return sorted(pid for pid, p in procs.items() if p.actor is not None and pid not in before)


# --- per-backend rules ------------------------------------------------------------

# (pid, start ticks, comm) -> the Python version its executable names: the
# executable changes only with an exec, which a repeated scan (the
# dashboard's) sees as a new comm; without this, a readlink per actor per tick.
_VERSIONS: dict[tuple[int, int, str], tuple[int, int] | None] = {}


def _exe_version(proc: Proc) -> tuple[int, int] | None:
    key = (proc.pid, _ticks(proc), proc.comm)
    if key in _VERSIONS:
        return _VERSIONS[key]
    try:
        exe = os.readlink(f"/proc/{proc.pid}/exe")
    except OSError:
        return None  # gone, or not ours to read: not remembered
    m = _PY_VERSION.search(os.path.basename(exe))
    version = (int(m[1]), int(m[2])) if m else None
    if len(_VERSIONS) >= _LEARNED_MAX:
        _VERSIONS.clear()
    _VERSIONS[key] = version
    return version


def _generations(procs: dict[int, Proc]) -> None:
    for proc in procs.values():
        a = proc.actor
        if a is None or a.how != "child-argv":
            continue
        version = _exe_version(proc)
        if version is not None and version >= (3, 13):
            proc.actor = _replace(a, generation="current")


def _forkservers(procs: dict[int, Proc]) -> None:
    forked: dict[int, list[Proc]] = {}  # sidecar pid -> the actors it forked
    for proc in procs.values():
        a = proc.actor
        if a is None or a.how != "mp-forkserver":
            continue
        parent = procs.get(proc.ppid)
        if parent is not None and parent.cmdline == proc.cmdline:
            forked.setdefault(parent.pid, []).append(proc)
        else:
            proc.actor = _replace(a, role="forkserver")
    for sidecar, actors in forked.items():
        root = procs[sidecar].ppid
        grand = procs.get(root)
        if grand is None or _subreaper_like(grand):
            root = None  # an orphaned sidecar: who asked for its actors is gone
        spawners = _sentinel_writers(actors, root, procs)
        for proc in actors:
            spawner = spawners.get(proc.pid)
            if spawner is not None:
                proc.actor = _replace(proc.actor, logical_parent=spawner,
                                      parent_by="sentinel-pipe")
            elif root is not None:
                proc.actor = _replace(proc.actor, logical_parent=root, parent_by="sidecar-parent")


# (pid, start ticks) of a forked actor -> (pid, start ticks) of the writer
# of its sentinel pipe: the pipe lasts as long as both do, so a repeated
# scan (the dashboard's) reads fds only for actors it has not placed yet.
_SPAWNERS: dict[tuple[int, int], tuple[int, int]] = {}


def _sentinel_writers(actors: list[Proc], root: int | None,
                      procs: dict[int, Proc]) -> dict[int, int]:
    known: dict[int, int] = {}
    for proc in actors:
        hit = _SPAWNERS.get((proc.pid, _ticks(proc)))
        if hit is not None and hit[0] in procs and _ticks(procs[hit[0]]) == hit[1]:
            known[proc.pid] = hit[0]
    if len(known) == len(actors):
        return known
    found = _read_sentinel_writers(actors, root)
    if len(_SPAWNERS) >= _LEARNED_MAX:
        _SPAWNERS.clear()
    for pid, spawner in found.items():
        _SPAWNERS[(pid, _ticks(procs[pid]))] = (spawner, _ticks(procs[spawner]))
    return found


def _read_sentinel_writers(actors: list[Proc], root: int | None) -> dict[int, int]:
    """Which process asked the sidecar for each of ``actors``.

    multiprocessing gives the forked child the read end of a pipe whose
    write end only the process that asked for it keeps (the child's parent
    sentinel: it sees EOF when its spawner dies). Every actor of one sidecar
    was asked for by the sidecar's parent or by another of them, so those
    are the only writers looked for; a pipe any third of them holds is a
    shared one (the resource tracker's, the fork server's alive pipe).
    """
    if len(actors) + (root is not None) < 2:
        return {}
    ends = {p.pid: _pipe_ends(p.pid) for p in actors}
    if root is not None:
        ends[root] = _pipe_ends(root)
    holders: dict[int, list[tuple[int, str]]] = {}
    for pid, pipes in ends.items():
        for inode, mode in pipes.items():
            holders.setdefault(inode, []).append((pid, mode))
    out: dict[int, int] = {}
    for proc in actors:
        writers = set()
        for inode, mode in ends[proc.pid].items():
            both = holders[inode]
            if mode != "r" or len(both) != 2:
                continue
            writers.update(pid for pid, m in both if pid != proc.pid and m == "w")
        if len(writers) == 1:
            out[proc.pid] = writers.pop()
    return out


def _pipe_ends(pid: int) -> dict[int, str]:
    """Pipe inode -> ``r``/``w``/``rw`` for the pipes among ``pid``'s fds
    (empty when it is gone or its fds cannot be read)."""
    try:
        dfd = os.open(f"/proc/{pid}/fd", os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return {}
    out: dict[int, str] = {}
    try:
        for name in os.listdir(dfd):
            try:
                link = os.readlink(name, dir_fd=dfd)
            except OSError:
                continue  # closed meanwhile
            if not link.startswith("pipe:["):
                continue
            mode = _fd_mode(pid, name)
            if mode is not None:
                inode = int(link[6:-1])
                out[inode] = mode if out.get(inode, mode) == mode else "rw"
    except OSError:
        return {}
    finally:
        os.close(dfd)
    return out


def _fd_mode(pid: int, fd: str) -> str | None:
    try:
        with open(f"/proc/{pid}/fdinfo/{fd}", "rb") as f:
            for line in f:
                if line.startswith(b"flags:"):
                    acc = int(line.split()[1], 8) & os.O_ACCMODE
                    return {os.O_RDONLY: "r", os.O_WRONLY: "w"}.get(acc, "rw")
    except (OSError, ValueError, IndexError):
        return None
    return None


# What a repeated scan (the dashboard's) learnt of a process from its
# environment and sockets, by (what, pid, start ticks): (when, the answer).
# A yes stands for the process's life (its environment is fixed at exec, an
# actor that listened is one); a no is asked again after ``max_age`` s.
_EVIDENCE: dict[tuple[str, int, int], tuple[float, bool]] = {}


def _recalled(what: str, proc: Proc, max_age: float, ask: Callable[[], bool]) -> bool:
    if max_age <= 0:
        return ask()  # a one-shot scan: always afresh
    key = (what, proc.pid, _ticks(proc))
    now = time.monotonic()
    hit = _EVIDENCE.get(key)
    if hit is not None and (hit[1] or now - hit[0] < max_age):
        return hit[1]
    answer = ask()
    if len(_EVIDENCE) >= _LEARNED_MAX:
        _EVIDENCE.clear()
    _EVIDENCE[key] = (now, answer)
    return answer


def _mp_spawn(procs: dict[int, Proc], *, by_parent: bool, max_age: float = 0.0) -> None:
    listening: set[int] | None = None

    def serves(proc: Proc) -> bool:
        # ``PYTHONBREAKPOINT=0`` may be exported for other reasons: an
        # actor also serves its channel, a pool worker listens on nothing.
        nonlocal listening
        if listening is None:
            listening = _listening_inodes()
        from .socktables import socket_inodes

        return bool(listening & set(socket_inodes(proc.pid) or ()))

    for proc in procs.values():
        if proc.actor is not None or not is_mp_spawn_child(proc.cmdline):
            continue
        parent = procs.get(proc.ppid)
        if by_parent:
            if not (_is_tractor(parent) and parent.actor.role != "forkserver"):
                continue
        else:
            # the environment is fixed at exec: asked once
            if not _recalled("environ", proc, float("inf") if max_age > 0 else 0.0,
                             lambda: _environ_marked(proc.pid)):
                continue
            if not _recalled("serves", proc, max_age, lambda: serves(proc)):
                continue
        proc.actor = ActorInfo(name="", generation="current", how="mp-spawn",
                               sure="likely", backend="mp_spawn")


def _listening_inodes() -> set[int]:
    from .socktables import read_tables

    try:
        tables = read_tables(listening_only=True)
    except OSError:
        return set()
    return {t.inode for t in tables.tcp if t.inode} | {u.inode for u in tables.unix}


def _environ_marked(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = b"\0" + f.read()
    except OSError:
        return False
    return any(b"\0" + m in env for m in _BREAKPOINT_MARKERS)


def _parents_of_actors(procs: dict[int, Proc], children: Callable[[int], list[int]]) -> None:
    for proc in procs.values():
        if proc.actor is not None:
            continue
        kids = children(proc.pid)
        if not kids or proc.state in ("Z", "X", "x") or _subreaper_like(proc):
            continue
        for c in kids:
            child = procs.get(c)
            if (child is not None and child.actor is not None
                    and child.actor.role in ("subactor", "forkserver", "booting")
                    and not is_reparented(child, proc)):
                proc.actor = ActorInfo(name="", generation=child.actor.generation,
                                       how="parent-of-actors", sure="likely", role="root")
                break


# --- sockets ----------------------------------------------------------------------

# The last reading of the bindspace: (when, the claims and registry file
# seen then with each claimant's start ticks, {pid: its real socket names},
# the registry socket's holders as (pid, start ticks)).
_BINDSPACE: tuple[float, object, dict[int, list[str]], set[tuple[int, int]]] = (
    float("-inf"), None, {}, set())


def _bindspace(procs: dict[int, Proc], bindspace_dir: str | None, max_age: float = 0.0) -> None:
    """Names from ``name@pid.sock`` files the pid really listens on; the
    holder of the registry socket.

    With no dir given, every dir the runtime could have bound in
    (`possible_dirs`) is looked in, not only the one platformdirs would
    pick: a file counts only when the kernel's table has its pid (or a
    registry candidate) listening on that very path, so the others cannot
    mislead, and importing platformdirs (with pathlib, on every pass that
    meets a live actor's socket file) cost 8-10 ms of start-up.

    ``max_age``: a repeated scan whose dirs list the same files for the
    same processes reuses the last reading of the socket table and fds for
    that many seconds."""
    global _BINDSPACE
    dirs = possible_dirs() if bindspace_dir is None else [bindspace_dir]
    found = []
    for d in dirs:
        claims, registry = _claims(_listdir(d), procs)
        if claims or registry:
            found.append((d, claims, registry))
    if not found:
        return
    seen = frozenset((d, registry, frozenset((pid, _ticks(procs[pid]), f)
                                             for pid, fs in claims.items() for f in fs))
                     for d, claims, registry in found)
    now = time.monotonic()
    read_at, was, names, holders = _BINDSPACE
    if not (max_age > 0 and was == seen and now - read_at < max_age):
        names, holders = _read_bindspace(procs, found)
        _BINDSPACE = (now, seen, names, holders)
    for pid, got in names.items():
        _named_by_sockets(procs[pid], got)
    if holders:
        for proc in procs.values():
            if (proc.pid, _ticks(proc)) in holders and _candidate(proc):
                _mark_root(proc)


def _read_bindspace(procs: dict[int, Proc], found: list[tuple[str, dict[int, list[str]], bool]],
                    ) -> tuple[dict[int, list[str]], set[tuple[int, int]]]:
    """-> ({pid: the names it really listens under}, the registry socket's
    holders as (pid, start ticks))."""
    from .socktables import UnixTable, socket_inodes

    table = UnixTable()
    names: dict[int, list[str]] = {}
    held: dict[int, set[int]] = {}
    registry_inodes: set[int] = set()
    for d, claims, registry in found:
        for pid, fnames in claims.items():
            if pid not in held:
                held[pid] = set(socket_inodes(pid) or ())
            for f in sorted(fnames):
                name = parse_sock_name(f)[0]
                if (held[pid] & set(table.listening.get(os.path.join(d, f), ()))
                        and name not in names.get(pid, ())):
                    names.setdefault(pid, []).append(name)
        if registry:
            registry_inodes.update(table.listening.get(os.path.join(d, REGISTRY_SOCK), ()))
    holders: set[tuple[int, int]] = set()
    if registry_inodes:
        candidates = [p for p in procs.values() if _candidate(p)]
        holders = {(p.pid, _ticks(p)) for p in _holders(candidates, registry_inodes)}
    return names, holders


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def _claims(names: list[str], procs: dict[int, Proc]) -> tuple[dict[int, list[str]], bool]:
    """-> ({pid in ``procs``: its ``name@pid.sock`` files}, whether the
    registry's socket file is there)."""
    claims: dict[int, list[str]] = {}
    registry = False
    for fname in names:
        if fname == REGISTRY_SOCK:
            registry = True
            continue
        parsed = parse_sock_name(fname)
        if parsed is not None and parsed[1] in procs:
            claims.setdefault(parsed[1], []).append(fname)
    return claims, registry


def _named_by_sockets(proc: Proc, names: list[str]) -> None:
    a = proc.actor
    if a is None:
        role = "subactor" if is_mp_spawn_child(proc.cmdline) else "root"
        backend = "mp_spawn" if role == "subactor" else None
        proc.actor = ActorInfo(name=names[0], generation="current", how="bindspace",
                               role=role, backend=backend)
    elif not a.name or a.name_truncated:
        proc.actor = _replace(a, name=names[0], name_truncated=False, sure="certain")
    if len(names) > 1:
        # Several actors bound sockets under one pid: sub-interpreters.
        own = proc.actor.name
        proc.hosted = [ActorInfo(name=n, generation="current", how="bindspace",
                                 role="hosted", backend="subint")
                       for n in names if n != own]


# The registry's TCP holders as last read: (when, {(pid, start ticks)}).
_TCP_HOLDERS: tuple[float, set[tuple[int, int]]] = (float("-inf"), set())


def _registry_tcp(procs: dict[int, Proc], max_age: float = 0.0) -> None:
    """Mark the holder of a TCP listener on the registry's port. ``max_age``:
    a repeated scan (the dashboard's) reads the TCP table and the
    candidates' fds again only that many seconds after the last time, and
    marks the holders found then in between."""
    global _TCP_HOLDERS
    now = time.monotonic()
    read_at, holders = _TCP_HOLDERS
    if not holders and now - read_at < max_age:
        return  # none at the last read, and not time to look again
    candidates = [p for p in procs.values() if _candidate(p)]
    if not candidates:
        return
    if now - read_at >= max_age:
        from .socktables import read_tables

        try:
            tables = read_tables(unix=False, listening_only=True)
        except OSError:
            return
        inodes = {t.inode for t in tables.tcp
                  if t.listening and t.local.port == REGISTRY_SENTINEL_PORT and t.inode}
        holders = {(p.pid, _ticks(p)) for p in _holders(candidates, inodes)} if inodes else set()
        _TCP_HOLDERS = (now, holders)
    for proc in candidates:
        if (proc.pid, _ticks(proc)) in holders:
            _mark_root(proc)


def _candidate(proc: Proc) -> bool:
    """Might hold a registry without saying so: an unmarked live program of
    ours that runs Python."""
    if proc.actor is not None or not proc.cmdline or proc.state in ("Z", "X", "x"):
        return False
    exe = proc.cmdline[0].rpartition("/")[2]
    if not (exe.startswith(_PYTHONISH) or proc.comm.startswith(_PYTHONISH)):
        return False
    return proc.uid == os.getuid()


def _holders(candidates: list[Proc], inodes: set[int]) -> list[Proc]:
    from .socktables import socket_inodes

    return [p for p in candidates if inodes & set(socket_inodes(p.pid) or ())]


def _mark_root(proc: Proc) -> None:
    proc.actor = ActorInfo(name="", generation="current", how="registry", role="root")


# --- threads ----------------------------------------------------------------------

def _subint_threads(procs: dict[int, Proc], min_python: tuple[int, int] = (3, 14)) -> None:
    for proc in procs.values():
        if proc.actor is None or proc.num_threads < 2:
            continue
        version = _exe_version(proc)
        if version is not None and version < min_python:
            continue  # sub-interpreter actors need Python 3.14
        drivers = _thread_comms(proc.pid, SUBINT_THREAD_PREFIX)
        if not drivers:
            continue
        # a process a repeated scan did not read again keeps what the last
        # pass added: counted afresh, not added twice
        by_sockets = [h for h in proc.hosted if h.how != "subint-thread"]
        named = {h.name for h in by_sockets}
        extra = [ActorInfo(name="", generation="current", how="subint-thread",
                           sure="likely", role="hosted", backend="subint", thread=t)
                 for t in drivers]
        # sockets name some of them; the threads say how many there are
        proc.hosted = by_sockets + extra[len(named):]


def _thread_comms(pid: int, prefix: str) -> list[str]:
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    out = []
    for tid in sorted(tids, key=lambda t: int(t) if t.isdigit() else 0):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm", "rb") as f:
                comm = f.read().rstrip(b"\n").decode("utf-8", "replace")
        except OSError:
            continue
        if comm.startswith(prefix):
            out.append(comm)
    return out


# --- names learned from inside ------------------------------------------------------

# (pid, start time in ticks) -> (name, how): an actor nothing outside names,
# named by its own stack (`stacknames`) or its own task dump (`tasks`), both
# read by `stacks.capture`, keeps that name in this program's later scans
# (the dashboard's), not in another process's.
_LEARNED: dict[tuple[int, int], tuple[str, How]] = {}
_LEARNED_MAX = 4096


def _ticks(proc: Proc) -> int:
    return round(proc.create_time * 100)


def learn_name(proc: Proc, name: str, how: How = "mp-name") -> None:
    """``proc`` (an actor without a name) is called ``name``, by what it
    says itself: set it in place, and remember it for this process's later
    scans."""
    if len(_LEARNED) >= _LEARNED_MAX:
        _LEARNED.clear()
    _LEARNED[(proc.pid, _ticks(proc))] = (name, how)
    if proc.actor is not None:
        proc.actor = _replace(proc.actor, name=name, how=how, sure="certain")


def _recall_names(procs: dict[int, Proc]) -> None:
    if not _LEARNED:
        return
    for proc in procs.values():
        a = proc.actor
        if a is None or a.name or a.role not in ("subactor", "root", "booting"):
            continue
        # the start time may read one tick apart between passes
        t = _ticks(proc)
        hit = next((h for k in (t, t - 1, t + 1) if (h := _LEARNED.get((proc.pid, k)))), None)
        if hit is not None:
            proc.actor = _replace(a, name=hit[0], how=hit[1], sure="certain")
