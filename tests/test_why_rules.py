"""The `why` rules on recorded data: an all-idle healthy tree never gets a
verdict (a property, over random trees), and the verdicts that need a shape
hard to make on purpose (a cycle, a lost cancel, a boot hang) from the exact
records that show them."""
from __future__ import annotations

import time

from hypothesis import given, settings, strategies as st

from tractor_diag.diagnosis import diagnose
from tractor_diag.model import ActorInfo, Entry, Proc, Snapshot
from tractor_diag.render import Style
from tractor_diag.render.why import render_why
from tractor_diag.stackmodel import (
    Frame, KernelSide, ProcStacks, PyStack, StacksOptions, StacksReport, TaskFrame, TaskInfo,
    TaskTree, Thread,
)
from tractor_diag.whymodel import KernelSample

SITE = "/v/lib/python3.13/site-packages"
LOOP = [Frame("<module>", "/app/main.py", 9), Frame("run", f"{SITE}/trio/_core/_run.py", 2400),
        Frame("EpollIOManager.get_events", f"{SITE}/trio/_core/_io_epoll.py", 245)]
NOW = 1000.0


def _task(name: str, *frames: tuple[str, str, int], children: bool = False) -> TaskInfo:
    return TaskInfo(name=name, state="waiting", depth=1, has_children=children,
                    frames=[TaskFrame(filename=f, line=ln, name=n) for n, f, ln in frames])


SLEEP = ("sleep_forever", f"{SITE}/trio/_timeouts.py", 60)
PROC_WAIT = ("Process.wait", f"{SITE}/trio/_subprocess.py", 245)


def _build(parents: list[int], *, actor=True, tasks_for=None, wchan="do_epoll_wait",
           state="S", frames=None, sig_ignored=0x1000, vol=(10, 12), run=(1_000_000, 2_000_000)):
    """A snapshot of pids 100.. with ``parents[i]`` the index of pid i's
    parent (-1 for the root), each process idle in its trio loop unless told."""
    pids = [100 + i for i in range(len(parents))]
    entries: dict[int, Entry] = {}
    procs, before, after = [], {}, {}
    for i, pid in enumerate(pids):
        ppid = pids[parents[i]] if parents[i] >= 0 else 1
        info = ActorInfo(name=f"a{i}", generation="current") if (actor and i) else None
        p = Proc(pid=pid, ppid=ppid, uid=0, state=state, comm="python", cmdline=["python", "x"],
                 create_time=NOW - 100 + i, utime=0, stime=0, rss=0, num_threads=2,
                 wchan=wchan, actor=info)
        kids = [pids[j] for j in range(len(parents)) if parents[j] == i]
        entries[pid] = Entry(proc=p, bucket="live", state="idle", root=pids[0],
                             depth=0, children=kids)
        tree = TaskTree(status="no-handler")
        if tasks_for is not None:
            tree = TaskTree(status="collected", format="tractor-diag",
                            tasks=tasks_for(i, kids))
        procs.append(ProcStacks(
            pid=pid, ppid=ppid, title="x", actor=info.name if info else None, bucket="live",
            state="idle", depth=0, kernel=KernelSide(state=state, wchan=wchan),
            python=PyStack(status="ok", threads=[Thread(
                thread_id=1, os_thread_id=pid, name="MainThread", active=False,
                owns_gil=False, frames=list(frames(i) if frames else LOOP))]),
            tasks=tree))
        common = dict(pid=pid, create_time=p.create_time, state=state, wchan=wchan,
                      sig_ignored=sig_ignored, sig_blocked=0, tracer_pid=0)
        before[pid] = KernelSample(at=10.0, vol_ctx=vol[0], run_ns=run[0], wait_ns=0,
                                   last_ran=9.0, **common)
        after[pid] = KernelSample(at=10.3, vol_ctx=vol[1], run_ns=run[1], wait_ns=0, **common)
    snap = Snapshot(taken_at=time.time(), monotonic=10.0, roots=[pids[0]], entries=entries)
    report = StacksReport(taken_at=time.time(), roots=[pids[0]], procs=procs, py_spy="py-spy",
                          options=StacksOptions())
    return snap, report, before, after


@st.composite
def idle_trees(draw):
    n = draw(st.integers(1, 12))
    parents = [-1] + [draw(st.integers(0, i - 1)) for i in range(1, n)]
    armed = draw(st.booleans())
    # an idle actor: every task asleep, or a supervisor waiting on each child
    supervise = draw(st.booleans())

    def tasks_for(i, kids):
        out = [_task("<init>", children=True), _task("serve", SLEEP)]
        if supervise:
            out += [_task(f"supervise{k}", ("Actor.supervise", "/app/main.py", 40), PROC_WAIT)
                    for k in kids]
        return out

    vol0 = draw(st.integers(0, 1000))
    return dict(parents=parents, tasks_for=tasks_for if armed else None,
                vol=(vol0, vol0 + draw(st.integers(0, 50))),
                run=(5_000_000, 5_000_000 + draw(st.integers(0, 30_000_000))),
                sig_ignored=draw(st.sampled_from([0, 0x1000, 0x1001000])))


@settings(max_examples=200, deadline=None)
@given(idle_trees())
def test_an_all_idle_healthy_tree_gets_no_verdict(tree):
    snap, report, before, after = _build(**tree)
    diag = diagnose(snap, report, before, after, now=12.0)
    assert diag.verdicts == [] and diag.chains == []
    # waits it saw are only ever on the tree's own children, each with evidence
    for e in diag.edges:
        assert e.on in snap.entries[e.waiter].children and e.evidence
    assert render_why(diag, Style(False)).startswith("no verdict")


def test_ancestors_of_a_stuck_leaf_are_not_marked_without_evidence():
    """The leaf is stuck; its idle ancestors show no wait: no verdict, no edge."""
    snap, report, before, after = _build([-1, 0, 1])
    leaf = report.procs[2]
    leaf.python.threads[0].frames = [*LOOP[:2], Frame("_invoke", f"{SITE}/tractor/runtime/_rpc.py", 600),
                                     Frame("hang", "/app/app.py", 23)]
    for k in (before, after):
        k[102].wchan = "hrtimer_nanosleep"
    diag = diagnose(snap, report, before, after, now=50.0)
    (chain,) = diag.chains
    assert chain.pids == [102]
    assert chain.cause.text == ("a2 (102) is blocked in time.sleep at app.py:23 for at least 41 s "
                                "— a sync call that a cancel cannot interrupt")
    assert diag.edges == [] and {v.pid for v in diag.verdicts} == {102}


def test_a_cycle_is_reported_as_such():
    """a1 waits on its only child a2 over a channel, a2 (no children) on its
    parent: a cycle, named on a1, the member a0 waits through; one chain,
    a0 above the cycle, no bottom."""
    def tasks_for(i, kids):
        point = ("MsgStream.receive", f"{SITE}/tractor/_streaming.py", 200)
        if i == 0:
            return [_task("supervise", ("Actor.supervise", "/app/main.py", 40), PROC_WAIT)]
        return [_task("pump", ("pump", "/app/app.py", 5), point)]

    snap, report, before, after = _build([-1, 0, 1], tasks_for=tasks_for)
    diag = diagnose(snap, report, before, after, now=12.0)
    edges = {(e.waiter, e.on, e.relation, e.point) for e in diag.edges}
    assert (101, 102, "child", "MsgStream.receive") in edges
    assert (102, 101, "parent", "MsgStream.receive") in edges
    (v,) = diag.verdicts
    assert (v.kind, v.pid) == ("cycle", 101)
    assert v.text == ("a wait-for cycle: a1 (101) waits for child a2 (MsgStream.receive), "
                      "a2 (102) waits for parent a1 (MsgStream.receive); none of them can move "
                      "first")
    assert [e.text for e in v.evidence] == [
        "a1 waits for a2: task 'pump' in MsgStream.receive at tractor/_streaming.py:200",
        "a1 waits for a2: its only actor child",
        "a2 waits for a1: task 'pump' in MsgStream.receive at tractor/_streaming.py:200",
        "a2 waits for a1: it has no children: the other end is its parent"]
    (chain,) = diag.chains
    assert chain.cause is v and chain.pids == [100, 101, 102]
    from tractor_diag.render.why import chain_evidence, chain_sentence

    assert chain_sentence(diag, chain) == "python x waits for child a1 (trio Process.wait); " + v.text
    # the waits inside the cycle are listed once, as its evidence
    assert [ln for ln in chain_evidence(diag, chain) if " waits for " in ln.split(":")[0]] == [
        "python x waits for a1: tasks: task 'supervise' in Process.wait at trio/_subprocess.py:245",
        "python x waits for a1: tree: its only child",
    ]


def test_lost_cancel():
    """a0 is in soft_kill for its only child a1; a1 idles with no cancel task."""
    def tasks_for(i, kids):
        if i == 0:
            return [_task("reaper", ("soft_kill", f"{SITE}/tractor/spawn/_spawn.py", 380), PROC_WAIT)]
        return [_task("serve", SLEEP)]

    snap, report, before, after = _build([-1, 0], tasks_for=tasks_for)
    diag = diagnose(snap, report, before, after, now=12.0)
    (chain,) = diag.chains
    assert chain.cause.kind == "lost-cancel" and chain.cause.pid == 100
    assert chain.cause.text == ("python x (100) is cancelling a1 (soft_kill), but a1 idles in its "
                                "loop with no cancel in progress: the request was lost")


def test_boot_hang_on_a_child_that_died_at_boot():
    def tasks_for(i, kids):
        point = ("Server.wait_for_peer", f"{SITE}/tractor/ipc/_server.py", 830)
        return [_task("spawn", ("new_proc", f"{SITE}/tractor/spawn/_trio.py", 120), point)] if i == 0 else []

    snap, report, before, after = _build([-1, 0], tasks_for=tasks_for)
    child = snap.entries[101].proc
    child.state, child.exit_code = "Z", 1
    snap.entries[101].bucket = "zombie"
    diag = diagnose(snap, report, before, after, now=12.0)
    kinds = {(v.kind, v.pid) for v in diag.verdicts}
    assert ("boot-hang", 100) in kinds and ("zombie", 101) in kinds
    boot = next(v for v in diag.verdicts if v.kind == "boot-hang")
    assert boot.text == ("python x (100) waits for child a1 to connect (Server.wait_for_peer), "
                         "but a1 died at boot (exit status 1)")


def test_untrusted_names_are_escaped_in_text():
    snap, report, before, after = _build([-1, 0])
    snap.entries[101].proc.actor = ActorInfo(name="evil\x1b]0;pwned\x07", generation="current")
    snap.entries[101].proc.state = "T"
    for k in (before, after):
        k[101].state = "T"
    diag = diagnose(snap, report, before, after, now=12.0)
    text = render_why(diag, Style(False))
    assert "\x1b" not in text and "\x07" not in text
    assert "evil\\x1b]0;pwned\\x07 (101) is stopped" in text


def _graph(pids, *, peers=None, listeners=None, edges=None, logical=None):
    from tractor_diag.sockmodel import IpcEdge, IpcGraph, Listener, Peer

    return IpcGraph(
        taken_at=0.0, netns=1, pids=list(pids),
        listeners={pid: [Listener(kind=k, addr=a, inode=i, port=port) for k, a, i, port in ls]
                   for pid, ls in (listeners or {}).items()},
        peers={pid: [Peer(peer_pid=o, kind="uds", addr=f"/run/t/{o}.sock", role="client",
                          inode=1, peer_inode=2) for o in others]
               for pid, others in (peers or {}).items()},
        edges=[IpcEdge(src=s, dst=d, kind="parent-channel", addr="x") for s, d in (edges or [])],
        logical_parent=dict(logical or {}), registry=["1616", "registry@1616.sock"])


def test_a_peer_wait_is_joined_through_the_only_channel():
    """a0 has two children and waits in Context.wait_for_result: the IPC graph
    says only a2 is connected, so a2 is the peer."""
    def tasks_for(i, kids):
        point = ("Context.wait_for_result", f"{SITE}/tractor/_context.py", 1307)
        return [_task("run", ("run", "/app/app.py", 9), point)] if i == 0 else []

    snap, report, before, after = _build([-1, 0, 0], tasks_for=tasks_for)
    ipc = _graph([100, 101, 102], peers={100: [102], 102: [100]}, edges=[(102, 100)])
    diag = diagnose(snap, report, before, after, ipc=ipc, now=12.0)
    (e,) = diag.edges
    assert (e.waiter, e.on, e.relation, e.point) == (100, 102, "child", "Context.wait_for_result")
    assert any(ev.source == "ipc" for ev in e.evidence)
    # without the graph nothing says which child: no edge, a note instead
    diag = diagnose(snap, report, before, after, now=12.0)
    assert diag.edges == [] and any("which peer is not known" in n for n in diag.notes)


def test_boot_hang_on_a_live_child_that_never_connected():
    def tasks_for(i, kids):
        point = ("Server.wait_for_peer", f"{SITE}/tractor/ipc/_server.py", 830)
        return [_task("spawn", ("new_proc", f"{SITE}/tractor/spawn/_trio.py", 120), point)] if i == 0 else []

    snap, report, before, after = _build([-1, 0, 0], tasks_for=tasks_for)
    # a1 connected back, a2 did not
    ipc = _graph([100, 101, 102], peers={101: [100], 100: [101]}, edges=[(101, 100)])
    diag = diagnose(snap, report, before, after, ipc=ipc, now=12.0)
    (v,) = [v for v in diag.verdicts if v.kind == "boot-hang"]
    assert v.pid == 100 and v.text.startswith(
        "python x (100) waits for child a2 to connect (Server.wait_for_peer); a2 started ")
    assert v.text.endswith(" s ago and holds no channel to it")
    assert [(e.waiter, e.on) for e in diag.edges] == [(100, 102)]


def test_an_orphan_holding_the_registry_port():
    snap, report, before, after = _build([-1, 0, -1])
    # pid 102: a registrar left from an earlier run, adopted by init
    snap.entries[102].bucket = "orphan"
    snap.entries[102].note = "re-parented to init"
    ipc = _graph([100, 101, 102], listeners={102: [("tcp", "127.0.0.1:1616", 7, 1616)],
                                             100: [("tcp", "127.0.0.1:40000", 8, 40000)]})
    diag = diagnose(snap, report, before, after, ipc=ipc, now=12.0)
    (v,) = [v for v in diag.verdicts if v.kind == "port-holder"]
    assert v.pid == 102 and v.text == (
        "a2 (102) (an orphan) holds the registry address 127.0.0.1:1616: a new root that wants "
        "to be the registrar there cannot bind it")
    assert diag.chains == []  # a property of the box, listed apart
    assert "[port-holder] a2 (102)" in render_why(diag, Style(False))


def test_forkserver_children_are_their_logical_parents_children():
    """mp_forkserver: actors are the sidecar's children; the root waits on
    them (soft_kill), not on the sidecar."""
    def tasks_for(i, kids):
        if i == 0:
            return [_task("reaper", ("soft_kill", f"{SITE}/tractor/spawn/_spawn.py", 380))]
        return []

    snap, report, before, after = _build([-1, 0, 1], tasks_for=tasks_for)
    ipc = _graph([100, 101, 102], peers={102: [100], 100: [102]}, edges=[(102, 100)],
                 logical={102: 100})
    diag = diagnose(snap, report, before, after, ipc=ipc, now=12.0)
    assert [(e.waiter, e.on, e.point) for e in diag.edges] == [(100, 102, "soft_kill")]


def test_a_trio_loop_wedged_in_process_join_polling():
    """multiprocessing's Process.join(timeout) sleeps in poll(), the wchan of
    an idle loop: the stack says the loop is wedged, and on which child."""
    join = [*LOOP[:2], Frame("main", "/app/app.py", 30),
            Frame("BaseProcess.join", "/usr/lib/python3.11/multiprocessing/process.py", 149),
            Frame("Popen.wait", "/usr/lib/python3.11/multiprocessing/popen_fork.py", 40),
            Frame("wait", "/usr/lib/python3.11/multiprocessing/connection.py", 947),
            Frame("PollSelector.select", "/usr/lib/python3.11/selectors.py", 415)]
    snap, report, before, after = _build([-1, 0], frames=lambda i: join if i == 0 else LOOP,
                                         wchan="do_sys_poll")
    diag = diagnose(snap, report, before, after, now=12.0)
    (v,) = diag.verdicts
    assert v.kind == "sync-blocked" and v.pid == 100
    assert v.text.startswith("python x (100) is blocked in multiprocessing Process.join at app.py:30")
    assert [(e.waiter, e.on, e.point) for e in diag.edges] == [(100, 101, "multiprocessing Process.join")]


def _forkserver_tree(with_fork: bool):
    """a0 waits for a child to connect; its only child a1 is the
    mp_forkserver fork server (with_fork: which has a fork of its own,
    booting, that no channel ties to anyone yet)."""
    def tasks_for(i, kids):
        point = ("Server.wait_for_peer", f"{SITE}/tractor/ipc/_server.py", 848)
        return [_task("new_proc", ("new_proc", f"{SITE}/tractor/spawn/_spawn.py", 575), point)
                ] if i == 0 else []

    snap, report, before, after = _build([-1, 0, 1] if with_fork else [-1, 0], tasks_for=tasks_for)
    snap.entries[101].proc.actor = ActorInfo(name="", generation="current", role="forkserver",
                                             how="mp-forkserver")
    return diagnose(snap, report, before, after, now=12.0)


def test_boot_hang_on_a_child_the_fork_server_reaped():
    diag = _forkserver_tree(with_fork=False)
    assert diag.edges == []  # the fork server is never what it waits for
    (chain,) = diag.chains
    assert chain.pids == [100] and chain.cause.kind == "boot-hang"
    assert chain.cause.text == (
        "python x (100) waits for a child to connect (Server.wait_for_peer), but it has no child "
        "left: the child died at boot and its fork server (101) reaped it")


def test_a_fork_server_with_a_booting_fork_is_not_judged():
    diag = _forkserver_tree(with_fork=True)
    assert diag.verdicts == [] and diag.chains == [] and diag.edges == []


def test_a_wait_with_a_channel_to_a_sibling_names_no_peer():
    """a1 and a2 (siblings) each wait in Context.wait_for_result and each
    holds a channel to its parent and one to the other: the wait may be on
    either, so no edge (not the parent "by its only channel to a parent")."""
    def tasks_for(i, kids):
        point = ("Context.wait_for_result", f"{SITE}/tractor/_context.py", 1368)
        return [_task("ping", ("ping", "/app/app.py", 9), point)] if i else []

    snap, report, before, after = _build([-1, 0, 0], tasks_for=tasks_for)
    ipc = _graph([100, 101, 102], peers={100: [101, 102], 101: [100, 102], 102: [100, 101]},
                 edges=[(101, 100), (102, 100)])
    diag = diagnose(snap, report, before, after, ipc=ipc, now=12.0)
    assert diag.edges == [] and diag.verdicts == []
    assert ("a1 (101) waits in Context.wait_for_result; which peer is not known (it holds "
            "channels to python x (100), a2 (102))") in diag.notes


def test_the_peer_a_task_dump_names_is_the_one_waited_for():
    """a1 and a2 (siblings) wait on each other in Context.wait_for_result;
    the dump's ``peer:`` lines name the other's pid, and the channels they
    hold agree: one cycle, not two waits on the parent."""
    from tractor_diag.tasks import parse_task_lines

    def tasks_for(i, kids):
        if not i:
            return []
        body = ("trio run: active on thread 'MainThread' tasks=1 nurseries=0\n"
                "task 'ping' [waiting] id=0x1\n"
                "  at /app/app.py:9 in ping | await ctx.wait_for_result()\n"
                f"  at {SITE}/tractor/_context.py:1368 in Context.wait_for_result | x\n"
                f"  peer: pid={103 - i}\n")
        (task,) = parse_task_lines(body)
        return [task]

    snap, report, before, after = _build([-1, 0, 0], tasks_for=tasks_for)
    assert report.procs[1].tasks.tasks[0].frames[-1].peer_pid == 102
    ipc = _graph([100, 101, 102], peers={100: [101, 102], 101: [100, 102], 102: [100, 101]},
                 edges=[(101, 100), (102, 100)])
    diag = diagnose(snap, report, before, after, ipc=ipc, now=12.0)
    assert sorted((e.waiter, e.on, e.relation) for e in diag.edges) == [
        (101, 102, "peer"), (102, 101, "peer")]
    (chain,) = diag.chains
    assert chain.pids == [101, 102] and chain.cause.kind == "cycle"
    # a pid its channels do not lead to (another PID namespace's) is no peer
    ipc = _graph([100, 101, 102], peers={100: [101, 102], 101: [100], 102: [100]},
                 edges=[(101, 100), (102, 100)])
    diag = diagnose(snap, report, before, after, ipc=ipc, now=12.0)
    assert not any(e.relation == "peer" for e in diag.edges)


def test_a_child_wait_beside_a_peer_wait():
    """a0 waits for its child in trio's Process.wait in one task and for a
    context's result in another: both edges lead to a1. Before, the child
    wait's pid lookup overwrote the map of the peers task dumps name, and
    the peer wait raised TypeError (why crashed)."""
    def tasks_for(i, kids):
        point = ("Context.wait_for_result", f"{SITE}/tractor/_context.py", 1307)
        if i:
            return []
        return [_task("spawn", ("spawn", "/app/app.py", 5), PROC_WAIT),
                _task("run", ("run", "/app/app.py", 9), point)]

    snap, report, before, after = _build([-1, 0], tasks_for=tasks_for)
    diag = diagnose(snap, report, before, after, now=12.0)
    (e,) = diag.edges
    assert (e.waiter, e.on) == (100, 101)
    assert {ev.text.split(" in ")[0] for ev in e.evidence} >= {"task 'spawn'", "task 'run'"}


def test_a_sync_call_that_ran_a_moment_before_a_long_capture_is_looked_at_again():
    """The rules ask for a second look at a process in a sync call that ran
    less than a second before the capture began; the look must take in
    every such process even when the capture itself outlasted that second
    (it was measured from the capture's end: the process was left out, and
    the rules, finding no second look, judged it moving: no verdict)."""
    import subprocess

    from tractor_diag import kstate, procfs
    from tractor_diag.diagnosis import _look_again

    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        time.sleep(0.2)
        proc = procfs.read_proc(sleeper.pid, detail=False)
        first = kstate.sample(sleeper.pid, proc.create_time, last_ran=True)
        assert first is not None and first.wchan
        began = time.monotonic() - 0.7  # a 0.7 s capture
        first.last_ran = began - 0.5  # ran half a second before it began
        later = _look_again([proc], {proc.pid: first}, {proc.pid: first}, None, began)
        assert later is not None and proc.pid in later
    finally:
        sleeper.kill()
        sleeper.wait()
