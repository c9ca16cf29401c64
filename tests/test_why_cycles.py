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
    tasks = sorted(t.rsplit(":", 1)[0] for s, t in ev if s == "tasks")
    assert tasks == sorted([f"{rname} waits for pinger: task '__main__.main' in {point} at {where}",
                            f"pinger waits for {rname}: task 'ping' in {point} at {where}"])
    assert ("ipc", f"{rname} waits for pinger: its only channel to a child leads to pinger") in ev
    assert ("ipc", f"pinger waits for {rname}: its only channel to a parent leads to {rname}") in ev
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

