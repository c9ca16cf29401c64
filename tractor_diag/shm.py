"""Leftover POSIX shared memory: ``/dev/shm`` files nobody uses any more.

A segment is in use while any process maps it or holds it open. Both are
visible in ``/proc``: ``/proc/<pid>/maps`` lists mapped files by device and
inode, ``/proc/<pid>/fd`` links to open files. One pass over every process
reads both, and only when the dir holds at least one candidate file.

A file is:

- ``in-use``: some process maps it or holds it open (``holders``);
- ``unused``: every process's maps and fds were read and none refers to it;
- ``unknown``: no reader found it, but some process could not be read
  (another user's process, when we lack the privilege): it might be the one
  using it. The sweep keeps these (SPEC "Reaping safety").

Matching is by (device, inode), which holds across renames and mount
namespaces; fd links are compared by path within our mount namespace and by
``stat`` for processes in another one. Two limits, both towards keeping:
a thread that unshared its fd table is only seen through its thread group's
table, and a process may ``shm_open`` a name it does not currently hold (no
scan can know that; unlinking the name never breaks an existing mapping).

Without the privilege to read other users' processes (any non-root user, and
root without ``CAP_SYS_PTRACE``-level access to e.g. a sandbox's init) every
unclaimed file is ``unknown``: the sweep then removes nothing, by design. A
scan sees only the processes of its own PID namespace (``/proc`` shows no
others): run it where the processes sharing that tmpfs are visible.
"""
from __future__ import annotations

import errno
import os
import stat
import time
from typing import Literal

import msgspec

from .bindspace import Removal

DEFAULT_DIR = "/dev/shm"
ShmStatus = Literal["in-use", "unused", "unknown"]
_DENIED = (errno.EACCES, errno.EPERM)


class ShmFile(msgspec.Struct):
    name: str
    status: ShmStatus
    size: int
    uid: int
    mtime: float
    dev: int
    ino: int
    holders: list[int] = []  # pids that map it or hold it open
    note: str = ""


class ShmScan(msgspec.Struct):
    dir: str
    uid: int
    exists: bool
    files: list[ShmFile] = []
    unreadable: list[int] = []  # pids whose maps or fds could not be read
    processes: int = 0  # how many processes were looked at
    scanned_at: float = 0.0

    def counts(self) -> dict[str, int]:
        out = {"in-use": 0, "unused": 0, "unknown": 0}
        for f in self.files:
            out[f.status] += 1
        return out


def _candidates(dfd: int, uid: int) -> dict[tuple[int, int], ShmFile]:
    out: dict[tuple[int, int], ShmFile] = {}
    for name in sorted(os.listdir(dfd)):
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode) or st.st_uid != uid:
            continue
        out[(st.st_dev, st.st_ino)] = ShmFile(
            name=name, status="unused", size=st.st_size, uid=st.st_uid,
            mtime=st.st_mtime, dev=st.st_dev, ino=st.st_ino,
        )
    return out


def _maps_token(dev: int) -> bytes:
    # The kernel prints the device of a mapping as "%02x:%02x" major:minor.
    return b" %02x:%02x " % (os.major(dev), os.minor(dev))


def _task_dir(pid: int) -> str:
    """Where to read a process's mm and fd table from.

    When the thread group leader has exited but other threads still run, the
    leader's ``maps`` and ``fd`` are empty although the process still maps
    and holds its files: read them through a live thread instead.
    """
    base = f"/proc/{pid}"
    try:
        with open(f"{base}/stat", "rb") as f:
            raw = f.read()
        fields = raw[raw.rfind(b")") + 2:].split()
        if fields[0] != b"Z" or int(fields[17]) <= 1:
            return base
        for tid in os.listdir(f"{base}/task"):
            if tid != str(pid):
                return f"{base}/task/{tid}"
    except (OSError, IndexError, ValueError):
        pass
    return base


def _mapped(text: bytes, token: bytes, inodes: dict[int, tuple[int, int]]) -> set[tuple[int, int]]:
    hits: set[tuple[int, int]] = set()
    start = 0
    while (i := text.find(token, start)) >= 0:
        start = i + len(token)
        end = text.find(b"\n", start)
        line_rest = text[start:end if end >= 0 else None]
        inode_field = line_rest.split(None, 1)[0] if line_rest else b""
        try:
            key = inodes.get(int(inode_field))
        except ValueError:
            continue
        if key is not None:
            hits.add(key)
    return hits


def scan(directory: str = DEFAULT_DIR, uid: int | None = None) -> ShmScan:
    """Classify the regular files of ``directory`` owned by ``uid`` (default: ours)."""
    uid = os.getuid() if uid is None else uid
    result = ShmScan(dir=directory, uid=uid, exists=False, scanned_at=time.time())
    try:
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return result
    result.exists = True
    try:
        files = _candidates(dfd, uid)
    finally:
        os.close(dfd)
    if not files:
        return result

    # maps lines carry "major:minor inode": one lookup table per device
    per_dev: dict[int, dict[int, tuple[int, int]]] = {}
    for dev, ino in files:
        per_dev.setdefault(dev, {})[ino] = (dev, ino)
    tokens = [(_maps_token(dev), inodes) for dev, inodes in per_dev.items()]
    prefix = os.path.realpath(directory).rstrip("/") + "/"
    by_name = {prefix + f.name: key for key, f in files.items()}
    try:
        my_mnt = os.readlink("/proc/self/ns/mnt")
    except OSError:
        my_mnt = None

    holders: dict[tuple[int, int], set[int]] = {key: set() for key in files}
    unreadable: list[int] = []
    count = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        count += 1
        base = _task_dir(pid)
        denied = False
        # -- mappings
        try:
            with open(f"{base}/maps", "rb") as f:
                text = f.read()
        except OSError as exc:
            if exc.errno in _DENIED:
                denied = True
            text = b""
        for token, inodes in tokens:
            for key in _mapped(text, token, inodes):
                holders[key].add(pid)
        # -- open files
        try:
            fds = os.listdir(f"{base}/fd")
        except OSError as exc:
            if exc.errno in _DENIED:
                denied = True
            fds = []
        other_ns = None
        for fd in fds:
            link = f"{base}/fd/{fd}"
            try:
                target = os.readlink(link)
            except OSError as exc:
                if exc.errno in _DENIED:
                    denied = True
                    break
                continue
            if not target.startswith("/"):
                continue  # socket:[..], pipe:[..], anon_inode:..
            key = by_name.get(target.removesuffix(" (deleted)"))
            if key is not None:
                holders[key].add(pid)
                continue
            if other_ns is None:
                try:
                    other_ns = os.readlink(f"/proc/{pid}/ns/mnt") != my_mnt
                except OSError as exc:
                    other_ns = True
                    if exc.errno in _DENIED:
                        denied = True
            if other_ns:
                # Paths are that process's view: compare the inode itself.
                try:
                    st = os.stat(link)
                except OSError as exc:
                    if exc.errno in _DENIED:
                        denied = True
                    continue
                key = (st.st_dev, st.st_ino)
                if key in holders:
                    holders[key].add(pid)
        if denied and os.path.exists(f"/proc/{pid}"):
            unreadable.append(pid)

    result.processes = count
    result.unreadable = sorted(unreadable)
    for key, f in files.items():
        f.holders = sorted(holders[key])
        if f.holders:
            f.status = "in-use"
            f.note = f"used by pid {', '.join(map(str, f.holders[:5]))}" + (
                " …" if len(f.holders) > 5 else "")
        elif unreadable:
            f.status = "unknown"
            f.note = f"cannot prove it unused: could not read {_name_some(result.unreadable)}"
        else:
            f.note = "no process maps it or holds it open"
    result.files = sorted(files.values(), key=lambda f: f.name)
    return result


def _name_some(pids: list[int], limit: int = 3) -> str:
    """``pid 1 (systemd), pid 812 (sshd) and 4 more``: who kept us from knowing."""
    parts = []
    for pid in pids[:limit]:
        try:
            with open(f"/proc/{pid}/comm", "rb") as f:
                comm = f.read().strip().decode("utf-8", "replace")
            parts.append(f"pid {pid} ({comm})")
        except OSError:
            parts.append(f"pid {pid}")
    more = f" and {len(pids) - limit} more" if len(pids) > limit else ""
    return ", ".join(parts) + more


def sweep(result: ShmScan, *, dry_run: bool = False) -> list[Removal]:
    """Unlink the ``unused`` files of ``result``; keep everything else.

    Each file is re-checked through a dir fd right before the unlink (still
    the same inode, a regular file, ours): a file swapped for another, or for
    a symlink, is kept.
    """
    chosen = [f for f in result.files if f.status == "unused"]
    if not chosen:
        return []
    try:
        dfd = os.open(result.dir, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        return [Removal(path=os.path.join(result.dir, f.name), removed=False,
                        reason="dir unavailable", error=str(exc)) for f in chosen]
    out: list[Removal] = []
    try:
        for f in chosen:
            path = os.path.join(result.dir, f.name)
            try:
                st = os.stat(f.name, dir_fd=dfd, follow_symlinks=False)
            except FileNotFoundError:
                out.append(Removal(path=path, removed=False, reason="kept: already gone"))
                continue
            except OSError as exc:
                out.append(Removal(path=path, removed=False, reason="kept: cannot stat",
                                   error=exc.strerror))
                continue
            if (not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (f.dev, f.ino)
                    or st.st_uid != result.uid):
                out.append(Removal(path=path, removed=False, reason="kept: replaced since the scan"))
                continue
            if dry_run:
                out.append(Removal(path=path, removed=False, reason=f.note))
                continue
            try:
                os.unlink(f.name, dir_fd=dfd)
                out.append(Removal(path=path, removed=True, reason=f.note))
            except FileNotFoundError:
                out.append(Removal(path=path, removed=False, reason="kept: already gone"))
            except OSError as exc:
                out.append(Removal(path=path, removed=False, reason=f.note,
                                   error=exc.strerror or str(exc)))
    finally:
        os.close(dfd)
    return out
