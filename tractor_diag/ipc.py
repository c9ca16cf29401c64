"""The IPC graph: who listens where and who talks to whom, by the kernel.

``graph(snapshot)`` joins the processes of a snapshot to the kernel's
socket tables (`socktables`: TCP 4-tuples, Unix sockets with their peer
inodes from sock_diag) through their fd links, and returns an `IpcGraph`:

- ``listeners[pid]``: the TCP and Unix addresses ``pid`` listens on;
- ``peers[pid]``: its connections to other joined processes, each as
  (peer pid, kind, the listening address the connection was made to, which
  side ``pid`` is on). Both ends inside one process (trio's wakeup
  socketpair, a self-connection) are not IPC and are left out;
- ``edges``: channels with a meaning in a tractor tree:

  * ``parent-channel``: an actor's connection to its parent. The parent is
    the peer listening on the ``--parent_addr`` of a released-runtime
    command line, else its logical parent (`ActorInfo.logical_parent`)
    or the nearest ancestor the actor holds a client connection to. When that is not the OS parent (a forkserver sidecar in
    between) it is also recorded in ``logical_parent``.
  * ``registrar``: a connection to a registry address: TCP port 1616 (on
    any host) and any Unix socket named ``registry@1616.sock`` by
    default, or the addresses given (a test's own port).

  A child connected to a root that is both its parent and the registrar
  gets both edges: which of its connections is which is not visible from
  outside.

- ``port_holders(port_or_path)``: the joined pids listening there.
  `who_listens` answers the same question for the whole box.

Which processes are joined (``pids``): by default every process of the
snapshot that can run a tractor runtime: actors, the snapshot's roots and
any Python process (argv[0] or comm ``python…``/``pypy…``). Shells and
``sleep`` hold no channel worth reading, and the join costs a readlink per
fd. Pass ``pids=`` to join others.

Per network namespace: a joined process in another namespace has its pid
in ``unknown`` (its sockets are not in our tables), as has one that
vanished during the join; neither is "no sockets".

Data only: addresses and paths are the kernel's text, unescaped.
"""
from __future__ import annotations

import os
import time
from collections.abc import Iterable

from . import socktables
from .model import Snapshot, TCPAddr, UDSAddr
from .sockmodel import (
    IpcEdge, IpcGraph, Listener, Peer, PortHolder, PortQuery, SockTables, TcpSock,
    listener_matches, split_port_arg, tcp_text,
)

REGISTRY_PORT = 1616
REGISTRY_SOCK = f"registry@{REGISTRY_PORT}.sock"
DEFAULT_REGISTRY: tuple[str, ...] = (str(REGISTRY_PORT), REGISTRY_SOCK)
_PYTHONS = ("python", "pypy")


def _is_pythonish(argv: list[str], comm: str) -> bool:
    base = argv[0].rsplit("/", 1)[-1] if argv else ""
    return base.startswith(_PYTHONS) or comm.startswith(_PYTHONS)


def endpoints(snapshot: Snapshot) -> list[int]:
    """The snapshot's processes that can hold a tractor channel (see the
    module docstring); zombies hold no fds."""
    out = []
    roots = set(snapshot.roots)
    for pid, entry in snapshot.entries.items():
        proc = entry.proc
        if proc.state in ("Z", "X"):
            continue
        if proc.actor is not None or pid in roots or _is_pythonish(proc.cmdline, proc.comm):
            out.append(pid)
    return sorted(out)


def _host(host: str) -> str:
    # a v4 client reaches a dual-stack listener as ::ffff:a.b.c.d
    return host[7:] if host.startswith("::ffff:") and "." in host else host


def _key(a: TCPAddr) -> tuple[str, int]:
    return _host(a.host), a.port


def _listener_of(t: TcpSock) -> Listener:
    return Listener(kind="tcp", addr=tcp_text(t.local), inode=t.inode, port=t.local.port)


def addr_text(addr: TCPAddr | UDSAddr) -> str:
    """An `Addr` from a command line in the graph's address form."""
    if isinstance(addr, UDSAddr):
        return addr.path
    return tcp_text(addr)


def graph(snapshot: Snapshot, *, pids: Iterable[int] | None = None,
          registry: Iterable[int | str] | None = None,
          tables: SockTables | None = None) -> IpcGraph:
    """The IPC graph of ``snapshot`` (see the module docstring).

    ``registry``: registrar addresses as ``--port`` takes them (a port,
    ``host:port``, a path or a socket file name); default port 1616 and
    ``registry@1616.sock``. ``tables``: socket tables already read.
    """
    joined = sorted(set(endpoints(snapshot) if pids is None else pids))
    if tables is None:
        tables = socktables.read_tables()
    own = socktables.owners(joined, tables.netns)
    registry = [str(r) for r in (DEFAULT_REGISTRY if registry is None else registry)]
    g = IpcGraph(taken_at=time.time(), netns=tables.netns, pids=joined,
                 listeners={}, peers={}, edges=[], logical_parent={}, registry=registry,
                 unknown=sorted(own.other_netns + own.gone),
                 peers_known=tables.peers_known, notes=list(tables.notes))
    if own.other_netns:
        g.notes.append("in another network namespace (sockets unknown): "
                       + ", ".join(map(str, sorted(own.other_netns))))
    held = own.by_inode()  # inode -> pids (a fork shares its parent's fds)
    mine = {pid: set(inodes) for pid, inodes in own.by_pid.items()}

    # TCP: listeners by (host, port), connections by their 4-tuple
    listening_ports: dict[int, set[str]] = {}
    ends: dict[tuple, list[TcpSock]] = {}
    for t in tables.tcp:
        if t.listening:
            listening_ports.setdefault(t.local.port, set()).add(_host(t.local.host))
            for pid in held.get(t.inode, ()):
                g.listeners.setdefault(pid, []).append(_listener_of(t))
        elif t.state == "established":
            ends.setdefault((_key(t.local), _key(t.remote)), []).append(t)

    def serves(a: TCPAddr) -> bool:
        hosts = listening_ports.get(a.port)
        return bool(hosts) and (_host(a.host) in hosts or bool(hosts & {"0.0.0.0", "::"}))

    def add_peer(pid: int, peer: Peer) -> None:
        g.peers.setdefault(pid, []).append(peer)

    for (local, remote), socks in ends.items():
        for t in socks:
            for other in ends.get((remote, local), ()):
                if other.inode == t.inode:
                    continue
                for pid in held.get(t.inode, ()):
                    if other.inode in mine[pid]:
                        continue  # both ends in one process: not IPC
                    if serves(t.local) and not serves(other.local):
                        role, addr = "server", tcp_text(t.local)
                    elif serves(other.local):
                        role, addr = "client", tcp_text(other.local)
                    else:
                        role, addr = "pair", ""
                    for peer_pid in held.get(other.inode, ()):
                        if peer_pid != pid:
                            add_peer(pid, Peer(peer_pid=peer_pid, kind="tcp", addr=addr, role=role,
                                               inode=t.inode, peer_inode=other.inode,
                                               remote=tcp_text(other.local)))

    # Unix: listeners by path, connections by sock_diag's peer inode
    unix = {u.inode: u for u in tables.unix}
    for u in tables.unix:
        pids_here = held.get(u.inode)
        if not pids_here:
            continue
        if u.listening and u.path:
            for pid in pids_here:
                g.listeners.setdefault(pid, []).append(
                    Listener(kind="uds", addr=u.path, inode=u.inode, pending=len(u.pending)))
            continue
        if u.peer is None:
            continue
        other = unix.get(u.peer)
        # an accepted socket carries its listener's path; the client's has none
        if u.path:
            role, addr = "server", u.path
        elif other is not None and other.path:
            role, addr = "client", other.path
        else:
            role, addr = "pair", ""
        for pid in pids_here:
            if u.peer in mine[pid]:
                continue  # both ends in one process: not IPC
            for peer_pid in held.get(u.peer, ()):
                if peer_pid != pid:
                    add_peer(pid, Peer(peer_pid=peer_pid, kind="uds", addr=addr, role=role,
                                       inode=u.inode, peer_inode=u.peer))

    for lst in g.listeners.values():
        lst.sort(key=lambda x: (x.kind, x.addr))
    for ps in g.peers.values():
        ps.sort(key=lambda p: (p.peer_pid, p.kind, p.addr, p.inode))
    _edges(snapshot, g)
    return g


def _is_registry(addr: str, kind: str, specs: list[str]) -> bool:
    probe = Listener(kind=kind, addr=addr, inode=0,
                     port=int(addr.rsplit(":", 1)[1]) if kind == "tcp" else None)
    return any(listener_matches(probe, spec) for spec in specs)


def _edges(snapshot: Snapshot, g: IpcGraph) -> None:
    seen: set[tuple] = set()

    def add(edge: IpcEdge) -> None:
        key = (edge.src, edge.dst, edge.kind, edge.addr)
        if key not in seen:
            seen.add(key)
            g.edges.append(edge)

    for pid, peers in g.peers.items():
        for p in peers:
            if p.role == "client" and _is_registry(p.addr, p.kind, g.registry):
                add(IpcEdge(src=pid, dst=p.peer_pid, kind="registrar", addr=p.addr))

    for pid, entry in snapshot.entries.items():
        actor = entry.proc.actor
        clients = [p for p in g.peers.get(pid, ()) if p.role == "client"]
        if actor is None or not clients:
            continue
        parent = None
        if actor.parent_addr is not None:
            want = addr_text(actor.parent_addr)
            parent = next((p for p in clients if p.addr == want), None)
        if parent is None:
            by_pid = {p.peer_pid: p for p in reversed(clients)}
            # an mp_forkserver actor's spawner is no ancestor of it, and
            # its root (an ancestor) may only be its registrar
            spawner = [actor.logical_parent] if actor.logical_parent is not None else []
            for anc in spawner + _ancestors(snapshot, pid):
                if anc in by_pid:
                    parent = by_pid[anc]
                    break
        if parent is None:
            continue
        add(IpcEdge(src=pid, dst=parent.peer_pid, kind="parent-channel", addr=parent.addr))
        if parent.peer_pid != entry.proc.ppid:
            g.logical_parent[pid] = parent.peer_pid
    g.edges.sort(key=lambda e: (e.src, e.kind, e.dst))


def _ancestors(snapshot: Snapshot, pid: int, limit: int = 4) -> list[int]:
    """Up to ``limit`` ancestors, nearest first (a sidecar adds one level)."""
    out: list[int] = []
    entry = snapshot.entries.get(pid)
    while entry is not None and len(out) < limit:
        ppid = entry.proc.ppid
        if ppid in out or ppid in (0, pid):
            break
        out.append(ppid)
        entry = snapshot.entries.get(ppid)
    return out


def listeners_by_pid(snapshot: Snapshot, pids: Iterable[int] | None = None) -> dict[int, list[Listener]]:
    """Only the listening addresses of the snapshot's endpoints: the
    listeners-only tables, which the kernel reads without walking its
    connection hash. What ``ptree`` and the dashboard show."""
    joined = sorted(set(endpoints(snapshot) if pids is None else pids))
    # the fds first: when none of them holds a socket, the tables (and the
    # socket module a netlink read imports) are not needed at all
    own = socktables.owners(joined)
    if not own.by_pid:
        return {}
    tables = socktables.read_tables(listening_only=True)
    held = own.by_inode()
    out: dict[int, list[Listener]] = {}
    for t in tables.tcp:
        for pid in held.get(t.inode, ()):
            out.setdefault(pid, []).append(_listener_of(t))
    for u in tables.unix:
        if u.path:
            for pid in held.get(u.inode, ()):
                out.setdefault(pid, []).append(
                    Listener(kind="uds", addr=u.path, inode=u.inode, pending=len(u.pending)))
    for lst in out.values():
        lst.sort(key=lambda x: (x.kind, x.addr))
    return out


def annotate(snapshot: Snapshot, graph: IpcGraph | None = None) -> Snapshot:
    """Fill each entry's ``listens`` (its listening addresses) in place,
    from ``graph`` when there is one, else from the listeners-only tables."""
    found = graph.listeners if graph is not None else listeners_by_pid(snapshot)
    for pid, lst in found.items():
        entry = snapshot.entries.get(pid)
        if entry is not None:
            entry.listens = [x.addr for x in lst]
    return snapshot


def who_listens(port_or_path: int | str) -> tuple[list[tuple[int, Listener]], list[Listener]]:
    """Every process of our network namespace listening on this port (TCP)
    or Unix socket path / file name: ((pid, listener) by pid, listeners
    that no process we can see holds: one in another PID namespace, or
    whose fds we may not read).

    A path is compared as the kernel recorded it at bind time: a relative
    one is made absolute against our cwd first. Raises ValueError for text
    that is neither a port nor a path.
    """
    host, port, path = split_port_arg(port_or_path)
    if port is None and path is None:
        raise ValueError(f"not a port, host:port or socket path: {port_or_path!r}")
    spec: int | str = port_or_path
    if path is not None and "/" in path and not path.startswith(("/", "@")):
        spec = os.path.abspath(path)
    tables = socktables.read_tables(listening_only=True, tcp=path is None, unix=port is None)
    matched: dict[int, Listener] = {}
    for t in tables.tcp:
        lst = _listener_of(t)
        if listener_matches(lst, spec):
            matched[t.inode] = lst
    for u in tables.unix:
        if u.path:
            lst = Listener(kind="uds", addr=u.path, inode=u.inode, pending=len(u.pending))
            if listener_matches(lst, spec):
                matched[u.inode] = lst
    if not matched:
        return [], []
    out: list[tuple[int, Listener]] = []
    own = socktables.owners(socktables.holders(matched, tables.netns), tables.netns)
    seen: set[int] = set()
    for pid, inodes in sorted(own.by_pid.items()):
        for inode in inodes:
            if inode in matched:
                out.append((pid, matched[inode]))
                seen.add(inode)
    return out, [lst for inode, lst in matched.items() if inode not in seen]


def port_query(port_or_path: str) -> PortQuery:
    """`who_listens`, with each holder's name (one small /proc read)."""
    from . import procfs

    found, unseen = who_listens(port_or_path)
    procs = procfs.scan(only=sorted({pid for pid, _ in found}), detail_actors=False)
    q = PortQuery(query=port_or_path, holders=[], unseen=unseen, netns=socktables.netns_of())
    for pid, lst in found:
        proc = procs.get(pid)
        title = ""
        if proc is not None:  # exact text: the renderer escapes it
            # an actor nothing names (mp backends) is its command line, not
            # the empty text that means "it just exited"
            title = (proc.actor.name if proc.actor is not None and proc.actor.name
                     else " ".join(proc.cmdline) or f"[{proc.comm}]")
        q.holders.append(PortHolder(
            pid=pid, title=title, listener=lst,
            actor=proc is not None and proc.actor is not None))
    return q
