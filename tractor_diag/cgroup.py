"""A cgroup v2 of its own for a launched program, so nothing it starts escapes.

A process tree is a weak container: a daemon that double-forks and calls
``setsid`` leaves the launched program's process group, session and (once
its parent exits) its ancestry. A cgroup is inherited by every fork and left
only by an explicit write to another cgroup's ``cgroup.procs``; writing
``1`` to ``cgroup.kill`` SIGKILLs every member at once, including one forked
a moment ago, with no pid to get wrong.

Where it works: a cgroup v2 hierarchy is mounted, the kernel has
``cgroup.kill`` (5.14+), and we may create a child of our own cgroup and move
a process into it (root, or a cgroup delegated to our user, e.g. a
``systemd-run --user --scope -p Delegate=yes`` scope). Anything else raises
`Unavailable` with one line saying why, and the caller falls back to the
process tree.

The launched child joins the cgroup itself, between fork and exec
(`LaunchCgroup.join_in_child`), so it is a member before it can run a single
instruction of the program.
"""
from __future__ import annotations

import errno
import itertools
import os
import time

# Set (to anything but "" or "0") to keep launched programs out of cgroups.
ENV_OFF = "TRACTOR_DIAG_NO_CGROUP"

_counter = itertools.count(1)


_PREFIX = "tractor-diag-launch."


def _sweep(parent: str) -> None:
    """Remove cgroups of ours left behind by a dashboard that was killed
    before it could: only empty ones, whose dashboard's pid is not running."""
    try:
        names = os.listdir(parent)
    except OSError:
        return
    ours = f"{_PREFIX}{_pidns()}."
    for name in names:
        # a pid means something only in the PID namespace that named it
        if not name.startswith(ours):
            continue
        owner = name[len(ours):].split(".")[0]
        if not owner.isdigit() or os.path.exists(f"/proc/{owner}"):
            continue
        try:
            os.rmdir(os.path.join(parent, name))  # EBUSY while it has members
        except OSError:
            pass


def _pidns() -> int:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


class Unavailable(Exception):
    """No cgroup of our own here; the message says why in one line."""


def disabled_by_env() -> bool:
    return os.environ.get(ENV_OFF, "") not in ("", "0")


def _v2_mount() -> tuple[str, str] | None:
    """-> (mount point, hierarchy path it shows) of a cgroup2 mount."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        left, sep, right = line.partition(" - ")
        if not sep or not right.startswith("cgroup2 "):
            continue
        fields = left.split()
        if len(fields) >= 5:
            return _unescape(fields[4]), _unescape(fields[3])
    return None


def _unescape(path: str) -> str:
    # mountinfo writes space, tab, newline and backslash as octal escapes
    for code, ch in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        path = path.replace(code, ch)
    return path


def cgroup_of(pid: int | str = "self") -> str | None:
    """The cgroup v2 path of ``pid`` (``0::`` line of /proc/PID/cgroup)."""
    try:
        with open(f"/proc/{pid}/cgroup", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("0::"):
                    return line[3:].rstrip("\n")
    except OSError:
        return None
    return None


class LaunchCgroup:
    """A fresh child cgroup of ours; ``path`` in the filesystem, ``name`` as
    ``/proc/<pid>/cgroup`` shows it."""

    def __init__(self, path: str, name: str):
        self.path = path
        self.name = name
        self._procs_fd: int | None = None

    @classmethod
    def create(cls) -> "LaunchCgroup":
        """Make the cgroup, ready to be joined; raises `Unavailable`."""
        mount = _v2_mount()
        if mount is None:
            raise Unavailable("no cgroup v2 hierarchy is mounted")
        point, shown = mount
        own = cgroup_of()
        if own is None:
            raise Unavailable("this process has no cgroup v2 path")
        if not own.startswith(shown.rstrip("/") + "/") and own != shown:
            raise Unavailable(f"our cgroup {own} is outside the mounted part ({shown})")
        rel = own[len(shown.rstrip("/")):] if shown != "/" else own
        parent = os.path.join(point, rel.lstrip("/"))
        _sweep(parent)
        leaf = f"{_PREFIX}{_pidns()}.{os.getpid()}.{next(_counter)}"
        path = os.path.join(parent, leaf)
        try:
            os.mkdir(path)
        except OSError as exc:
            raise Unavailable(f"cannot create a cgroup in {parent}: {exc.strerror}") from None
        cg = cls(path, own.rstrip("/") + "/" + leaf)
        if not os.path.exists(os.path.join(path, "cgroup.kill")):
            cg.remove()
            raise Unavailable("the kernel has no cgroup.kill (Linux 5.14+)")
        try:
            cg._procs_fd = os.open(os.path.join(path, "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC)
        except OSError as exc:
            cg.remove()
            raise Unavailable(f"cannot join {path}: {exc.strerror}") from None
        return cg

    def join_in_child(self) -> None:
        """``preexec_fn``: move the forked child (before exec) into the cgroup.

        Only a write on an fd opened beforehand: no import, no allocation
        worth the name between fork and exec."""
        os.write(self._procs_fd, b"0")

    def join_self(self) -> None:
        """Move the calling process (all its threads) into the cgroup: what
        it starts from then on is born a member."""
        os.write(self._procs_fd, b"0")

    def leave(self) -> bool:
        """Move the calling process back to the cgroup it came from (the
        parent of ours); -> moved."""
        try:
            with open(os.path.join(os.path.dirname(self.path), "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))
        except OSError:
            return False
        return True

    def contains(self, pid: int) -> bool:
        """Is ``pid`` a member of this cgroup or of one below it?"""
        path = cgroup_of(pid)
        return path is not None and (path == self.name or path.startswith(self.name + "/"))

    def done_joining(self) -> None:
        if self._procs_fd is not None:
            os.close(self._procs_fd)
            self._procs_fd = None

    def pids(self) -> list[int]:
        """Members now (processes, not threads). Zombies are not listed."""
        try:
            with open(os.path.join(self.path, "cgroup.procs"), "rb") as f:
                return [int(p) for p in f.read().split()]
        except (OSError, ValueError):
            return []

    def holds(self, pid: int) -> bool:
        """Is ``pid`` a member now? (Exact once the pid is pinned.)"""
        return cgroup_of(pid) == self.name

    def kill(self) -> bool:
        """SIGKILL every member, atomically; False if the kernel refused."""
        try:
            with open(os.path.join(self.path, "cgroup.kill"), "w") as f:
                f.write("1")
        except OSError:
            return False
        return True

    def populated(self) -> bool:
        try:
            with open(os.path.join(self.path, "cgroup.events"), "rb") as f:
                for line in f:
                    if line.startswith(b"populated "):
                        return line.split()[1] != b"0"
        except OSError:
            return False
        return False

    def remove(self, wait: float = 1.0) -> bool:
        """rmdir the cgroup once its last member is gone; -> removed."""
        self.done_joining()
        deadline = time.monotonic() + wait
        while True:
            try:
                os.rmdir(self.path)
                return True
            except FileNotFoundError:
                return True
            except OSError as exc:
                if exc.errno != errno.EBUSY or time.monotonic() >= deadline:
                    return False
            time.sleep(0.02)
