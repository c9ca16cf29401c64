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
  using it. The sweep keeps these.

Holders are matched by (device, inode), never by path: an fd's link names
the file as its holder reached it (through a bind mount of the same tmpfs, a
hard link in a subdirectory, a path of another mount namespace), so every fd
is ``stat``-ed through its ``/proc`` link. A thread that called
``unshare(CLONE_FILES)`` has an fd table of its own, visible only under
``/proc/<pid>/task/<tid>/fd``: every distinct table of a thread group is read
(``kcmp`` tells which threads share one; without it, every thread's is).
Mappings are per address space, which all threads of a process share.

What no scan can see, all towards unlinking a file still wanted:

- an fd in flight: sent in an ``SCM_RIGHTS`` message and not yet received,
  it sits in a socket's queue, in no process's fd table, and nothing in
  ``/proc`` shows it;
- a process of another PID namespace (``/proc`` lists only ours);
- a name a process will ``shm_open`` again later without holding it now
  (unlinking the name never breaks an existing mapping or fd).

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

from . import procfs
from .filemodel import Removal, ShmFile, ShmScan, ShmStatus  # noqa: F401 - old names kept

DEFAULT_DIR = "/dev/shm"
_DENIED = (errno.EACCES, errno.EPERM)


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
    st = procfs.read_stat(pid)
    if st is None or st.state != "Z" or st.threads <= 1:
        return base
    try:
        for tid in os.listdir(f"{base}/task"):
            if tid != str(pid):
                return f"{base}/task/{tid}"
    except OSError:
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


# Links of fds that cannot be a file on a tmpfs: no need to stat them.
_PSEUDO = ("socket:[", "pipe:[", "anon_inode:")
# kcmp(2) numbers; elsewhere every thread's fd table is read.
_SYS_KCMP = {"x86_64": 312, "aarch64": 272, "riscv64": 272}
_KCMP_FILES = 2
_kcmp = None


def _same_fd_table(tid1: int, tid2: int) -> bool:
    """True only when the kernel says both threads use one fd table."""
    global _kcmp
    if _kcmp is None:
        import ctypes
        import platform

        nr = _SYS_KCMP.get(platform.machine())
        if nr is None:
            _kcmp = False
        else:
            syscall = ctypes.CDLL(None, use_errno=True).syscall
            _kcmp = lambda a, b: syscall(nr, a, b, _KCMP_FILES, 0, 0)  # noqa: E731
    return bool(_kcmp) and _kcmp(tid1, tid2) == 0


def _fd_dirs(pid: int) -> list[str]:
    """One ``fd`` dir per distinct fd table of the thread group.

    Threads share their process's table unless one called
    ``unshare(CLONE_FILES)``; then only ``/proc/<pid>/task/<tid>/fd`` shows
    what that thread holds. A thread whose table cannot be proved shared
    (kcmp missing or refused, a zombie leader) is read on its own.
    """
    try:
        tids = sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))
    except (OSError, ValueError):
        return [f"/proc/{pid}/fd"]
    if len(tids) <= 1:
        return [f"/proc/{pid}/fd"]
    read: list[int] = []
    for tid in tids:
        if not any(_same_fd_table(r, tid) for r in read):
            read.append(tid)
    return [f"/proc/{pid}/task/{tid}/fd" for tid in read]


def _held(fd_dir: str, holders: dict[tuple[int, int], set[int]], pid: int) -> bool:
    """Add ``pid`` to the holders of every candidate an fd of ``fd_dir``
    refers to. -> True when some fd could not be read (permission)."""
    try:
        fds = os.listdir(fd_dir)
    except OSError as exc:
        return exc.errno in _DENIED
    for fd in fds:
        link = f"{fd_dir}/{fd}"
        try:
            if os.readlink(link).startswith(_PSEUDO):
                continue
            # The link's path is the holder's view (a bind mount, another
            # hard link, another mount namespace): only the inode counts.
            st = os.stat(link)
        except OSError as exc:
            if exc.errno in _DENIED:
                return True
            continue  # closed meanwhile, or the process is gone
        key = (st.st_dev, st.st_ino)
        if key in holders:
            holders[key].add(pid)
    return False


def _holders(keys) -> tuple[dict[tuple[int, int], set[int]], list[int], int]:
    """One pass over every process: who maps or holds each of ``keys``
    ((device, inode) pairs) -> (holders, unreadable pids, processes seen)."""
    # maps lines carry "major:minor inode": one lookup table per device
    per_dev: dict[int, dict[int, tuple[int, int]]] = {}
    for dev, ino in keys:
        per_dev.setdefault(dev, {})[ino] = (dev, ino)
    tokens = [(_maps_token(dev), inodes) for dev, inodes in per_dev.items()]
    holders: dict[tuple[int, int], set[int]] = {key: set() for key in keys}
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
        # -- open files, in every fd table of the thread group
        for fd_dir in _fd_dirs(pid):
            if _held(fd_dir, holders, pid):
                denied = True
        if denied and os.path.exists(f"/proc/{pid}"):
            unreadable.append(pid)
    return holders, sorted(unreadable), count


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

    holders, unreadable, count = _holders(list(files))
    result.processes = count
    result.unreadable = unreadable
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


TMPFS = ("tmpfs",)


def fs_type(fd: int) -> str | None:
    """The file system type of the open file ``fd`` (from the mount table,
    matched by device), or None when not found."""
    dev = os.fstat(fd).st_dev
    want = f"{os.major(dev)}:{os.minor(dev)}"
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                left, sep, right = line.partition(" - ")
                fields = left.split()
                if sep and len(fields) > 2 and fields[2] == want:
                    return right.split()[0]
    except OSError:
        return None
    return None


def check_dir(directory: str) -> None:
    """Refuse a sweep of a dir that is not a tmpfs: POSIX shared memory
    lives on one, and the files of any other dir (a typo, a config dir) are
    not "unused" because no process holds them open right now."""
    from .errors import UsageError

    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return  # a missing dir sweeps nothing
    try:
        kind = fs_type(fd)
    finally:
        os.close(fd)
    if kind not in TMPFS:
        raise UsageError(f"refusing to sweep {directory}: it is on {kind or 'an unknown file system'}, "
                         "not a tmpfs (where POSIX shared memory lives, like /dev/shm)")


def sweep(result: ShmScan, *, dry_run: bool = False) -> list[Removal]:
    """Unlink the ``unused`` files of ``result``; keep everything else.

    Only on a tmpfs. Right before the unlinks, every process is read again
    for the chosen files (one mapped or opened since the scan is kept), and
    each file is re-checked through a dir fd (still the same inode, a
    regular file, ours): a file swapped for another, or for a symlink, is
    kept. What is left is the moment between that pass and the unlink.
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
        kind = fs_type(dfd)
        if kind not in TMPFS:
            return [Removal(path=os.path.join(result.dir, f.name), removed=False,
                            reason=f"kept: the dir is on {kind or 'an unknown file system'}, "
                            "not a tmpfs") for f in chosen]
        holders, unreadable, _ = _holders([(f.dev, f.ino) for f in chosen])
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
            now = holders[(f.dev, f.ino)]
            if now:
                out.append(Removal(path=path, removed=False, reason="kept: used since the scan "
                                   f"by pid {', '.join(map(str, sorted(now)[:5]))}"))
                continue
            if unreadable:
                out.append(Removal(path=path, removed=False, reason="kept: cannot prove it "
                                   f"unused now: could not read {_name_some(unreadable)}"))
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
