"""Sockets as data: the kernel's socket tables and the IPC graph built on them.

Plain `msgspec.Struct`s, like `model`: nothing here reads the system
(`socktables` fills the tables, `ipc` the graph). Every address and path is
the kernel's text, unescaped: renderers escape what they print.

A socket table describes ONE network namespace. A process in another one
has sockets these tables do not list: its sockets are *unknown*, never
*absent* (`SocketOwners.other_netns`, `IpcGraph.unknown`).
"""
from __future__ import annotations

from typing import Literal

import msgspec

from .model import TCPAddr

TcpState = Literal[
    "established", "syn-sent", "syn-recv", "fin-wait1", "fin-wait2", "time-wait",
    "close", "close-wait", "last-ack", "listening", "closing", "new-syn-recv", "unknown",
]
UnixType = Literal["stream", "dgram", "seqpacket", "unknown"]
UnixState = Literal["listening", "connected", "unconnected", "connecting",
                    "disconnecting", "unknown"]


def tcp_text(addr: TCPAddr) -> str:
    """``host:port``, an IPv6 host in brackets so the port stays readable."""
    if ":" in addr.host:
        return f"[{addr.host}]:{addr.port}"
    return f"{addr.host}:{addr.port}"


class TcpSock(msgspec.Struct, frozen=True):
    """One row of ``/proc/net/tcp`` or ``tcp6``."""

    inode: int  # 0 for sockets no fd holds any more (time-wait, orphaned)
    v6: bool
    state: TcpState
    local: TCPAddr
    remote: TCPAddr  # 0.0.0.0:0 (or [::]:0) for a listener
    uid: int

    @property
    def listening(self) -> bool:
        return self.state == "listening"


class UnixSock(msgspec.Struct, frozen=True):
    """One Unix-domain socket of the namespace.

    ``path`` is the address it is bound to: a file path, an abstract name
    written ``@name`` (its NUL bytes kept as ``\\x00`` characters), or None
    when unbound. A socket accepted from a listener carries the listener's
    path. ``peer`` is the inode of the other end of a connected socket,
    read from sock_diag (`None` where the peer is not known: no peer, or
    the table came from ``/proc/net/unix``, which has no peer column).
    """

    inode: int
    type: UnixType
    state: UnixState
    path: str | None = None
    peer: int | None = None
    # listeners only, from sock_diag: connections queued but not accepted yet
    pending: list[int] = []

    @property
    def listening(self) -> bool:
        return self.state == "listening"


TableSource = Literal["sock_diag", "proc"]


class SockTables(msgspec.Struct):
    """The TCP and Unix socket tables of one network namespace, read once."""

    netns: int | None  # inode of the namespace (``/proc/<pid>/ns/net``); None: unreadable
    tcp: list[TcpSock] = []
    unix: list[UnixSock] = []
    # where the Unix table came from: sock_diag has peers, /proc/net/unix not
    unix_source: TableSource = "proc"
    read_at: float = 0.0  # epoch seconds
    notes: list[str] = []

    @property
    def peers_known(self) -> bool:
        return self.unix_source == "sock_diag"


class SocketOwners(msgspec.Struct):
    """Which of the asked pids hold which socket inodes (from their fd links)."""

    netns: int | None  # the namespace the tables were read in
    by_pid: dict[int, list[int]] = {}  # pid -> socket inodes it holds
    # pids whose sockets these tables cannot describe: another network
    # namespace (their sockets are unknown, not absent)
    other_netns: list[int] = []
    gone: list[int] = []  # vanished (or fds unreadable) during the join

    def by_inode(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for pid, inodes in self.by_pid.items():
            for inode in inodes:
                out.setdefault(inode, []).append(pid)
        return out


class SockView(msgspec.Struct, frozen=True):
    """One socket of one process, the way a detail pane lists it."""

    kind: str  # unix | unix/dgram | unix/seqpacket | tcp | tcp6
    role: str  # listening | connected | unconnected | a TCP state
    local: str  # "(unnamed)" for an unbound Unix socket
    remote: str = ""
    inode: int = 0


# --- the IPC graph -----------------------------------------------------------------

IpcKind = Literal["tcp", "uds"]
EdgeKind = Literal["parent-channel", "registrar"]


class Listener(msgspec.Struct, frozen=True):
    """A listening socket a process holds."""

    kind: IpcKind
    addr: str  # host:port, or the socket path (``@name`` when abstract)
    inode: int
    port: int | None = None  # TCP only
    pending: int = 0  # UDS only: connections queued, not accepted yet


class Peer(msgspec.Struct, frozen=True):
    """One connection of a process to another process.

    ``addr`` is the listening address the connection was made to (the
    server side's address), or "" for an unnamed Unix socket pair.
    ``role`` says which side this process is on: ``client`` connected to
    ``addr``, ``server`` accepted on it, ``pair`` when neither (socketpair).
    ``remote``: the other end's own address (TCP), what the process itself
    calls the connection's remote address (a server's view of a client).
    """

    peer_pid: int
    kind: IpcKind
    addr: str
    role: Literal["client", "server", "pair"]
    inode: int
    peer_inode: int
    remote: str = ""


class IpcEdge(msgspec.Struct, frozen=True):
    """``src`` holds a channel of ``kind`` to ``dst`` over ``addr``."""

    src: int
    dst: int
    kind: EdgeKind
    addr: str


class IpcGraph(msgspec.Struct):
    """Who listens where and who talks to whom, among a snapshot's processes.

    ``listeners[pid]`` and ``peers[pid]`` hold only IPC between different
    processes: both ends of a socket pair inside one process (trio's wakeup
    socketpair) are left out. ``peers`` names only peers among the joined
    pids (``pids``). ``unknown`` lists pids whose sockets could not be
    read (another network namespace, or fds unreadable): their absence from
    ``listeners``/``peers`` says nothing.
    """

    taken_at: float
    netns: int | None
    pids: list[int]  # the processes joined
    listeners: dict[int, list[Listener]] = {}
    peers: dict[int, list[Peer]] = {}
    edges: list[IpcEdge] = []
    # actor -> its parent by the channel it holds, where that differs from
    # the OS parent (a forkserver sidecar in between)
    logical_parent: dict[int, int] = {}
    registry: list[str] = []  # the registrar addresses looked for
    unknown: list[int] = []
    peers_known: bool = True  # False: no sock_diag, so no Unix peers
    notes: list[str] = []

    def port_holders(self, port_or_path: int | str) -> list[int]:
        """Pids listening on a TCP port (int, ``"1616"``, ``"host:1616"``)
        or a Unix socket path, among the joined pids."""
        return sorted({pid for pid, ls in self.listeners.items()
                       for lst in ls if listener_matches(lst, port_or_path)})

    def edges_from(self, pid: int) -> list[IpcEdge]:
        return [e for e in self.edges if e.src == pid]


def split_port_arg(text: int | str) -> tuple[str | None, int | None, str | None]:
    """A ``--port`` argument -> (host, port, path): ``1616``, ``host:1616``,
    ``[::1]:1616``, a socket path (anything with a ``/``, or ``@abstract``)
    or a bare socket file name ending in ``.sock``.
    (None, None, None) when it is none of those."""
    if isinstance(text, int):
        return (None, text, None) if 0 < text < 65536 else (None, None, None)
    text = text.strip()
    if "/" in text or text.startswith("@") or text.endswith(".sock"):
        return None, None, text
    host = None
    port_text = text
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        port_text = rest[1:] if sep and rest.startswith(":") else ""
    elif ":" in text:
        host, _, port_text = text.rpartition(":")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        return None, None, None
    return host or None, int(port_text), None


_WILDCARD = ("0.0.0.0", "::", "")
# the one host name taken without a resolver (no DNS from a diagnosis tool)
_LOCALHOST = ("127.0.0.1", "::1")


def listener_matches(lst: Listener, port_or_path: int | str) -> bool:
    """Does ``lst`` listen on this port / path? A path matches exactly; a
    bare file name matches the last component; a port with a host also
    matches a listener on every address (0.0.0.0, ::)."""
    host, port, path = split_port_arg(port_or_path)
    if path is not None:
        if lst.kind != "uds":
            return False
        if "/" in path or path.startswith("@"):
            return lst.addr == path
        return lst.addr.rsplit("/", 1)[-1] == path
    if port is None or lst.kind != "tcp" or lst.port != port:
        return False
    if host is None:
        return True
    lhost = lst.addr.rsplit(":", 1)[0].strip("[]")
    hosts = _LOCALHOST if host == "localhost" else (host,)
    return lhost in hosts or lhost in _WILDCARD


class PortHolder(msgspec.Struct, frozen=True):
    """A process listening on the address asked about."""

    pid: int
    title: str  # actor name, else the command line ("" when it just exited)
    listener: Listener
    actor: bool = False


class PortQuery(msgspec.Struct):
    """``ptree --port``: who listens on this port or socket path."""

    query: str
    holders: list[PortHolder] = []
    # listening there, but held by no process we can see (another PID
    # namespace, or fds we may not read)
    unseen: list[Listener] = []
    netns: int | None = None  # the network namespace looked in
