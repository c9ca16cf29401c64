"""The kernel socket tables (`socktables`) on real sockets of real processes,
and the text-table parsers on fixed input."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from tractor_diag import socktables
from tractor_diag.model import TCPAddr
from tractor_diag.sockmodel import TcpSock, UnixSock

PY = sys.executable
pytestmark = pytest.mark.timeout(60)

# A server: listens, accepts one connection, prints READY <pid> <port|path>.
SERVER = r"""
import os, socket, sys, time
kind, where = sys.argv[1], sys.argv[2]
if kind == "tcp":
    s = socket.socket(); s.bind(("127.0.0.1", 0)); addr = s.getsockname()[1]
elif kind == "tcp6":
    s = socket.socket(socket.AF_INET6); s.bind(("::1", 0)); addr = s.getsockname()[1]
else:
    s = socket.socket(socket.AF_UNIX); s.bind(where); addr = where
s.listen()
print("READY", os.getpid(), addr, flush=True)
conn, _ = s.accept()
print("ACCEPTED", os.fstat(conn.fileno()).st_ino, flush=True)
time.sleep(600)
"""
# A client: connects, prints READY <pid> <inode of its socket>.
CLIENT = r"""
import os, socket, sys, time
kind, where = sys.argv[1], sys.argv[2]
if kind in ("tcp", "tcp6"):
    c = socket.create_connection(("127.0.0.1" if kind == "tcp" else "::1", int(where)))
else:
    c = socket.socket(socket.AF_UNIX); c.connect(where)
print("READY", os.getpid(), os.fstat(c.fileno()).st_ino, flush=True)
time.sleep(600)
"""
# Holds one unconnected TCP socket; prints READY <pid>.
HOLDER = ("import os, socket, time; s = socket.socket();"
          " print('READY', os.getpid(), flush=True); time.sleep(600)")


def _start(script: str, *args: str) -> tuple[subprocess.Popen, list[str]]:
    p = subprocess.Popen([PY, "-c", script, *args], stdout=subprocess.PIPE,
                         stdin=subprocess.DEVNULL, text=True)
    line = p.stdout.readline().split()
    assert line and line[0] == "READY", line
    return p, line[1:]


@pytest.fixture
def procs():
    started: list[subprocess.Popen] = []
    yield started
    for p in started:  # only what this test started, by its Popen
        p.kill()
        p.wait(timeout=10)


def _pair(procs, kind: str, where: str = ""):
    server, (spid, addr) = _start(SERVER, kind, where)
    procs.append(server)
    client, (cpid, cino) = _start(CLIENT, kind, addr)
    procs.append(client)
    accepted = server.stdout.readline().split()
    assert accepted[0] == "ACCEPTED"
    return int(spid), addr, int(cpid), int(cino), int(accepted[1])


def test_tcp_listener_and_connection_between_two_processes(procs):
    spid, port, cpid, cino, sino = _pair(procs, "tcp")
    port = int(port)
    tables = socktables.read_tables()
    by_inode = {t.inode: t for t in tables.tcp}
    own = socktables.owners([spid, cpid])
    listen = [by_inode[i] for i in own.by_pid[spid] if by_inode.get(i) and by_inode[i].listening]
    assert [(t.local, t.state) for t in listen] == [(TCPAddr("127.0.0.1", port), "listening")]
    client, accepted = by_inode[cino], by_inode[sino]
    assert cino in own.by_pid[cpid] and sino in own.by_pid[spid]
    assert client.state == accepted.state == "established"
    assert client.remote == accepted.local == TCPAddr("127.0.0.1", port)
    assert client.local == accepted.remote  # the 4-tuple seen from both ends
    # the listeners-only read has the listener and none of the connections
    quick = {t.inode for t in socktables.read_tables(listening_only=True).tcp}
    assert listen[0].inode in quick and cino not in quick and sino not in quick


def test_uds_peers_between_two_processes(procs, tmp_path):
    path = str(tmp_path / "srv.sock")
    spid, _, cpid, cino, sino = _pair(procs, "uds", path)
    tables = socktables.read_tables()
    assert tables.unix_source == "sock_diag" and tables.peers_known
    by_inode = {u.inode: u for u in tables.unix}
    # /proc/net/unix has no peer: sock_diag joins the two ends
    assert by_inode[cino].peer == sino and by_inode[sino].peer == cino
    assert by_inode[sino].path == path  # an accepted socket carries the listener's path
    assert by_inode[cino].path is None
    listeners = [u for u in tables.unix if u.path == path and u.listening]
    assert len(listeners) == 1
    own = socktables.owners([spid, cpid]).by_inode()
    assert own[cino] == [cpid] and own[sino] == [spid] and own[listeners[0].inode] == [spid]
    assert socktables.holders([listeners[0].inode]) == [spid]
    assert socktables.UnixTable().is_listening(path)


def test_socketpair_in_one_process_points_at_itself():
    a, b = socket.socketpair()
    try:
        ia, ib = os.fstat(a.fileno()).st_ino, os.fstat(b.fileno()).st_ino
        by_inode = {u.inode: u for u in socktables.read_unix_diag()}
        assert by_inode[ia].peer == ib and by_inode[ib].peer == ia
        assert socktables.owners([os.getpid()]).by_inode()[ia] == [os.getpid()]
    finally:
        a.close()
        b.close()


def test_abstract_name_and_queued_connection():
    name = f"tdx-test-{os.getpid()}-{time.monotonic_ns()}"
    srv = socket.socket(socket.AF_UNIX)
    cli = socket.socket(socket.AF_UNIX)
    try:
        srv.bind("\0" + name)
        srv.listen()
        cli.connect("\0" + name)  # never accepted
        by_inode = {u.inode: u for u in socktables.read_unix_diag()}
        lst = by_inode[os.fstat(srv.fileno()).st_ino]
        assert lst.path == "@" + name and lst.listening
        assert lst.pending == [os.fstat(cli.fileno()).st_ino]
    finally:
        cli.close()
        srv.close()


def test_tcp6_listener_and_connection_are_decoded(procs):
    """IPv6 sockets from sock_diag: the address is ::1, not bytes of a v4
    address, and both ends of the connection are found."""
    spid, port, cpid, cino, sino = _pair(procs, "tcp6")
    port = int(port)
    by_inode = {t.inode: t for t in socktables.read_tcp_diag()}
    own = socktables.owners([spid, cpid])
    listen = [by_inode[i] for i in own.by_pid[spid] if by_inode.get(i) and by_inode[i].listening]
    assert [(t.local, t.v6) for t in listen] == [(TCPAddr("::1", port), True)]
    client, accepted = by_inode[cino], by_inode[sino]
    assert client.v6 and client.state == accepted.state == "established"
    assert client.remote == accepted.local == TCPAddr("::1", port)
    assert client.local == accepted.remote


def test_sock_diag_agrees_with_proc_tables(procs, tmp_path):
    """The netlink readers and the /proc fallbacks describe the same sockets."""
    _pair(procs, "tcp")
    _pair(procs, "uds", str(tmp_path / "x.sock"))
    diag = {t.inode: t for t in socktables.read_tcp_diag() if t.inode}
    text = {t.inode: t for name, v6 in (("tcp", False), ("tcp6", True))
            for t in socktables.parse_proc_tcp(open(f"/proc/net/{name}").read(), v6) if t.inode}
    common = diag.keys() & text.keys()
    assert len(common) >= 3  # ours, at least; others may come and go meanwhile
    assert all(diag[i] == text[i] for i in common)
    udiag = {u.inode: u for u in socktables.read_unix_diag()}
    utext = {u.inode: u for u in socktables.parse_proc_unix(open("/proc/net/unix").read())}
    # a path holding a newline splits its /proc row (sock_diag has it whole)
    ucommon = {i for i in udiag.keys() & utext.keys() if "\n" not in (udiag[i].path or "")}
    assert ucommon
    for i in ucommon:
        d, t = udiag[i], utext[i]
        assert (d.type, d.listening, d.path) == (t.type, t.listening, t.path), (d, t)


def test_a_process_vanishing_mid_join(procs):
    first, (p1,) = _start(HOLDER)
    second, (p2,) = _start(HOLDER)
    procs += [first, second]
    p1, p2 = int(p1), int(p2)

    def pids():
        yield p1
        second.send_signal(signal.SIGKILL)  # gone between two reads of the join
        second.wait(timeout=10)
        yield p2

    own = socktables.owners(pids())
    assert list(own.by_pid) == [p1] and own.gone == [p2]
    assert socktables.socket_inodes(p2) is None
    assert socktables.sockets_of(p2) == []


def test_other_network_namespace_is_unknown_not_empty(procs):
    p = subprocess.Popen(["unshare", "--net", "--", PY, "-c",
                          "import socket, time; s = socket.socket(); s.bind(('127.0.0.1', 0));"
                          " s.listen(); print('READY', flush=True); time.sleep(600)"],
                         stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    procs.append(p)
    if p.stdout.readline().strip() != "READY":
        pytest.skip("unshare --net is not permitted here")
    own = socktables.owners([p.pid])
    assert own.other_netns == [p.pid] and p.pid not in own.by_pid
    # its own namespace's tables, read through /proc/<pid>/net, do show it
    assert [s.role for s in socktables.sockets_of(p.pid)] == ["listening"]


# --- parsers, fixed input ------------------------------------------------------------------

def test_parse_proc_tcp_v4_and_v6():
    v4 = ("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
          "   0: 0100007F:0650 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 1\n"
          "   1: 0100007F:9C40 0100007F:0650 01 00000000:00000000 00:00000000 00000000  1000        0 4243 1\n"
          "garbage\n")
    rows = socktables.parse_proc_tcp(v4, False)
    assert rows == [
        TcpSock(inode=4242, v6=False, state="listening", local=TCPAddr("127.0.0.1", 1616),
                remote=TCPAddr("0.0.0.0", 0), uid=1000),
        TcpSock(inode=4243, v6=False, state="established", local=TCPAddr("127.0.0.1", 40000),
                remote=TCPAddr("127.0.0.1", 1616), uid=1000),
    ]
    # ::1 and ::ffff:127.0.0.1, each 32-bit word printed native-endian
    v6 = ("  sl  local_address                         remote_address                        st ...\n"
          "   0: 00000000000000000000000001000000:0650 00000000000000000000000000000000:0000 0A "
          "00000000:00000000 00:00000000 00000000     0        0 77 1\n"
          "   1: 0000000000000000FFFF00000100007F:0650 00000000000000000000000000000000:0000 0A "
          "00000000:00000000 00:00000000 00000000     0        0 78 1\n")
    rows = socktables.parse_proc_tcp(v6, True)
    assert [(r.local.host, r.local.port, r.inode, r.v6) for r in rows] == [
        ("::1", 1616, 77, True), ("::ffff:127.0.0.1", 1616, 78, True)]


def test_parse_proc_unix():
    text = (
        "Num       RefCount Protocol Flags    Type St Inode Path\n"
        "0000000000000000: 00000002 00000000 00010000 0001 01 101 /run/a b.sock\n"
        "0000000000000000: 00000003 00000000 00000000 0001 03 102 /run/a b.sock\n"
        "0000000000000000: 00000002 00000000 00000000 0002 01 103 @abstract\n"
        "0000000000000000: 00000002 00000000 00000000 0005 03 104\n"
        "garbage\n"
    )
    assert socktables.parse_proc_unix(text) == [
        UnixSock(101, "stream", "listening", "/run/a b.sock"),
        UnixSock(102, "stream", "connected", "/run/a b.sock"),
        UnixSock(103, "dgram", "unconnected", "@abstract"),
        UnixSock(104, "seqpacket", "connected", None),
    ]
