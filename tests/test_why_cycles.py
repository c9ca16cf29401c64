"""`why` on a real wait-for cycle across processes, on the released runtime
(tractor 0.1.0a5, Python 3.11) and today's (tractor main, 3.13): the root
waits for its child's context result while the child, through the
registry, waits for the result of a context back on the root, which
answers only once the first one returns. The verdict is the cycle itself,
every member and wait named; a healthy tree beside it gets none."""
from __future__ import annotations

from pathlib import Path

import pytest

from test_why import verdict_pids, why, why_json
from trees.harness import free_port as _free_port, runtime_python

pytestmark = pytest.mark.timeout(180)

SCRIPT = str(Path(__file__).parent / "trees" / "why_cycle_tree.py")


@pytest.fixture(params=[pytest.param("released", marks=pytest.mark.released), "current"])
def runtime(request):
    """(python, the name its context waits go by, the file that defines it)."""
    if request.param == "released":
        return (str(request.getfixturevalue("tractor_python")), "Context.result",
                "tractor/_streaming.py")
    py = runtime_python("main")
    if py is None:
        pytest.skip("no current tractor runtime venv: set TRACTOR_DIAG_TRACTOR_MAIN_VENV")
    return str(py), "Context.wait_for_result", "tractor/_context.py"


def _start(spawn, py: str, mode: str) -> tuple[int, int]:
    proc = spawn([py, SCRIPT, str(_free_port()), mode, "--taskdump"], timeout=60,
                 label=f"cycle-{mode}")
    _, root, child = proc.ready_line.split()
    assert int(root) == proc.root
    return proc, int(child)


def test_a_cycle_on_a_real_tree_is_the_cause(spawn, runtime):
    py, point, where = runtime
    sick, pinger = _start(spawn, py, "cycle")
    healthy, idler = _start(spawn, py, "none")
    root = sick.root
    diag = why_json(root, healthy.root)

    (chain,) = diag.chains
    cause = chain.cause
    assert (cause.kind, cause.pid) == ("cycle", root)
    # the members, the one the tree enters it by first; no bottom
    assert chain.pids == [root, pinger]
    rname = diag.names[root]
    assert diag.names[pinger] == "pinger"
    assert cause.text == (
        f"a wait-for cycle: {rname} ({root}) waits for child pinger ({point}), "
        f"pinger ({pinger}) waits for parent {rname} ({point}); none of them can move first")
    # the evidence: both waits, each from its task tree and the channel it
    # is joined by
    ev = [(e.source, e.text) for e in cause.evidence]
    tasks = sorted(t.rsplit(":", 1)[0] for s, t in ev if s == "tasks" and "task '" in t)
    assert tasks == sorted([f"{rname} waits for pinger: task '__main__.main' in {point} at {where}",
                            f"pinger waits for {rname}: task 'ping' in {point} at {where}"])
    joined = sorted(e for e in ev if "task '" not in e[1])
    if point == "Context.result":
        # released: the dump names addresses; the channel pinger opened is
        # to the root's listener, the root's to pinger is pinger's own
        # connection (its end's address)
        port = sick.argv[2]
        assert joined[0] == ("ipc", f"pinger waits for {rname}: its channel leads to "
                                    f"127.0.0.1:{port}, where {rname} listens")
        assert joined[1][1].startswith(f"{rname} waits for pinger: its channel's other end, "
                                       "127.0.0.1:")
        assert joined[1][1].endswith(", is pinger's connection to it") and len(joined) == 2
    else:
        assert joined == [
            ("ipc", f"pinger waits for {rname}: it holds a channel to {rname}"),
            ("ipc", f"{rname} waits for pinger: it holds a channel to pinger"),
            ("tasks", f"pinger waits for {rname}: its channel's peer is pid {root} (the task dump "
                      "names it)"),
            ("tasks", f"{rname} waits for pinger: its channel's peer is pid {pinger} (the task "
                      "dump names it)")]
    assert cause.hints == [f"tractor-diag stacks {root} {pinger}",
                           f"cancelling any one member breaks it, e.g. kill -INT {pinger}"]
    # only the cycle; the healthy root waits on its idle child, with no verdict
    assert verdict_pids(diag) == {root}
    assert any(e.waiter == healthy.root and e.on == idler for e in diag.edges)
    assert not verdict_pids(diag) & set(healthy.pids())

    rc, out, err = why(str(root))
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0] == f"1. [cycle] {cause.text}"
    # the sentence names it all: no chain line repeating it
    assert lines[1] == "   evidence:"



def test_a_cycle_between_siblings_found_through_the_registry(spawn, runtime):
    """alpha waits on a context it opened on its sibling beta, beta on one
    it opened back on alpha: each holds channels to the root and to the
    other, and the task dump names the peer of each wait (today's runtime:
    its pid; the released one: the listener's address, joined by the IPC
    graph: a listener's, or the other end of a connection it accepted). The
    root waits on alpha, joined the same way: one chain, the root above
    the cycle."""
    py, point, where = runtime
    proc = spawn([py, SCRIPT, str(_free_port()), "siblings", "--taskdump"], timeout=60,
                 label="cycle-siblings")
    root, alpha, beta = map(int, proc.ready_line.split()[1:])
    healthy, _ = _start(spawn, py, "none")
    diag = why_json(root, healthy.root)

    (chain,) = diag.chains
    cause = chain.cause
    assert (cause.kind, cause.pid) == ("cycle", alpha)
    assert cause.text == (
        f"a wait-for cycle: alpha ({alpha}) waits for peer beta ({point}), "
        f"beta ({beta}) waits for peer alpha ({point}); none of them can move first")
    tasks = sorted(e.text.rsplit(":", 1)[0] for e in cause.evidence if e.text.startswith(
        ("alpha waits for beta: task", "beta waits for alpha: task")))
    assert tasks == [f"alpha waits for beta: task 'ping' in {point} at {where}",
                     f"beta waits for alpha: task 'relay' in {point} at {where}"]
    named = sorted(e.text for e in cause.evidence if "task '" not in e.text)
    if point == "Context.result":  # released: by the listener's address
        assert [t.split(": its channel leads to ")[0] for t in named] == [
            "alpha waits for beta", "beta waits for alpha"]
        assert all(t.endswith(("where beta listens", "where alpha listens")) for t in named)
    else:
        assert named == ["alpha waits for beta: it holds a channel to beta",
                         f"alpha waits for beta: its channel's peer is pid {beta} (the task dump "
                         "names it)",
                         "beta waits for alpha: it holds a channel to alpha",
                         f"beta waits for alpha: its channel's peer is pid {alpha} (the task dump "
                         "names it)"]
    assert chain.pids == [root, alpha, beta]
    (e,) = [e for e in diag.edges if e.waiter == root]
    assert (e.on, e.relation, e.point) == (alpha, "child", point)
    # the root is no member, and no edge claims a wait on it
    assert not [e for e in diag.edges if e.on == root]
    assert verdict_pids(diag) == {alpha}
    assert not verdict_pids(diag) & set(healthy.pids())


def test_the_dashboard_draws_every_wait_of_a_cycle():
    """The chain of a cycle is [waiters above..., its members]: the last
    member's wait on the first is drawn too."""
    from tractor_diag.tui.waits import Judged, marks_of

    chain = Judged(pids=(1, 2, 3), names=("root", "alpha", "beta"), born=(0.0,) * 3,
                   dead=(False,) * 3, cause=2, kinds=((2, "cycle"),), at=0.0, tree=1)
    marks = marks_of([chain])
    assert [m.waits_on for m in (marks[1], marks[2], marks[3])] == [
        ((2, "alpha"),), ((3, "beta"),), ((2, "alpha"),)]
