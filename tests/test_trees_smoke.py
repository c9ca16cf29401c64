"""The tree fixtures yield the OS-visible facts they promise, and leave
nothing behind. Assertions read /proc directly (never ``tractor_diag``)."""
from __future__ import annotations

import ast
import os
import signal
import socket
import stat
import sys
import time
import uuid
from pathlib import Path

import platformdirs
import psutil

import _leaks_helpers as lh
import pytest

from trees.harness import (
    CURRENT_SCRIPT,
    _wait_until,
    RELEASED_SCRIPT,
    STACKSCOPE_LOG,
    TASKDUMP_LOG,
    argv_of,
    handles_signal,
    proc_stat,
    read_cmdline,
    read_comm,
    status_field,
    unix_listening_paths,
)


def wchan(pid: int) -> str:
    try:
        return Path(f'/proc/{pid}/wchan').read_text()
    except OSError:
        return ''


def cpu_seconds(pid: int, window: float = 0.3) -> float:
    p = psutil.Process(pid)
    t0 = sum(p.cpu_times()[:2])
    time.sleep(window)
    return sum(p.cpu_times()[:2]) - t0


def burns_cpu(pid: int, need: float = 0.3, timeout: float = 5) -> bool:
    """``pid`` accumulates ``need`` s of CPU within ``timeout`` (robust to
    other load on a 2-core box: a runaway gets at least a share)."""
    p = psutil.Process(pid)
    t0 = sum(p.cpu_times()[:2])
    return _wait_until(lambda: sum(p.cpu_times()[:2]) - t0 >= need, timeout)


def tcp_listeners(pid: int) -> set[int]:
    return {c.laddr.port for c in psutil.Process(pid).net_connections('tcp')
            if c.status == psutil.CONN_LISTEN}


def dump_log(pid: int) -> Path:
    """Where the look-alike tree's armed dumper (tractor_diag.taskdump) writes:
    one file per pid *and* PID namespace, ours here."""
    ns = os.stat('/proc/self/ns/pid').st_ino
    return Path(TASKDUMP_LOG.format(ns=ns, pid=pid))


def assert_gone(pids, sockets=()) -> None:
    for pid in pids:
        assert proc_stat(pid) is None, f'pid {pid} still exists'
        assert not os.path.exists(STACKSCOPE_LOG.format(pid=pid))
        assert not dump_log(pid).exists()
    for path in sockets:
        assert not os.path.lexists(path), f'{path} left behind'


# --- environment ----------------------------------------------------------------

def test_isolated_bindspace(xdg_runtime_dir, bindspace):
    assert os.environ['XDG_RUNTIME_DIR'] == str(xdg_runtime_dir)
    assert stat.S_IMODE(xdg_runtime_dir.stat().st_mode) == 0o700
    assert Path(platformdirs.user_runtime_dir('tractor')) == bindspace
    assert list(bindspace.iterdir()) == []


# --- released runtime -----------------------------------------------------------

def test_released_tree_shape(released_tree, tractor_python):
    tree = released_tree(depth=2, breadth=2, hang='sleep')
    actors = tree.actors()
    assert set(actors) == {'root', 'spawner_0', 'spawner_1', 'leaf_0_0',
                           'leaf_0_1', 'leaf_1_0', 'leaf_1_1'}
    assert actors['root'] == tree.root
    assert argv_of(tree.root) == [str(tractor_python), str(RELEASED_SCRIPT),
                                  str(tree.port), '--depth', '2',
                                  '--breadth', '2', '--hang', 'sleep',
                                  '--loglevel', 'error']
    assert tree.port in tcp_listeners(tree.root)  # the registry

    for name, pid in actors.items():
        if name == 'root':
            continue
        argv = argv_of(pid)
        assert argv[:4] == [str(tractor_python), '-m', 'tractor._child',
                            '--uid']
        assert argv[5] == '--parent_addr'
        assert argv[7:] == ['--loglevel', 'ERROR']
        uid = ast.literal_eval(argv[4])
        assert argv[4] == repr(uid)  # exactly "('name', 'uuid')"
        assert uid[0] == name and uuid.UUID(uid[1]).version == 4
        host, port = ast.literal_eval(argv[6])
        assert argv[6] == repr((host, port)) and host == '127.0.0.1'
        parent = proc_stat(pid)[1]
        if name.startswith('spawner_'):
            assert parent == tree.root and port == tree.port
        else:
            spawner = actors['spawner_' + name.split('_')[1]]
            assert parent == spawner
            assert port in tcp_listeners(spawner)
            assert 'sleep' in wchan(pid)  # stuck in sync time.sleep
        # the released runtime installs no SIGUSR1 handler
        assert not handles_signal(pid, signal.SIGUSR1)

    pids = tree.tracked()
    assert len(pids) == 7
    assert tree.stop() == []
    assert_gone(pids)


def test_released_orphans_and_runaway(released_tree):
    tree = released_tree(depth=2, breadth=2, hang='runaway')
    actors = tree.actors()
    assert burns_cpu(actors['leaf_0_0'])
    assert cpu_seconds(actors['leaf_1_1']) < 0.1

    old_parent = actors['spawner_0']
    orphans = tree.orphan('spawner_0')
    # leaf_0_0 is wedged in its loop; leaf_0_1 may notice and exit, or not
    assert actors['leaf_0_0'] in orphans
    for pid in orphans:
        ppid = proc_stat(pid)[1]
        assert ppid != old_parent
        assert ppid == 1 or ppid not in tree.pids()
    # the killed spawner is reaped by the root's trio loop
    assert _wait_until(lambda: proc_stat(old_parent) is None, 5)
    assert 'leaf_0_0' in tree.actors()  # orphans still tracked
    assert tree.popen.poll() is None

    pids = tree.tracked()
    assert tree.stop() == []
    assert_gone(pids + orphans)


# --- current runtime emulation --------------------------------------------------

def test_current_tree_shape(current_tree, bindspace):
    tree = current_tree(depth=2, breadth=2, hang='sleep', registry=True,
                        unarmed=['leaf_1_1'])
    actors = tree.actors()
    assert set(actors) == {'root', 'spawner_0', 'spawner_1', 'leaf_0_0',
                           'leaf_0_1', 'leaf_1_0', 'leaf_1_1'}
    assert argv_of(tree.root)[:2] == [sys.executable, str(CURRENT_SCRIPT)]
    listening = unix_listening_paths()
    sockets = [bindspace / f'root@{tree.root}.sock',
               bindspace / 'registry@1616.sock']

    for name, pid in actors.items():
        if name != 'root':
            title = f'_subactor[{name}@{pid}]'
            raw = read_cmdline(pid)
            assert raw.startswith(title.encode())
            assert raw[len(title):].strip(b'\0 ') == b''
            # padded to the original argv length
            path = tuple(name.split('_')[1:])
            parent = (tree.root if name.startswith('spawner')
                      else actors['spawner_' + path[0]])
            orig = [sys.executable, str(CURRENT_SCRIPT), '--depth', '2',
                    '--breadth', '2', '--hang', 'sleep',
                    '--child', '_'.join(path), '--parent-addr',
                    str(bindspace / (f'root@{parent}.sock' if parent == tree.root
                                     else f'spawner_{path[0]}@{parent}.sock')),
                    '--unarmed', 'leaf_1_1']
            assert len(raw) == sum(len(a.encode()) + 1 for a in orig)
            assert read_comm(pid) == title[:15]
            assert len(read_comm(pid).encode()) == 15
            assert proc_stat(pid)[1] == parent
            sockets.append(bindspace / f'{name}@{pid}.sock')
        assert handles_signal(pid, signal.SIGUSR1) == (name != 'leaf_1_1')

    for path in sockets:
        assert stat.S_ISSOCK(os.lstat(path).st_mode), path
        assert str(path) in listening, path
    assert sorted(bindspace.iterdir()) == sorted(sockets)

    # the SIGUSR1 handler appends a real trio task tree
    pid = actors['spawner_0']
    log = dump_log(pid)
    # through a pidfd, while it still is the root's child (not a reused pid)
    assert lh.kill_if(pid, signal.SIGUSR1, ppid=tree.root)
    deadline = time.monotonic() + 10
    while not (log.exists() and 'sleep_forever' in log.read_text()):
        assert time.monotonic() < deadline, 'no task tree dumped'
        time.sleep(0.05)
    text = log.read_text()
    assert 'serve_listeners' in text and 'supervise' in text
    # even a leaf wedged in time.sleep dumps (the handler runs in EINTR)
    leaf = actors['leaf_0_0']
    assert lh.kill_if(leaf, signal.SIGUSR1, ppid=actors['spawner_0'])
    leaf_log = dump_log(leaf)
    deadline = time.monotonic() + 10
    while not (leaf_log.exists() and 'hang' in leaf_log.read_text()):
        assert time.monotonic() < deadline, 'no task tree dumped by leaf'
        time.sleep(0.05)

    pids = tree.tracked()
    assert len(pids) == 7
    assert tree.stop() == []
    assert_gone(pids, sockets)
    assert list(bindspace.iterdir()) == []


def test_current_orphans_leave_stale_socket(current_tree, bindspace):
    tree = current_tree(depth=2, breadth=2, hang='sleep')
    actors = tree.actors()
    dead = actors['spawner_1']
    orphans = tree.orphan('spawner_1')
    assert sorted(orphans) == sorted([actors['leaf_1_0'], actors['leaf_1_1']])
    for pid in orphans:
        assert proc_stat(pid)[1] not in (dead, *tree.pids())
        assert read_cmdline(pid).startswith(b'_subactor[leaf_1_')
    stale = bindspace / f'spawner_1@{dead}.sock'
    assert stale.exists() and str(stale) not in unix_listening_paths()
    assert set(tree.actors()) == set(actors) - {'spawner_1'}

    pids = tree.tracked()
    assert tree.stop() == []
    assert_gone(pids, [stale])
    assert list(bindspace.iterdir()) == []


def test_current_wait_child_sync_and_runaway(current_tree):
    tree = current_tree(depth=2, breadth=1, hang='wait-child-sync')
    actors = tree.actors()
    # blocked in a wait other than the event loop
    assert wchan(actors['spawner_0']) == 'do_wait'
    assert wchan(actors['root']) == 'do_epoll_wait'
    # the child that never exits ignores SIGINT/SIGTERM
    ign = int(status_field(actors['leaf_0_0'], 'SigIgn'), 16)
    assert ign & (1 << (signal.SIGINT - 1)) and ign & (1 << (signal.SIGTERM - 1))

    hot = current_tree(depth=1, breadth=2, hang='runaway')
    hot_actors = hot.actors()
    assert burns_cpu(hot_actors['leaf_0'])
    assert cpu_seconds(hot_actors['leaf_1']) < 0.1

    pids = tree.tracked() + hot.tracked()
    assert tree.stop() == [] and hot.stop() == []
    assert_gone(pids)


# --- other hangs ----------------------------------------------------------------

def test_zombie_maker(zombie_maker):
    z = zombie_maker(count=2, title='zleaf')
    assert len(z.zombies) == 2
    for i, pid in enumerate(z.zombies):
        assert proc_stat(pid) == ('Z', z.root)
        assert read_cmdline(pid) == b''
        assert read_comm(pid) == '_subactor[zleaf'
    pids = z.tracked()
    assert set(z.zombies) <= set(pids)
    assert z.stop() == []
    assert_gone(pids)


def test_sleep_tree(sleep_tree):
    t = sleep_tree()
    pids = t.pids()
    assert len(pids) == 3
    assert argv_of(t.root) == ['sh', '-c', 'sleep 600 & sleep 600']
    assert sorted(read_comm(p) for p in pids) == ['sh', 'sleep', 'sleep']
    assert t.stop() == []
    assert_gone(pids)


def test_runaway_and_listener(runaway, listener, free_port):
    r = runaway(title='hot')
    assert read_comm(r.root) == f'_subactor[hot@{r.root}]'[:15]
    assert burns_cpu(r.root)

    lst = listener(port=free_port)
    assert tcp_listeners(lst.root) == {free_port}
    with socket.create_connection(('127.0.0.1', free_port), timeout=5):
        pass
    pids = r.tracked() + lst.tracked()
    assert r.stop() == [] and lst.stop() == []
    assert_gone(pids)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(('127.0.0.1', free_port), timeout=5)


def test_uds_sockets(uds_socket, bindspace):
    live = uds_socket('liveone', live=True, title=True)
    stale = uds_socket('ghost', live=False)
    reg = uds_socket('registry', filename='registry@1616.sock')
    assert live.path == bindspace / f'liveone@{live.pid}.sock'
    assert stale.path == bindspace / f'ghost@{stale.pid}.sock'
    assert reg.path == bindspace / 'registry@1616.sock'
    listening = unix_listening_paths()
    assert str(live.path) in listening and str(reg.path) in listening
    assert stat.S_ISSOCK(os.lstat(stale.path).st_mode)
    assert str(stale.path) not in listening
    assert proc_stat(stale.pid) is None
    assert read_comm(live.pid) == '_subactor[liveo'
    for s in (live, stale, reg):
        assert s.proc.stop() == []
    assert list(bindspace.iterdir()) == []


@pytest.mark.parametrize('hang', ['wait-child', 'none'])
def test_released_other_hangs(released_tree, hang):
    tree = released_tree(depth=2, breadth=1, hang=hang)
    assert set(tree.actors()) == {'root', 'spawner_0', 'leaf_0_0'}
    pids = tree.tracked()
    assert tree.stop() == []
    assert_gone(pids)


@pytest.mark.parametrize('hang', ['wait-child', 'none'])
def test_current_other_hangs(current_tree, bindspace, hang):
    tree = current_tree(depth=3, breadth=1, hang=hang)
    actors = tree.actors()
    assert set(actors) == {'root', 'spawner_0', 'spawner_0_0', 'leaf_0_0_0'}
    ign = int(status_field(actors['leaf_0_0_0'], 'SigIgn'), 16)
    assert bool(ign & (1 << (signal.SIGINT - 1))) == (hang == 'wait-child')
    assert len(list(bindspace.iterdir())) == 4
    pids = tree.tracked()
    assert tree.stop() == []
    assert_gone(pids)
    assert list(bindspace.iterdir()) == []
