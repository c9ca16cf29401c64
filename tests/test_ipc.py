"""The IPC graph (`ipc.graph`) on real trees and real sockets."""
from __future__ import annotations

import sys

import pytest

from tractor_diag import ipc, trees

PY = sys.executable
pytestmark = pytest.mark.timeout(120)


def snapshot_of(*pids: int):
    """The trees of ``pids`` only: stray actors elsewhere on the box (other
    tests' orphans) are left out."""
    snap = trees.take_snapshot(trees.Targets(list(pids)))
    for pid in [p for p, e in snap.entries.items() if e.root is None]:
        del snap.entries[pid]
    snap.strays = []
    return snap


@pytest.mark.released
def test_released_tree_over_tcp(released_tree):
    tree = released_tree(depth=2, breadth=1, hang="sleep")
    a = tree.actors()
    root, spawner, leaf = tree.root, a["spawner_0"], a["leaf_0_0"]
    g = ipc.graph(snapshot_of(root), registry=[tree.port])
    # every actor listens on TCP; the root on the registry port
    assert [x.addr for x in g.listeners[root]] == [f"127.0.0.1:{tree.port}"]
    for pid in (spawner, leaf):
        assert [x.kind for x in g.listeners[pid]] == ["tcp"]
    spawner_addr = g.listeners[spawner][0].addr
    edges = {(e.src, e.dst, e.kind, e.addr) for e in g.edges}
    assert (spawner, root, "parent-channel", f"127.0.0.1:{tree.port}") in edges
    assert (leaf, spawner, "parent-channel", spawner_addr) in edges
    assert (spawner, root, "registrar", f"127.0.0.1:{tree.port}") in edges
    assert not [e for e in g.edges if e.src == root]  # the root has no parent channel
    assert g.logical_parent == {}  # the OS parents are the actor parents here
    # peers name each other from both sides
    assert {(p.peer_pid, p.role) for p in g.peers[leaf]} >= {(spawner, "client")}
    assert (leaf, "server") in {(p.peer_pid, p.role) for p in g.peers[spawner]}
    assert g.port_holders(tree.port) == [root]
    assert g.port_holders(f"127.0.0.1:{tree.port}") == [root]
    assert g.unknown == []
    # the box-wide question names the same holder
    assert [pid for pid, _ in ipc.who_listens(tree.port)[0]] == [root]


def test_current_tree_over_uds(current_tree, bindspace):
    tree = current_tree(depth=2, breadth=1, hang="sleep", registry=True)
    a = tree.actors()
    root, spawner, leaf = tree.root, a["spawner_0"], a["leaf_0_0"]
    g = ipc.graph(snapshot_of(root))
    reg = str(bindspace / "registry@1616.sock")
    assert reg in [x.addr for x in g.listeners[root]]
    assert [x.addr for x in g.listeners[leaf]] == [str(bindspace / f"leaf_0_0@{leaf}.sock")]
    root_sock = str(bindspace / f"root@{root}.sock")
    spawner_sock = str(bindspace / f"spawner_0@{spawner}.sock")
    pc = {(e.src, e.dst, e.addr) for e in g.edges if e.kind == "parent-channel"}
    assert pc == {(spawner, root, root_sock), (leaf, spawner, spawner_sock)}
    assert g.port_holders("registry@1616.sock") == [root]
    assert g.port_holders(reg) == [root]
    assert [pid for pid, _ in ipc.who_listens(reg)[0]] == [root]


# Root listens on a UDS path and on a TCP port; it also holds a socketpair
# (like trio's wakeup pair) and a self-connection over its own listener. It
# starts a sidecar (plain python) that starts the actor: the actor's OS parent
# is the sidecar, its channel goes to the root (as under a forkserver).
ROOT = r"""
import os, socket, subprocess, sys, time
path = sys.argv[1]
srv = socket.socket(socket.AF_UNIX); srv.bind(path); srv.listen()
a, b = socket.socketpair()
self_c = socket.socket(socket.AF_UNIX); self_c.connect(path); self_s, _ = srv.accept()
side = subprocess.Popen([sys.executable, "-c", SIDECAR, path], stdin=subprocess.DEVNULL)
conn, _ = srv.accept()
print("READY", side.pid, conn.recv(64).decode(), flush=True)
time.sleep(600)
"""
SIDECAR = r"""
import subprocess, sys, time
subprocess.Popen([sys.executable, "-c", CHILD, sys.argv[1]], stdin=subprocess.DEVNULL)
time.sleep(600)
"""
CHILD = r"""
import os, socket, sys, time
import setproctitle
setproctitle.setproctitle(f"_subactor[kid@{os.getpid()}]")
c = socket.socket(socket.AF_UNIX); c.connect(sys.argv[1])
c.send(str(os.getpid()).encode())
time.sleep(600)
"""


def test_forkserver_parent_and_socketpairs_are_not_edges(spawn, tmp_path):
    pytest.importorskip("setproctitle")
    path = str(tmp_path / "root.sock")
    script = ROOT.replace("SIDECAR", repr(SIDECAR.replace("CHILD", repr(CHILD))))
    h = spawn([PY, "-c", script, path], label="ipc-root")
    _, sidecar, child = h.ready_line.split()
    sidecar, child, root = int(sidecar), int(child), h.root
    g = ipc.graph(snapshot_of(root))
    # the root's own pair and self-connection are not IPC: its only peer is the child
    assert [(p.peer_pid, p.kind, p.addr, p.role) for p in g.peers[root]] == [
        (child, "uds", path, "server")]
    assert [(p.peer_pid, p.role) for p in g.peers[child]] == [(root, "client")]
    assert sidecar not in g.peers
    assert [(e.src, e.dst, e.kind) for e in g.edges] == [(child, root, "parent-channel")]
    assert g.logical_parent == {child: root}  # the OS parent is the sidecar
    assert g.port_holders(path) == [root]


def test_dead_and_given_pids(spawn, tmp_path):
    h = spawn([PY, "-c", "import time; print('READY', flush=True); time.sleep(600)"],
              label="ipc-plain")
    snap = snapshot_of(h.root)
    h.kill_pid(h.root)  # vanishes between the snapshot and the join
    h.popen.wait(timeout=10)
    g = ipc.graph(snap)
    assert g.unknown == [h.root] and g.listeners == {} and g.peers == {}


def test_port_argument_forms():
    from tractor_diag.sockmodel import Listener, listener_matches, split_port_arg

    assert split_port_arg("1616") == (None, 1616, None)
    assert split_port_arg("127.0.0.1:1616") == ("127.0.0.1", 1616, None)
    assert split_port_arg("[::1]:1616") == ("::1", 1616, None)
    assert split_port_arg("/run/x/registry@1616.sock") == (None, None, "/run/x/registry@1616.sock")
    assert split_port_arg("registry@1616.sock") == (None, None, "registry@1616.sock")
    for bad in ("", "x", "70000", "0", "host:", "[::1]"):
        assert split_port_arg(bad) == (None, None, None), bad
    anyhost = Listener(kind="tcp", addr="0.0.0.0:1616", inode=1, port=1616)
    local = Listener(kind="tcp", addr="127.0.0.1:1616", inode=2, port=1616)
    uds = Listener(kind="uds", addr="/run/t/registry@1616.sock", inode=3)
    assert listener_matches(anyhost, "10.0.0.1:1616") and not listener_matches(local, "10.0.0.1:1616")
    assert listener_matches(local, 1616) and not listener_matches(local, 1617)
    assert listener_matches(local, "localhost:1616")
    assert listener_matches(uds, "registry@1616.sock") and not listener_matches(uds, 1616)
    assert not listener_matches(uds, "/other/registry@1616.sock")


def test_dump_all_bundle_holds_the_ipc_graph(current_tree, tmp_path):
    import json
    import os
    import subprocess

    tree = current_tree(depth=2, breadth=1, hang="sleep")
    a = tree.actors()
    r = subprocess.run([PY, "-m", "tractor_diag", "dump-all", str(tree.root), "-o", str(tmp_path)],
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                       env={**os.environ, "NO_COLOR": "1"})
    assert r.returncode == 0, r.stderr
    bundle = tmp_path / r.stdout.strip()
    g = json.loads((bundle / "ipc.json").read_text())
    edges = {(e["src"], e["dst"], e["kind"]) for e in g["edges"]}
    assert edges == {(a["spawner_0"], tree.root, "parent-channel"),
                     (a["leaf_0_0"], a["spawner_0"], "parent-channel")}
    assert "ipc.json" in json.loads((bundle / "meta.json").read_text())["files"]
    text = (bundle / "tree.txt").read_text()
    leaf = a["leaf_0_0"]
    assert f"listens leaf_0_0@{leaf}.sock" in next(ln for ln in text.splitlines() if f"{leaf} " in ln)
    entries = json.loads((bundle / "tree.json").read_text())["entries"]
    assert entries[str(leaf)]["listens"] == [str(tree.bindspace / f"leaf_0_0@{leaf}.sock")]
