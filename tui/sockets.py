"""Sockets of ONE process, for the detail pane, read on demand.

The process's fd links name its socket inodes (``socket:[12345]``); its
network namespace's ``/proc/<pid>/net/{unix,tcp,tcp6}`` say what each inode
is. Only the selected process is looked at, and only when it is selected:
a box-wide socket table on every tick would be wasted work.
"""
from __future__ import annotations

import os
import socket
import struct
from typing import NamedTuple

_TCP_STATES = {
    "01": "established", "02": "syn-sent", "03": "syn-recv", "04": "fin-wait1",
    "05": "fin-wait2", "06": "time-wait", "07": "close", "08": "close-wait",
    "09": "last-ack", "0A": "listening", "0B": "closing",
}
_SO_ACCEPTCON = 0x10000
_UNIX_TYPES = {"0001": "stream", "0002": "dgram", "0005": "seqpacket"}


class Sock(NamedTuple):
    kind: str  # unix | tcp | tcp6
    role: str  # listening | connected | <tcp state> | unconnected
    local: str
    remote: str = ""
    inode: int = 0


def socket_inodes(pid: int) -> list[int]:
    inodes: list[int] = []
    base = f"/proc/{pid}/fd"
    try:
        names = os.listdir(base)
    except OSError:
        return inodes
    for name in names:
        try:
            link = os.readlink(f"{base}/{name}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.append(int(link[8:-1]))
    return inodes


def _unix(pid: int, want: set[int]) -> list[Sock]:
    out: list[Sock] = []
    try:
        with open(f"/proc/{pid}/net/unix") as f:
            next(f, None)
            for line in f:
                parts = line.split()
                if len(parts) < 7:
                    continue
                inode = int(parts[6])
                if inode not in want:
                    continue
                flags = int(parts[3], 16)
                path = parts[7] if len(parts) > 7 else ""
                if path.startswith("@"):
                    path = "@" + path[1:]  # abstract namespace
                if flags & _SO_ACCEPTCON:
                    role = "listening"
                elif parts[5] == "03":
                    role = "connected"
                else:
                    role = "unconnected"
                kind = "unix" if _UNIX_TYPES.get(parts[4], "stream") == "stream" else \
                    f"unix/{_UNIX_TYPES.get(parts[4], parts[4])}"
                out.append(Sock(kind, role, path or "(unnamed)", "", inode))
    except OSError:
        pass
    return out


def _addr(hexaddr: str, v6: bool) -> str:
    # The kernel prints each 32-bit word of the address as a native-endian
    # integer: packing the words back natively restores the address bytes.
    host, port = hexaddr.split(":")
    raw = b"".join(struct.pack("=I", int(host[i:i + 8], 16)) for i in range(0, len(host), 8))
    if v6:
        return f"[{socket.inet_ntop(socket.AF_INET6, raw)}]:{int(port, 16)}"
    return f"{socket.inet_ntop(socket.AF_INET, raw)}:{int(port, 16)}"


def _tcp(pid: int, want: set[int], v6: bool) -> list[Sock]:
    out: list[Sock] = []
    name = "tcp6" if v6 else "tcp"
    try:
        with open(f"/proc/{pid}/net/{name}") as f:
            next(f, None)
            for line in f:
                parts = line.split()
                if len(parts) < 10:
                    continue
                inode = int(parts[9])
                if inode not in want:
                    continue
                try:
                    local, remote = _addr(parts[1], v6), _addr(parts[2], v6)
                except (ValueError, OSError):
                    continue
                role = _TCP_STATES.get(parts[3], parts[3])
                out.append(Sock(name, role, local, "" if role == "listening" else remote, inode))
    except OSError:
        pass
    return out


def sockets_of(pid: int) -> list[Sock]:
    """Listening sockets first, then connected ones; [] if gone/unreadable."""
    want = set(socket_inodes(pid))
    if not want:
        return []
    socks = _unix(pid, want) + _tcp(pid, want, False) + _tcp(pid, want, True)
    order = {"listening": 0, "connected": 1, "established": 1}
    socks.sort(key=lambda s: (order.get(s.role, 2), s.kind, s.local))
    return socks
