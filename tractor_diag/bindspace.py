"""The UDS bindspace: which socket files belong to live actors, which are stale.

A tractor runtime that talks over Unix-domain sockets binds one socket file
per actor in ``platformdirs.user_runtime_dir('tractor')``, named
``<name>@<pid>.sock`` (``actor.<32 hex>@<pid>.sock`` when the path would
overflow the 108-byte limit), plus ``registry@1616.sock`` for the registrar,
where 1616 is a sentinel, not a pid. A socket file outlives its binder when
the binder is killed, so the dir fills with stale files over time.

Each entry is classified by its binder:

- ``live-active``: the binder runs and is not orphaned;
- ``orphaned-alive``: the binder runs but is an orphaned actor;
- ``orphaned-dead``: the binder is gone or a zombie (or its pid now belongs to
  a process younger than the socket file: the pid was reused);
- ``non-tractor``: not a socket, or a name of neither shape.

The registry sentinel is alive exactly when something listens on its path.
Who listens is read from the kernel's Unix socket table (`socktables`, one
read per scan). That table
is per network namespace and lists the path a socket was bound to even after
the file was replaced, so it can only err towards "listening": the sweep
treats "listening" as "keep", which makes that the safe direction.

A dir shared with a container is seen by binders of other network
namespaces, whose sockets our table never lists. A binder that runs in
another namespace is kept and said to be there (its own table,
``/proc/<pid>/net/unix``, tells whether it listens). A socket that looks
dead here (the registry sentinel, a binder pid gone from our PID namespace)
is looked up in the table of every other network namespace we can read, one
process of each; a listener found there keeps it. What stays invisible: a
namespace none of whose processes we may read, and a listener that bound the
file under another spelling of the path (another mount namespace's view).

The sweep (`sweep`) never follows a symlink and never leaves the dir: it
works through a dir fd, re-checks each file (same inode, still a socket, still
ours, binder still dead, still nobody listening) right before unlinking it,
and last of all connects to the file itself: only a refused connection
proves that nothing listens on it, from any namespace, by any path.
"""
from __future__ import annotations

import os
import stat
import time

from . import procfs
from .actors import REGISTRY_SENTINEL_PORT, is_hashed_sock_name, parse_sock_name
from .classify import is_reparented
from .errors import DiagError, NotFound, UsageError
# the Structs live in the data layer; their old names here stay importable
from .filemodel import SOCK_STATUSES, BindspaceScan, DirSource, Removal, SockEntry, SockStatus  # noqa: F401
from .runtimedir import APP, default_dir
from .socktables import UnixTable, parse_proc_unix
from .socktables import holders as socket_holders

REGISTRY_NAME = f"registry@{REGISTRY_SENTINEL_PORT}.sock"
# A binder starts before it binds, so a process younger than the socket file
# holds a reused pid. Start times from /proc/<pid>/stat derive from the boot
# time truncated to whole seconds: they read up to 1 s *early*, which errs
# towards "the binder", never towards "reused". The slack absorbs clock-tick
# granularity and small clock adjustments.
_CLOCK_SLACK = 0.25


# --- where the bindspace is (`runtimedir`) -----------------------------------

def resolve_dir(arg: str | None = None) -> tuple[str, DirSource, list[str]]:
    """``None`` -> the default dir; a bare NAME -> that app's dir beside the
    default one; anything with a ``/`` (or ``.``, ``~``) -> that path as is."""
    if arg is None:
        path, notes = default_dir()
        return path, "default", notes
    if not arg.strip():
        # `reap --uds --bindspace "$UNSET"` must not sweep the default dir
        raise UsageError(f"an empty bindspace dir ({arg!r}): give a name or a path, "
                         "or none for the default")
    if "/" in arg or arg.startswith((".", "~")):
        return os.path.expanduser(arg), "path", []
    if arg in ("..",) or "\0" in arg:
        raise UsageError(f"not a bindspace name: {arg!r}")
    base, notes = default_dir()
    return os.path.join(os.path.dirname(base), arg), "name", notes


# --- other network namespaces --------------------------------------------------

class NetTables:
    """Socket tables of the network namespaces other than ours, read through
    ``/proc/<pid>/net/unix`` of one of their processes, each at most once."""

    def __init__(self) -> None:
        try:
            self.mine: str | None = os.readlink("/proc/self/ns/net")
        except OSError:
            self.mine = None
        self._tables: dict[int, UnixTable | None] = {}
        self._foreign: list[tuple[int, UnixTable]] | None = None

    @staticmethod
    def ns_of(pid: int) -> str | None:
        """``net:[…]``; ``""`` when not readable; None when the pid is gone."""
        try:
            return os.readlink(f"/proc/{pid}/ns/net")
        except (PermissionError, ProcessLookupError):
            return "" if os.path.exists(f"/proc/{pid}") else None
        except OSError:
            return None

    def table_of(self, pid: int) -> UnixTable | None:
        if pid not in self._tables:
            try:
                with open(f"/proc/{pid}/net/unix", "rb") as f:
                    text = f.read().decode("utf-8", "surrogateescape")
                self._tables[pid] = UnixTable(parse_proc_unix(text))
            except OSError:
                self._tables[pid] = None
        return self._tables[pid]

    def binder_view(self, pid: int, paths: list[str]) -> tuple[bool, str] | None:
        """For a running binder in another network namespace: (listens on
        one of ``paths`` there, a note); None when it shares ours."""
        ns = self.ns_of(pid)
        if ns is None or self.mine is None or ns == self.mine:
            return None
        if ns == "":
            return False, f"cannot read binder {pid}'s network namespace (its sockets are not in our table)"
        table = self.table_of(pid)
        if table is None:
            return False, f"binder {pid} is in another network namespace ({ns}) whose socket table is not readable"
        listening = any(table.is_listening(p) for p in paths)
        return listening, f"binder {pid} is in another network namespace ({ns})"

    def foreign_listener(self, paths: list[str]) -> int | None:
        """A pid whose (other) network namespace has a listener on ``paths``."""
        if self._foreign is None:
            self._foreign = []
            seen = {self.mine}
            for name in os.listdir("/proc"):
                if not name.isdigit():
                    continue
                ns = self.ns_of(int(name))
                if not ns or ns in seen:
                    continue
                table = self.table_of(int(name))
                if table is not None:
                    seen.add(ns)
                    self._foreign.append((int(name), table))
        for pid, table in self._foreign:
            if any(table.is_listening(p) for p in paths):
                return pid
        return None


# --- the scan -------------------------------------------------------------------

def _file_type(mode: int) -> str:
    for test, name in (
        (stat.S_ISSOCK, "socket"), (stat.S_ISLNK, "symlink"), (stat.S_ISREG, "regular"),
        (stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "fifo"), (stat.S_ISCHR, "char-device"),
        (stat.S_ISBLK, "block-device"),
    ):
        if test(mode):
            return name
    return "unknown"


def _binder_verdict(pid: int, st_mtime: float, procs: dict) -> tuple[SockStatus, str, object]:
    """-> (status, note, proc or None) for the process a socket name claims."""
    proc = procs.get(pid)
    if proc is None:
        return "orphaned-dead", f"binder {pid} is gone", None
    if proc.state in ("Z", "X", "x"):
        return "orphaned-dead", f"binder {pid} is a zombie", proc
    if proc.create_time > st_mtime + _CLOCK_SLACK:
        # The binder existed before it bound the file: a younger process
        # holding that pid is a reuse, not the binder.
        return "orphaned-dead", f"binder gone; pid {pid} now belongs to {proc.title[:40]!r}", proc
    parent = procs.get(proc.ppid)
    if proc.actor is not None and is_reparented(proc, parent):
        return "orphaned-alive", "binder is an orphaned actor", proc
    return "live-active", "", proc


def scan(arg: str | None = None, *, must_exist: bool | None = None,
         holders: bool = True) -> BindspaceScan:
    """Classify every entry of the bindspace dir.

    ``must_exist`` (default: only for an explicit path or name) turns a
    missing dir into `NotFound` instead of an empty scan.
    """
    path, source, notes = resolve_dir(arg)
    if must_exist is None:
        must_exist = source != "default"
    result = BindspaceScan(dir=path, source=source, exists=False, notes=notes,
                           scanned_at=time.time())
    try:
        dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        if must_exist:
            raise NotFound(f"no such bindspace dir: {path}") from None
        result.notes.append("the dir does not exist yet (no actor has bound a socket here)")
        return result
    except NotADirectoryError:
        raise NotFound(f"not a directory: {path}") from None
    except OSError as exc:
        raise DiagError(f"cannot open {path}: {exc.strerror}") from None
    result.exists = True
    real = os.path.realpath(path)
    if real != os.path.abspath(path):
        result.resolved = real
    try:
        names = sorted(os.listdir(dfd))
        stats = {}
        for name in names:
            try:
                stats[name] = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            except OSError:
                continue  # removed while we looked
    finally:
        os.close(dfd)

    table = UnixTable()
    nets = NetTables()
    claimed: dict[str, tuple[str, int]] = {}
    for name, st in stats.items():
        if stat.S_ISSOCK(st.st_mode) and name != REGISTRY_NAME:
            parsed = parse_sock_name(name)
            if parsed is not None:
                claimed[name] = parsed
    procs = _procs_with_parents({pid for _, pid in claimed.values()})

    # the dir as binders may have spelt it: as given, absolute, resolved
    # (joined by hand below: os.path.join per entry and spelling was a third
    # of the scan)
    prefixes = {d if d.endswith("/") else d + "/"
                for d in (path, os.path.abspath(path), real)}
    for name, st in stats.items():
        spellings = [d + name for d in prefixes]
        listening = any(table.is_listening(p) for p in spellings)
        entry = SockEntry(
            name=name, status="non-tractor", kind="other",
            file_type=_file_type(st.st_mode), uid=st.st_uid, mtime=st.st_mtime,
            ino=st.st_ino, listening=listening,
        )
        if entry.file_type != "socket":
            entry.note = f"not a socket ({entry.file_type})"
        elif name == REGISTRY_NAME:
            entry.kind = "registry"
            if listening:
                entry.status = "live-active"
                entry.note = "registrar sentinel: something listens on it"
                if holders:
                    inodes = {i for p in spellings for i in table.listening.get(p, ())}
                    entry.holders = socket_holders(inodes)
            else:
                entry.status = "orphaned-dead"
                entry.note = "registrar sentinel: nothing listens on it"
        elif name in claimed:
            actor, pid = claimed[name]
            entry.kind = "actor"
            entry.pid = pid
            entry.hashed = is_hashed_sock_name(actor)
            entry.actor = None if entry.hashed else actor
            status, note, proc = _binder_verdict(pid, st.st_mtime, procs)
            entry.status = status
            entry.note = note
            if proc is not None and status != "orphaned-dead":
                entry.binder = proc.title
                entry.binder_ppid = proc.ppid
            elsewhere = None if listening or status == "orphaned-dead" else \
                nets.binder_view(pid, spellings)
            if elsewhere is not None:
                entry.listening, where = elsewhere
                entry.note = (note + "; " if note else "") + where
            if status != "orphaned-dead" and not entry.listening:
                entry.note = (entry.note + "; " if entry.note else "") + "nothing listens on it"
        else:
            entry.note = "socket with a name of neither <name>@<pid>.sock shape"
        if entry.status == "orphaned-dead":
            # dead as far as our namespace shows: a listener elsewhere keeps it
            other = nets.foreign_listener(spellings)
            if other is not None:
                entry.status = "live-active"
                entry.listening = True
                there = f"something listens on it in another network namespace (that of pid {other})"
                entry.note = (f"registrar sentinel: {there}" if entry.kind == "registry"
                              else f"{entry.note}, but {there}")
        result.entries.append(entry)
    return result


def _procs_with_parents(pids: set[int]) -> dict:
    """The claimed binders and their parents: two small targeted reads
    instead of a pass over every process."""
    if not pids:
        return {}
    procs = procfs.scan(only=sorted(pids))
    parents = {p.ppid for p in procs.values()} - set(procs)
    if parents:
        procs.update(procfs.scan(only=sorted(parents), detail_actors=False))
    return procs


# --- the sweep ------------------------------------------------------------------

def sweep(result: BindspaceScan, *, dry_run: bool = False, uid: int | None = None,
          also_dead: set[int] = frozenset()) -> list[Removal]:
    """Unlink the stale (``orphaned-dead``) socket files of ``result``.

    Only sockets named like actors or the registry, owned by ``uid`` (default:
    ours), inside ``result.dir``. Each is re-checked right before the unlink.
    In a dry run, ``also_dead`` names binder pids about to be reaped: their
    sockets are listed as what would go once they exit.
    """
    if not result.exists:
        return []
    uid = os.getuid() if uid is None else uid
    chosen = [
        e for e in result.entries
        if e.kind in ("actor", "registry") and e.file_type == "socket" and e.uid == uid
        and (e.status == "orphaned-dead" or (dry_run and e.pid in also_dead and e.pid is not None))
    ]
    if not chosen:
        return []
    try:
        dfd = os.open(result.dir, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        return [Removal(path=os.path.join(result.dir, e.name), removed=False,
                        reason="dir unavailable", error=str(exc)) for e in chosen]
    out: list[Removal] = []
    try:
        table = UnixTable()  # fresh: something may have started listening since the scan
        nets = NetTables()
        dirs = {result.dir, os.path.abspath(result.dir), os.path.realpath(result.dir)}
        procs = _procs_with_parents({e.pid for e in chosen if e.pid is not None})
        for e in chosen:
            full = os.path.join(result.dir, e.name)
            if e.status != "orphaned-dead":  # dry run only: its binder is in the plan
                out.append(Removal(path=full, removed=False,
                                   reason=f"once binder {e.pid} (in the reap plan) exits"))
                continue
            keep = _recheck(e, dfd, uid, table, [os.path.join(d, e.name) for d in dirs], procs,
                            nets)
            if keep is not None:
                out.append(Removal(path=full, removed=False, reason=f"kept: {keep}"))
                continue
            reason = e.note or "binder gone"
            if dry_run:
                out.append(Removal(path=full, removed=False, reason=reason))
                continue
            try:
                os.unlink(e.name, dir_fd=dfd)
                out.append(Removal(path=full, removed=True, reason=reason))
            except FileNotFoundError:
                out.append(Removal(path=full, removed=False, reason="kept: already gone"))
            except OSError as exc:
                out.append(Removal(path=full, removed=False, reason=reason,
                                   error=exc.strerror or str(exc)))
    finally:
        os.close(dfd)
    return out


def _recheck(e: SockEntry, dfd: int, uid: int, table: UnixTable, paths: list[str],
             procs: dict, nets: NetTables) -> str | None:
    """Why ``e`` must be kept now, or ``None`` when it may go."""
    try:
        st = os.stat(e.name, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        return "already gone"
    except OSError as exc:
        return f"cannot stat: {exc.strerror}"
    if not stat.S_ISSOCK(st.st_mode) or st.st_ino != e.ino:
        return "replaced since the scan"
    if st.st_uid != uid:
        return f"owned by uid {st.st_uid}"
    if any(table.is_listening(p) for p in paths):
        return "something listens on it"
    other = nets.foreign_listener(paths)
    if other is not None:
        return f"something listens on it in another network namespace (that of pid {other})"
    if e.kind == "actor" and e.pid is not None:
        status, _, _ = _binder_verdict(e.pid, st.st_mtime, procs)
        if status != "orphaned-dead":
            return f"binder {e.pid} runs"
    return _connect_probe(dfd, e.name)


def _connect_probe(dfd: int, name: str) -> str | None:
    """The last word before an unlink: connect to the file itself. The
    kernel finds the listener by the file, whatever path it was bound by
    and from whichever namespace, which the socket tables (listed by path,
    per network namespace) cannot promise. Only ``ECONNREFUSED`` (bound by
    no one, or not listening) lets it go; a listener that is there sees a
    connection open and close. -> why to keep it, or None."""
    import errno
    import socket

    path = f"/proc/self/fd/{dfd}/{name}"
    if len(os.fsencode(path)) > 107:
        return "too long a path to probe whether something listens on it"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
    try:
        sock.connect(path)
    except OSError as exc:
        if exc.errno == errno.ECONNREFUSED:
            return None
        if exc.errno == errno.ENOENT:
            return "already gone"
        if exc.errno in (errno.EAGAIN, errno.EINPROGRESS):
            return "something listens on it (its backlog is full)"
        if exc.errno == errno.EPROTOTYPE:
            return "a socket of another type is bound to it"
        return f"cannot probe whether something listens on it: {exc.strerror}"
    finally:
        sock.close()
    return "something listens on it (a connection to it was accepted)"
