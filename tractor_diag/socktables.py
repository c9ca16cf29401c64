"""The kernel's socket tables, and which process holds which socket.

- TCP and TCP6: ``/proc/<pid>/net/tcp{,6}`` (local and remote address,
  state, inode).
- Unix sockets: the kernel's sock_diag netlink interface, asked once for a
  dump of every Unix socket with its bound name, its peer's inode and the
  connections queued on a listener. ``/proc/net/unix`` has no peer column,
  and the peer is what joins the two ends of a connection; it is read only
  where sock_diag is not available (no peers then: `SockTables.peers_known`).

Our own sock_diag reader (stdlib ``socket``, one request, one dump) rather
than pyroute2: measured here, importing pyroute2's ``DiagSocket`` costs
about 200 ms, more than a whole ``ptree`` run, and our reader is a few
dozen lines of struct packing.

Sockets are joined to processes by their fd links (``socket:[<inode>]``),
only for the pids asked for: reading every fd of every process is what
makes ``ss -p`` slow.

All of this is per **network namespace**: ``/proc/net`` and a netlink
socket both see the namespace of the process that reads them. A process in
another namespace has sockets our tables do not show; such pids are
reported as `SocketOwners.other_netns` (unknown), never as holding
nothing. `sockets_of` reads the tables of the pid's own namespace from
``/proc/<pid>/net`` (without Unix peers, which only sock_diag in that
namespace could give).

Processes and sockets vanish at any moment: a pid gone mid-join lands in
`SocketOwners.gone`; nothing here raises for that. Data layer: nothing is
escaped here.
"""
from __future__ import annotations

# The C half of `socket` only: socket.py's start-up (selectors, its enums
# of every constant) costs about a twentieth of a whole ptree run, and a
# netlink dump needs none of it: a raw socket, inet_ntop, ntohs.
import _socket
import os
import struct
import time
from collections.abc import Iterable

from .model import TCPAddr
from .sockmodel import (
    SocketOwners, SockTables, SockView, TcpSock, UnixSock, tcp_text,
)

_TCP_STATES = {
    1: "established", 2: "syn-sent", 3: "syn-recv", 4: "fin-wait1",
    5: "fin-wait2", 6: "time-wait", 7: "close", 8: "close-wait",
    9: "last-ack", 10: "listening", 11: "closing", 12: "new-syn-recv",
}
_UNIX_TYPES = {_socket.SOCK_STREAM: "stream", _socket.SOCK_DGRAM: "dgram",
               _socket.SOCK_SEQPACKET: "seqpacket"}
# __SO_ACCEPTCON in the Flags column of /proc/net/unix: a listening socket.
_SO_ACCEPTCON = 0x10000
# The St column of /proc/net/unix is the socket's SS_* state.
_SS_STATES = {1: "unconnected", 2: "connecting", 3: "connected", 4: "disconnecting"}

# --- sock_diag (linux/sock_diag.h, linux/unix_diag.h) ---------------------------
_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST, _NLM_F_DUMP = 0x1, 0x300
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_UDIAG_SHOW_NAME, _UDIAG_SHOW_PEER, _UDIAG_SHOW_ICONS = 0x1, 0x4, 0x8
_UNIX_DIAG_NAME, _UNIX_DIAG_PEER, _UNIX_DIAG_ICONS = 0, 2, 3
_NLMSGHDR = struct.Struct("=IHHII")
_UNIX_DIAG_REQ = struct.Struct("=BBHIIIII")
_UNIX_DIAG_MSG = struct.Struct("=BBBBIII")
_RTATTR = struct.Struct("=HH")
# sk_state of a Unix socket, as sock_diag reports it (TCP_* numbers)
_SK_STATES = {10: "listening", 1: "connected", 7: "unconnected", 2: "connecting"}
# inet_diag (linux/inet_diag.h): request v2, and the reply's fixed part
_INET_DIAG_REQ_V2 = struct.Struct("=BBBBIHH16s16sIII")
_INET_DIAG_MSG = struct.Struct("=BBBBHH16s16sIIIIIIII")


class SockDiagUnavailable(OSError):
    """The kernel does not answer sock_diag for Unix sockets here."""


def _align(n: int) -> int:
    return (n + 3) & ~3


def _name(raw: bytes) -> str:
    # Abstract names start with a NUL; they are written "@name" as ss does.
    # backslashreplace: odd bytes must not break a JSON encoder downstream.
    if raw.startswith(b"\0"):
        return "@" + raw[1:].decode("utf-8", "backslashreplace")
    return raw.rstrip(b"\0").decode("utf-8", "backslashreplace")


def parse_unix_diag(data: bytes, out: list[UnixSock]) -> bool:
    """Append the sockets of one netlink datagram to ``out``; True at the
    end of the dump. Raises `SockDiagUnavailable` on a netlink error."""
    for mtype, body, stop in _messages(data):
        if mtype == _NLMSG_DONE:
            return True
        if mtype != _SOCK_DIAG_BY_FAMILY or stop - body < _UNIX_DIAG_MSG.size:
            continue
        _fam, stype, sstate, _pad, ino, _c0, _c1 = _UNIX_DIAG_MSG.unpack_from(data, body)
        path = peer = None
        pending: list[int] = []
        a = body + _UNIX_DIAG_MSG.size
        while a + _RTATTR.size <= stop:
            alen, atype = _RTATTR.unpack_from(data, a)
            if alen < _RTATTR.size:
                break
            payload = data[a + _RTATTR.size:a + alen]
            if atype == _UNIX_DIAG_NAME and payload:
                path = _name(payload)
            elif atype == _UNIX_DIAG_PEER and len(payload) >= 4:
                peer = struct.unpack_from("=I", payload)[0] or None
            elif atype == _UNIX_DIAG_ICONS:
                # a queued connection whose client is gone reads 0
                pending = [i for i in struct.unpack(f"={len(payload) // 4}I",
                                                    payload[:len(payload) // 4 * 4]) if i]
            a += _align(alen)
        out.append(UnixSock(
            inode=ino, type=_UNIX_TYPES.get(stype, "unknown"),
            state=_SK_STATES.get(sstate, "unknown"), path=path, peer=peer,
            pending=pending,
        ))
    return False


def _dump(request: bytes, parse, timeout: float) -> list:
    """Send one sock_diag dump request, parse every reply datagram."""
    try:
        sock = _socket.socket(_socket.AF_NETLINK, _socket.SOCK_RAW, _NETLINK_SOCK_DIAG)
    except (OSError, AttributeError) as exc:
        raise SockDiagUnavailable(getattr(exc, "errno", 0) or 0, f"no sock_diag: {exc}") from None
    out: list = []
    try:
        sock.settimeout(timeout)
        hdr = _NLMSGHDR.pack(_NLMSGHDR.size + len(request), _SOCK_DIAG_BY_FAMILY,
                             _NLM_F_REQUEST | _NLM_F_DUMP, 1, 0)
        sock.sendto(hdr + request, (0, 0))
        buf = bytearray(1 << 17)
        while True:
            n = sock.recv_into(buf)
            if n == 0 or parse(bytes(buf[:n]), out):
                break
    except SockDiagUnavailable:
        raise
    except OSError as exc:
        raise SockDiagUnavailable(exc.errno or 0, f"sock_diag failed: {exc}") from None
    finally:
        sock.close()
    return out


_LISTEN_ONLY = 1 << 10  # TCP_LISTEN as a state bit


def read_unix_diag(timeout: float = 2.0, listening_only: bool = False) -> list[UnixSock]:
    """Every Unix socket of our network namespace, with peers, by sock_diag
    (only listeners with ``listening_only``). Raises `SockDiagUnavailable`
    (an OSError) where the kernel has none."""
    req = _UNIX_DIAG_REQ.pack(
        _socket.AF_UNIX, 0, 0, _LISTEN_ONLY if listening_only else 0xFFFFFFFF, 0,
        _UDIAG_SHOW_NAME | _UDIAG_SHOW_PEER | _UDIAG_SHOW_ICONS, 0xFFFFFFFF, 0xFFFFFFFF,
    )
    return _dump(req, parse_unix_diag, timeout)


def _messages(data: bytes):
    """(type, body offset, end) of each netlink message of one datagram;
    raises `SockDiagUnavailable` on an error message."""
    off = 0
    end = len(data)
    while off + _NLMSGHDR.size <= end:
        length, mtype, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, off)
        if length < _NLMSGHDR.size or off + length > end:
            raise SockDiagUnavailable(0, "malformed netlink reply")
        if mtype == _NLMSG_ERROR:
            errno = -struct.unpack_from("=i", data, off + _NLMSGHDR.size)[0]
            raise SockDiagUnavailable(errno, os.strerror(errno) if errno else "netlink error")
        yield mtype, off + _NLMSGHDR.size, off + length
        off += _align(length)


def parse_inet_diag(data: bytes, out: list[TcpSock]) -> bool:
    """Append the TCP sockets of one netlink datagram; True at the end."""
    for mtype, body, stop in _messages(data):
        if mtype == _NLMSG_DONE:
            return True
        if mtype != _SOCK_DIAG_BY_FAMILY or stop - body < _INET_DIAG_MSG.size:
            continue
        (fam, state, _t, _r, sport, dport, src, dst, _if, _c0, _c1,
         _exp, _rq, _wq, uid, inode) = _INET_DIAG_MSG.unpack_from(data, body)
        v6 = fam == _socket.AF_INET6
        size = 16 if v6 else 4
        out.append(TcpSock(
            inode=inode, v6=v6, state=_TCP_STATES.get(state, "unknown"),
            local=TCPAddr(_socket.inet_ntop(fam, src[:size]), _socket.ntohs(sport)),
            remote=TCPAddr(_socket.inet_ntop(fam, dst[:size]), _socket.ntohs(dport)),
            uid=uid,
        ))
    return False


def read_tcp_diag(timeout: float = 2.0, listening_only: bool = False) -> list[TcpSock]:
    """Every TCP socket (v4 and v6) of our network namespace, by sock_diag
    (only listeners with ``listening_only``: the kernel then skips its
    established-connection hash, which it otherwise walks bucket by bucket,
    hundreds of thousands of them on a big box). Raises
    `SockDiagUnavailable` where the kernel has no inet_diag."""
    out: list[TcpSock] = []
    states = _LISTEN_ONLY if listening_only else 0xFFFFFFFF
    for family in (_socket.AF_INET, _socket.AF_INET6):
        req = _INET_DIAG_REQ_V2.pack(family, _socket.IPPROTO_TCP, 0, 0, states,
                                     0, 0, b"", b"", 0, 0xFFFFFFFF, 0xFFFFFFFF)
        out += _dump(req, parse_inet_diag, timeout)
    return out


# --- /proc/net text tables --------------------------------------------------------

def parse_proc_unix(text: str) -> list[UnixSock]:
    """``/proc/net/unix`` -> sockets, without peers (the table has none).
    Paths may hold spaces; abstract names are shown ``@name`` by the kernel.
    A path holding a newline is cut there (the kernel prints it raw): one
    more reason this table is only the fallback."""
    out: list[UnixSock] = []
    for line in text.splitlines()[1:]:
        # Num RefCount Protocol Flags Type St Inode [Path]
        parts = line.split(None, 7)
        if len(parts) < 7:
            continue
        try:
            flags = int(parts[3], 16)
            stype = int(parts[4], 16)
            st = int(parts[5], 16)
            inode = int(parts[6])
        except ValueError:
            continue
        state = "listening" if flags & _SO_ACCEPTCON else _SS_STATES.get(st, "unknown")
        out.append(UnixSock(
            inode=inode, type=_UNIX_TYPES.get(stype, "unknown"), state=state,
            path=parts[7] if len(parts) > 7 and parts[7] else None,
        ))
    return out


def _hex_addr(text: str, v6: bool) -> TCPAddr:
    # The kernel prints each 32-bit word of the address as a native-endian
    # integer: packing the words back natively restores the address bytes.
    host, port = text.split(":")
    raw = b"".join(struct.pack("=I", int(host[i:i + 8], 16)) for i in range(0, len(host), 8))
    family = _socket.AF_INET6 if v6 else _socket.AF_INET
    return TCPAddr(host=_socket.inet_ntop(family, raw), port=int(port, 16))


def parse_proc_tcp(text: str, v6: bool) -> list[TcpSock]:
    """``/proc/net/tcp`` (or ``tcp6`` with ``v6``) -> sockets."""
    out: list[TcpSock] = []
    for line in text.splitlines()[1:]:
        # sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
        parts = line.split()
        if len(parts) < 10:
            continue
        try:
            out.append(TcpSock(
                inode=int(parts[9]), v6=v6,
                state=_TCP_STATES.get(int(parts[3], 16), "unknown"),
                local=_hex_addr(parts[1], v6), remote=_hex_addr(parts[2], v6),
                uid=int(parts[7]),
            ))
        except (ValueError, OSError):
            continue
    return out


def _read_text(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "backslashreplace")
    except OSError:
        return None


def netns_of(pid: int | str = "self") -> int | None:
    """Inode of the process's network namespace; None when gone/unreadable."""
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def read_tables(*, tcp: bool = True, unix: bool = True, peers: bool = True,
                listening_only: bool = False) -> SockTables:
    """The socket tables of OUR network namespace, each read once.

    Both come from sock_diag where the kernel has it. ``/proc/net/tcp`` is
    the fallback only: the kernel walks its whole connection hash to print
    it, measured at 5 ms per file on this 2-core box against 0.5 ms for the
    same rows by sock_diag. ``listening_only``: listeners alone (what
    "who holds this port" and the listening addresses need), cheaper still.
    ``peers=False`` reads the Unix table from ``/proc/net/unix`` (no peers).
    Every fallback is said in ``notes``.
    """
    tables = SockTables(netns=netns_of(), read_at=time.time())
    if tcp:
        try:
            tables.tcp = read_tcp_diag(listening_only=listening_only)
        except SockDiagUnavailable as exc:
            tables.notes.append(f"TCP table from /proc/net/tcp: no inet_diag ({exc.strerror or exc})")
            for name, v6 in (("tcp", False), ("tcp6", True)):
                text = _read_text(f"/proc/net/{name}")
                if text is not None:
                    tables.tcp.extend(t for t in parse_proc_tcp(text, v6)
                                      if t.listening or not listening_only)
    if unix:
        if peers:
            try:
                tables.unix = read_unix_diag(listening_only=listening_only)
                tables.unix_source = "sock_diag"
                return tables
            except SockDiagUnavailable as exc:
                tables.notes.append(f"Unix peers unknown: no unix_diag ({exc.strerror or exc})")
        text = _read_text("/proc/net/unix")
        if text is not None:
            tables.unix = [u for u in parse_proc_unix(text) if u.listening or not listening_only]
    return tables


# --- the join: socket inodes held by pids -----------------------------------------

def socket_inodes(pid: int) -> list[int] | None:
    """Socket inodes among the fds of ``pid``; None when it is gone or its
    fds cannot be read."""
    try:
        dfd = os.open(f"/proc/{pid}/fd", os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return None
    try:
        names = os.listdir(dfd)
        inodes: list[int] = []
        for name in names:
            try:
                link = os.readlink(name, dir_fd=dfd)
            except OSError:
                continue  # that fd was closed meanwhile
            if link.startswith("socket:["):
                inodes.append(int(link[8:-1]))
        return inodes
    except OSError:
        return None
    finally:
        os.close(dfd)


def owners(pids: Iterable[int], netns: int | None = None) -> SocketOwners:
    """Join the given pids to the socket inodes they hold.

    ``netns``: the namespace the tables were read in (default ours); a pid
    in another one goes to ``other_netns`` (its inodes would match nothing).
    """
    if netns is None:
        netns = netns_of()
    result = SocketOwners(netns=netns, by_pid={})
    for pid in pids:
        theirs = netns_of(pid)
        if theirs is None:
            result.gone.append(pid)
            continue
        if netns is not None and theirs != netns:
            result.other_netns.append(pid)
            continue
        inodes = socket_inodes(pid)
        if inodes is None:
            result.gone.append(pid)
        elif inodes:
            result.by_pid[pid] = inodes
    return result


def holders(inodes: Iterable[int], netns: int | None = None) -> list[int]:
    """Every pid on the box (in the tables' namespace) with an fd on any of
    these socket inodes: one pass over every process's fds, so only for a
    question about a few sockets (who holds this port?)."""
    wanted = {f"socket:[{i}]" for i in inodes}
    if not wanted:
        return []
    if netns is None:
        netns = netns_of()
    out: list[int] = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            dfd = os.open(f"/proc/{name}/fd", os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            continue
        try:
            for fd in os.listdir(dfd):
                try:
                    if os.readlink(fd, dir_fd=dfd) in wanted:
                        if netns is None or netns_of(name) == netns:
                            out.append(int(name))
                        break
                except OSError:
                    continue
        except OSError:
            pass
        finally:
            os.close(dfd)
    return sorted(out)


# --- views ---------------------------------------------------------------------------

class UnixTable:
    """Listening Unix socket paths, for "does anything listen on this
    file?" (default: read now, listeners only). Abstract names are left
    out: they have no file. The kernel keeps the path a socket was bound
    to even after the file was replaced or removed."""

    def __init__(self, socks: Iterable[UnixSock] | None = None):
        if socks is None:
            socks = read_tables(tcp=False, listening_only=True).unix
        self.listening: dict[str, list[int]] = {}  # path -> listening inodes
        for s in socks:
            if s.listening and s.path and not s.path.startswith("@"):
                self.listening.setdefault(s.path, []).append(s.inode)

    def is_listening(self, path: str) -> bool:
        return path in self.listening


def _unix_kind(s: UnixSock) -> str:
    return "unix" if s.type in ("stream", "unknown") else f"unix/{s.type}"


def sockets_of(pid: int) -> list[SockView]:
    """The sockets ``pid`` holds, listening ones first; [] when it is gone.

    Read from the pid's own namespace (``/proc/<pid>/net``), so it is right
    for a process in a container too; Unix peers are not part of this view.
    """
    inodes = socket_inodes(pid)
    if not inodes:
        return []
    want = set(inodes)
    out: list[SockView] = []
    text = _read_text(f"/proc/{pid}/net/unix")
    for s in parse_proc_unix(text or ""):
        if s.inode in want:
            out.append(SockView(_unix_kind(s), s.state, s.path or "(unnamed)", "", s.inode))
    for name, v6 in (("tcp", False), ("tcp6", True)):
        for t in parse_proc_tcp(_read_text(f"/proc/{pid}/net/{name}") or "", v6):
            if t.inode in want:
                out.append(SockView(name, t.state, tcp_text(t.local),
                                    "" if t.listening else tcp_text(t.remote), t.inode))
    order = {"listening": 0, "connected": 1, "established": 1}
    out.sort(key=lambda s: (order.get(s.role, 2), s.kind, s.local))
    return out
