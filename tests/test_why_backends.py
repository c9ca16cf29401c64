"""`why`'s boot hang and lost cancel on today's tractor with the spawn
backends other than trio (``mp_spawn``, ``mp_forkserver``:
tractor main; ``main_thread_forkserver``: its branch), each on a real tree
with a healthy one beside it that gets no verdict.

What each backend can produce:

- lost cancel: all three (the child's ``Actor.cancel`` takes the request
  and never acts on it; the root waits in ``Portal.cancel_actor``).
- a child that dies at boot: ``mp_spawn`` leaves it a zombie of the root,
  which waits in ``Server.wait_for_peer`` forever; under ``mp_forkserver``
  the fork server forks it and reaps it at once, so the root waits for a
  child that left no trace at all. ``main_thread_forkserver`` cannot hang
  on it: the runtime races ``wait_for_peer`` against the child's death and
  fails the spawn (``ActorFailure``), which the test below asserts. What
  hangs it at boot is a child that stays alive and never connects (as it
  hangs the other two).
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from test_why import verdict_pids, why_json
from trees.harness import (BACKEND_RUNTIME, TreeError, free_port, proc_stat, read_cmdline,
                           runtime_python)

pytestmark = pytest.mark.timeout(180)

SCRIPT = str(Path(__file__).parent / "trees" / "why_runtime_tree.py")


def _python(backend: str) -> str:
    py = runtime_python(BACKEND_RUNTIME[backend])
    if py is None:
        pytest.skip(f"no tractor runtime venv for {backend}: set "
                    "TRACTOR_DIAG_TRACTOR_MAIN_VENV / TRACTOR_DIAG_TRACTOR_MTF_VENV")
    return str(py)


def _tree(spawn, backend: str, hang: str, ready: str | None = "READY", tries: int = 1):
    for left in range(tries, 0, -1):
        try:
            return spawn([_python(backend), SCRIPT, str(free_port()), backend, hang, "--taskdump"],
                         ready=ready, timeout=60, label=f"{backend}-{hang}")
        except TreeError:
            if left == 1:
                raise


def _healthy(spawn, backend: str):
    return _tree(spawn, backend, "none")


@pytest.mark.parametrize("backend", ["mp_spawn", "mp_forkserver", "main_thread_forkserver"])
def test_lost_cancel(spawn, backend):
    sick = _tree(spawn, backend, "lose-cancel")
    healthy = _healthy(spawn, backend)
    root, deaf = sick.root, int(sick.ready_line.split()[2])
    diag = why_json(root, healthy.root)
    (chain,) = diag.chains
    # the pid tractor reports: under mp_forkserver a child of the fork
    # server, joined to the root by its channel, not the fork server
    assert chain.pids == [root, deaf]
    assert (chain.cause.kind, chain.cause.pid) == ("lost-cancel", root)
    rname, dname = diag.names[root], diag.names[deaf]
    if backend == "main_thread_forkserver":
        assert dname == "deaf"
    assert chain.cause.text == (
        f"{rname} ({root}) is cancelling {dname} (Portal.cancel_actor), but {dname} idles in its "
        "loop with no cancel in progress: the request was lost")
    assert [(e.source, e.text) for e in chain.cause.evidence][-2:] == [
        ("tasks", f"{dname}: no task cancelling or in a cancel handler"),
        ("kernel", f"{dname} wchan do_epoll_wait")]
    # the wait, and what joins it to deaf: its channels, and where the task
    # dump names the peer (main_thread_forkserver's children carry their pid)
    assert {e.source for e in chain.cause.evidence[:-2]} == {"tasks", "ipc"}
    assert verdict_pids(diag) == {root}
    assert not verdict_pids(diag) & set(healthy.pids())


def test_boot_hang_mp_spawn_child_died_at_boot(spawn):
    sick = _tree(spawn, "mp_spawn", "boot")
    healthy = _healthy(spawn, "mp_spawn")
    root = sick.root
    (zombie,) = [p for p in sick.pids() if (st := proc_stat(p)) and st[0] == "Z"]
    diag = why_json(root, healthy.root)
    (chain,) = diag.chains
    assert chain.pids == [root, zombie]
    assert (chain.cause.kind, chain.cause.pid) == ("boot-hang", root)
    rname, zname = diag.names[root], diag.names[zombie]
    assert chain.cause.text == (
        f"{rname} ({root}) waits for child {zname} to connect (Server.wait_for_peer), but "
        f"{zname} died at boot (exit status 3)")
    # the root's other child, multiprocessing's resource tracker, is no suspect
    assert [(e.waiter, e.on) for e in diag.edges if e.waiter == root] == [(root, zombie)]
    assert verdict_pids(diag) == {root, zombie}
    assert not verdict_pids(diag) & set(healthy.pids())


def test_boot_hang_mp_forkserver_child_reaped_by_the_fork_server(spawn):
    """The fork server reaps the dead child at once: the root waits for a
    child that is nowhere. Before, the fork server itself (the root's only
    child but the resource tracker) was blamed for never connecting."""
    # Now and then the runtime itself notices the death and, cancelling the
    # nursery, fails with a KeyError for the peer that never connected
    # (ActorNursery.cancel, _peer_connected[uid]): no hang to explain, the
    # tree exits before READY. That is the runtime's race: start it again.
    sick = _tree(spawn, "mp_forkserver", "boot", tries=3)
    healthy = _healthy(spawn, "mp_forkserver")
    root = sick.root
    (server,) = [p for p in sick.pids()
                 if b"_forkserver_override import main" in (read_cmdline(p) or b"")]
    diag = why_json(root, healthy.root)
    (chain,) = diag.chains
    assert chain.pids == [root]
    assert (chain.cause.kind, chain.cause.pid) == ("boot-hang", root)
    rname = diag.names[root]
    assert chain.cause.text == (
        f"{rname} ({root}) waits for a child to connect (Server.wait_for_peer), but it has no "
        f"child left: the child died at boot and its fork server ({server}) reaped it")
    assert [(e.source, e.text) for e in chain.cause.evidence][1:] == [
        ("tree", f"no child of {rname}, alive or a zombie"),
        ("tree", f"the fork server {server} has no child: it reaps its forks when they exit")]
    assert chain.cause.evidence[0].source == "tasks"
    assert not [e for e in diag.edges if e.waiter == root]
    assert verdict_pids(diag) == {root}
    assert not verdict_pids(diag) & set(healthy.pids())


def test_main_thread_forkserver_child_dying_at_boot_fails_the_spawn(spawn):
    """No hang to explain: the runtime sees the death and says so."""
    sick = _tree(spawn, "main_thread_forkserver", "boot", ready=None)
    try:
        rc = sick.popen.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("main_thread_forkserver hung on a child that died at boot")
    assert rc != 0
    assert "died during boot (rc=3) before completing parent-handshake" in sick.stderr_text()


@pytest.mark.parametrize("backend", ["mp_spawn", "mp_forkserver", "main_thread_forkserver"])
def test_boot_hang_child_never_connects(spawn, backend):
    """The child stays alive at boot and never connects. Under
    mp_forkserver it is the fork server's child, with the fork server's
    command line: the wait is on it, not on the fork server."""
    sick = _tree(spawn, backend, "stall")
    healthy = _healthy(spawn, backend)
    root = sick.root

    def helper(p: int) -> bool:
        line = read_cmdline(p) or b""
        return b"multiprocessing.resource_tracker" in line or (
            b"_forkserver_override import main" in line and proc_stat(p)[1] == root)

    (child,) = [p for p in sick.pids() if p != root and not helper(p)]
    diag = why_json(root, healthy.root)
    (chain,) = diag.chains
    assert chain.pids == [root, child]
    assert (chain.cause.kind, chain.cause.pid) == ("boot-hang", root)
    point = ("wait_for_peer_or_proc_death" if backend == "main_thread_forkserver"
             else "Server.wait_for_peer")
    rname, cname = diag.names[root], diag.names[child]
    assert chain.cause.text.startswith(
        f"{rname} ({root}) waits for child {cname} to connect ({point}); {cname} started ")
    assert chain.cause.text.endswith(" s ago and holds no channel to it")
    assert [e.source for e in chain.cause.evidence] == ["tasks", "ipc"]
    if backend == "mp_forkserver":
        # the fork server ignores SIGINT; its fork resets that only once it
        # runs its target, which this one never reaches: true, and said
        assert [v.kind for v in diag.verdicts_of(child)] == ["ignores-signals"]
        assert verdict_pids(diag) == {root, child}
    else:
        assert verdict_pids(diag) == {root}
    assert not verdict_pids(diag) & set(healthy.pids())
