"""What the file scans compute: the UDS bindspace (`bindspace`), ``/dev/shm``
(`shm`), and what a sweep of either removed. Plain msgspec Structs, no
system reads."""
from __future__ import annotations

from typing import Literal

import msgspec

SockStatus = Literal["live-active", "orphaned-alive", "orphaned-dead", "non-tractor"]
SOCK_STATUSES: tuple[str, ...] = ("live-active", "orphaned-alive", "orphaned-dead", "non-tractor")
DirSource = Literal["default", "name", "path"]


class SockEntry(msgspec.Struct):
    """One entry of the bindspace dir."""

    name: str  # the file name inside the dir
    status: SockStatus
    kind: Literal["actor", "registry", "other"]
    file_type: str  # socket, symlink, regular, directory, fifo, ...
    uid: int  # the file's owner
    mtime: float
    ino: int
    actor: str | None = None  # the <name> part; None for hashed names
    hashed: bool = False  # actor.<hex>@<pid>.sock
    pid: int | None = None  # the binder pid the name claims (never 1616)
    listening: bool = False  # something listens on this path (the Unix socket table)
    binder: str | None = None  # the binder's title, when it runs
    binder_ppid: int | None = None
    holders: list[int] = []  # registry only: pids holding the listening socket
    note: str = ""


class BindspaceScan(msgspec.Struct):
    dir: str
    source: DirSource  # platformdirs default, an app name beside it, or a path
    exists: bool
    entries: list[SockEntry] = []
    resolved: str | None = None  # realpath, when it differs from ``dir``
    notes: list[str] = []
    scanned_at: float = 0.0

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in SOCK_STATUSES}
        for e in self.entries:
            out[e.status] += 1
        return out


class Removal(msgspec.Struct):
    """One file a sweep removed, would remove (dry run) or had to keep."""

    path: str
    removed: bool
    reason: str  # why it was chosen, or why it was kept at the last check
    error: str | None = None


ShmStatus = Literal["in-use", "unused", "unknown"]


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
