"""The dashboard's tree pane with the real Textual app under ``run_test()``
on real trees: the actors-only view drawn by the actor tree (logical
parents), and the waits-on chains the ``w`` key draws."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from rich.style import Style

from tractor_diag.tui.app import DashApp

from _dash_helpers import ns_scenario, run, until, wait_for_pids

pytestmark = pytest.mark.timeout(240)

SIZE = (200, 48)
FAST = 0.3


def parent_key(app, pid):
    node = app.proc_tree.node_for(pid)
    assert node is not None, f"no node for {pid}"
    return node.parent.data


def test_actors_only_nests_by_the_actor_that_spawned_it_on_a_fork_server(
        runtime_trees, monkeypatch):
    """mp_forkserver on today's tractor: every actor is an OS child of the
    root's sidecar. The actors-only view is the actor tree ``ptree --actors``
    draws: the sidecar (not an actor) gone, each actor under its logical
    parent (`ActorInfo.logical_parent`): the spawner under the root, the
    leaf under the spawner that asked the sidecar for it."""
    tree = runtime_trees.start("mp_forkserver", "tcp", depth=2, breadth=1, hang="none")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tree.xdg))
    a = tree.actors
    root, spawner, leaf = a["root"], a["spawner_0"], a["leaf_0_0"]

    async def body():
        app = DashApp([str(root)], interval=FAST)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for_pids(app, pilot, [root, spawner, leaf])
            snap = app.snapshot
            sidecar = snap.entries[spawner].proc.ppid
            assert snap.entries[sidecar].proc.actor.role == "forkserver"
            # the OS tree: both actors under the sidecar
            assert parent_key(app, spawner) == sidecar
            assert parent_key(app, leaf) == sidecar
            await pilot.press("a")
            await until(lambda: sidecar not in app.proc_tree.keys, 10, pilot=pilot,
                        what="the sidecar to go")
            assert parent_key(app, spawner) == root
            assert parent_key(app, leaf) == snap.entries[leaf].actor_parent == spawner
            assert app.proc_tree.border_title == "processes (actors only)"
            # ticks keep the actor tree
            n = app.samples_shown
            await until(lambda: app.samples_shown >= n + 2, 10, pilot=pilot)
            assert parent_key(app, spawner) == root and sidecar not in app.proc_tree.keys
            await pilot.press("a")
            await until(lambda: sidecar in app.proc_tree.keys, 10, pilot=pilot,
                        what="the sidecar back")
            assert parent_key(app, leaf) == sidecar

    run(body(), timeout=120)


def tree_lines(app) -> list[str]:
    """What the tree pane shows, line by line, as rendered."""
    tree = app.proc_tree
    return ["".join(seg.text for seg in tree.render_line(y)) for y in range(tree.size.height)]


def line_of(app, pid: int) -> str:
    return next(ln for ln in tree_lines(app) if f" {pid} " in ln)


def test_key_w_draws_the_waits_on_chain_and_drops_it_when_a_process_dies(current_tree):
    """root waits on spawner_0, which is wedged in a sync os.waitpid on
    leaf_0_0 (which ignores SIGINT and SIGTERM): after ``w`` the chain is
    drawn on those three rows, lit when one of them is selected; the
    healthy spawner_1 and its leaves get nothing (the root waits on it too,
    but nothing is stuck below it). Once the leaf dies the chain is stale
    and every mark goes."""
    tree = current_tree(depth=2, breadth=2, hang="wait-child-sync")
    a = tree.actors()
    root, spawner, leaf = tree.root, a["spawner_0"], a["leaf_0_0"]
    healthy = [a["spawner_1"], a["leaf_1_0"], a["leaf_1_1"], a["leaf_0_1"]]

    async def body():
        app = DashApp([str(root)], interval=FAST)
        async with app.run_test(size=SIZE) as pilot:
            ptree = app.proc_tree
            await wait_for_pids(app, pilot, [root, spawner, leaf, *healthy])
            assert not ptree.marks
            ptree.select_pid(root)
            await pilot.press("w")
            await until(lambda: spawner in ptree.marks, 90, pilot=pilot, what="the marks")
            await pilot.pause(0.2)
            assert ptree.mark_of(root).plain == f"  ⇢ waits on spawner_0[{spawner}]"
            assert ptree.mark_of(spawner).plain == (
                f"  ⇢ waits on leaf_0_0[{leaf}]  ⊥ sync-blocked")
            assert ptree.mark_of(leaf).plain == "  ⊥ ignores-signals"
            for pid in healthy:
                assert ptree.mark_of(pid) is None, pid
            # drawn on the rows after the pid (the labels stay as they were)
            assert f"spawner_0  {spawner}  ⇢ waits on leaf_0_0[{leaf}]  ⊥ sync-blocked  " \
                "blocked" in line_of(app, spawner)
            assert "⇢" not in ptree.node_for(spawner).label.plain
            assert "⇢" not in line_of(app, a["spawner_1"]) and "⊥" not in line_of(app, a["spawner_1"])

            def lit(pid: int) -> bool:
                return any("reverse" in str(span.style) for span in ptree.mark_of(pid).spans)

            # the root is selected and in the chain: the whole chain is lit
            assert lit(root) and lit(spawner) and lit(leaf)
            ptree.select_pid(a["spawner_1"])
            await pilot.pause(0.1)
            assert not (lit(root) or lit(spawner) or lit(leaf))
            ptree.select_pid(leaf)
            await pilot.pause(0.1)
            assert lit(root) and lit(spawner) and lit(leaf)
            # the detail pane of a process in the chain has the verdicts that drew it
            ptree.select_pid(spawner)
            await until(lambda: f"of the tree at {root}" in app.detail.text, 5, pilot=pilot,
                        what="the verdicts in the spawner's detail pane")
            assert f"[sync-blocked] spawner_0 ({spawner}) is blocked in os.waitpid" in app.detail.text

            # the leaf dies (SIGKILL: it ignores the others): the chain goes stale
            tree.kill_pid(leaf, signal.SIGKILL)
            await until(lambda: not ptree.marks, 15, pilot=pilot, what="the marks to go")
            assert f"why: the chain down to spawner_0 ({spawner}) no longer holds: {leaf} exited" \
                in app.events_pane.text
            await until(lambda: root not in ptree.keys or "⇢" not in line_of(app, root), 5,
                        pilot=pilot, what="the root's row without its mark")

    run(body(), timeout=150)


def test_marks_escape_names_and_join_chains():
    """A name is untrusted (a process picks it): control characters reach
    the terminal escaped. A process in two chains waits on both."""
    from tractor_diag.tui.waits import Judged, mark_text, marks_of

    evil = "\x1b]52;c;aGk=\x07leaf"
    from tractor_diag.safetext import escape

    one = Judged(pids=(1, 2), names=("root", escape(evil)), born=(0.0, 0.0), dead=(False, False),
                 cause=2, kinds=((2, "sync-blocked"),), at=0.0, tree=1)
    two = Judged(pids=(1, 3), names=("root", "b"), born=(0.0, 0.0), dead=(False, False),
                 cause=3, kinds=((3, "runaway"),), at=0.0, tree=1)
    marks = marks_of([one, two])
    text = mark_text(marks[1]).plain
    assert "\x1b" not in text and "\x07" not in text
    assert text.startswith("  ⇢ waits on \\x1b]52;c;aGk=\\x07leaf[2], b[3]")
    assert marks[1].chains == {0, 1} and marks[2].chains == {0}
    assert mark_text(marks[3]).plain == "  ⊥ runaway"


def test_a_chain_that_ends_without_a_death_goes_at_the_next_quiet_why(current_tree):
    """A stopped leaf is the bottom of a chain; continued, nothing died, so
    only a new why can tell: the dashboard judges a tree with chains drawn
    again on a slow cadence (``ChainWatch.refresh``), quietly, and the marks go."""
    tree = current_tree(depth=2, breadth=1, hang="none")
    a = tree.actors()
    root, spawner, leaf = tree.root, a["spawner_0"], a["leaf_0_0"]

    async def body():
        app = DashApp([str(root)], interval=FAST)
        async with app.run_test(size=SIZE) as pilot:
            ptree = app.proc_tree
            await wait_for_pids(app, pilot, [root, spawner, leaf])
            tree.kill_pid(leaf, signal.SIGSTOP)
            try:
                await until(lambda: app.snapshot.entries[leaf].state == "stopped", 10,
                            pilot=pilot, what="the leaf stopped")
                ptree.select_pid(root)
                await pilot.press("w")
                await until(lambda: leaf in ptree.marks, 90, pilot=pilot, what="the marks")
                assert "⊥ stopped" in ptree.mark_of(leaf).plain
                assert ptree.mark_of(spawner).plain == f"  ⇢ waits on leaf_0_0[{leaf}]"
                shown = len(app.events_pane.text)
                app.chains.refresh = 1.0
            finally:
                tree.kill_pid(leaf, signal.SIGCONT)
            await until(lambda: not ptree.marks, 60, pilot=pilot, what="the marks to go")
            assert f"why: the chain down to leaf_0_0 ({leaf}) no longer holds: judged again" \
                in app.events_pane.text
            assert "why (" in app.detail.text  # the detail pane has the new verdicts
            n = len(app.events_pane.text)
            assert n > shown
            # nothing drawn, nothing judged again
            await pilot.pause(2.5)
            assert not app.chains.rejudging and not ptree.marks

    run(body(), timeout=150)


def test_a_mark_goes_right_after_the_pid_whatever_the_name_holds():
    """Injected data: a process whose title holds "  <its pid>" before its
    pid shows. The mark goes after the pid the label shows (the label says
    where that ends), not after the first text that looks like it."""
    from test_dash_snapshots import _proc, fake_snapshot, injected
    from tractor_diag.model import Entry
    from tractor_diag.tui.waits import Mark

    snap = fake_snapshot()
    snap.entries[4050] = Entry(proc=_proc(4050, 4000, ["job  4050"]), bucket="live",
                               state="idle", root=4000, depth=1, cpu_percent=0.0)
    snap.entries[4000].children.append(4050)

    async def body():
        async with injected(snap) as (app, pilot):
            ptree = app.proc_tree
            ptree.set_marks({4050: Mark(kinds=("stopped",), chains=frozenset({0}))})
            await pilot.pause()
            node = ptree.node_for(4050)
            row = ptree.render_label(node, Style(), Style()).plain
            assert row.count("4050") == 2 and "job  4050" in row
            assert "job  4050  4050  ⊥ stopped  idle" in row, row

    run(body(), 30)


def test_a_mark_widens_the_scroll_range_of_the_tree():
    """Injected data: a mark that makes a row the widest widens what the
    tree scrolls over (else the row's far end cannot be scrolled to until
    the next rebuild), and taking it away narrows it back."""
    from test_dash_snapshots import fake_snapshot, injected
    from tractor_diag.tui.waits import Mark

    async def body():
        async with injected(fake_snapshot()) as (app, pilot):
            ptree = app.proc_tree
            plain = ptree.virtual_size.width
            far = Mark(waits_on=((4020, "a_very_long_name_" * 6),), chains=frozenset({0}))
            ptree.set_marks({4002: far})
            await pilot.pause()
            node = ptree.node_for(4002)
            guide = next(line for line in ptree._tree_lines if line.node is node)._get_guide_width(
                ptree.guide_depth, ptree.show_root)
            wide = ptree.get_label_width(node) + guide
            assert wide > plain
            assert ptree.virtual_size.width == wide
            ptree.scroll_to(x=ptree.max_scroll_x, animate=False)
            await pilot.pause()
            # the row's far end (its wchan) is on screen
            row = ptree.render_line(node.line - ptree.scroll_offset.y).text
            assert row.rstrip().endswith("do_wait"), row
            ptree.set_marks({})
            await pilot.pause()
            assert ptree.virtual_size.width == plain

    run(body(), 30)


def test_a_quiet_refresh_runs_no_capture_while_nothing_in_the_chains_ran(current_tree,
                                                                          monkeypatch):
    """The quiet refresh of a tree with chains drawn runs py-spy on the
    whole tree: while no process of its chains has run since they were
    judged (each thread's state, wchan and time on a CPU as read after the
    why), nothing it would read of them changed, and it is skipped; once
    one of them runs (here a task-tree signal to the leaf), the next
    refresh judges the tree again."""
    from tractor_diag.tui import key_jobs

    tree = current_tree(depth=2, breadth=1, hang="wait-child-sync")
    a = tree.actors()
    root, spawner, leaf = tree.root, a["spawner_0"], a["leaf_0_0"]
    real_why = key_jobs.why
    quiet_whys: list[int] = []

    async def counted_why(pid, seen, quiet=False, **more):
        if quiet:
            quiet_whys.append(pid)
        return await real_why(pid, seen, quiet, **more)

    monkeypatch.setattr(key_jobs, "why", counted_why)

    async def body():
        app = DashApp([str(root)], interval=FAST)
        async with app.run_test(size=SIZE) as pilot:
            ptree = app.proc_tree
            await wait_for_pids(app, pilot, [root, spawner, leaf])
            ptree.select_pid(root)
            await pilot.press("w")
            await until(lambda: leaf in ptree.marks, 90, pilot=pilot, what="the marks")
            assert app.chains.evidence.get(root), "no evidence read after the why"
            marks = dict(ptree.marks)
            app.chains.refresh = 1.0
            first = app.chains.judged_when[root]
            seen: set[float] = set()

            def refreshed() -> bool:
                seen.add(app.chains.judged_when[root])
                return len(seen - {first}) >= 3

            await until(refreshed, 30, pilot=pilot, what="three quiet refreshes")
            assert quiet_whys == [] and ptree.marks == marks
            assert app.snapshot.entries[leaf].proc.handles_signal(signal.SIGUSR1)
            tree.kill_pid(leaf, signal.SIGUSR1)  # it runs: writes its task tree
            await until(lambda: quiet_whys, 30, pilot=pilot, what="a quiet why")
            await until(lambda: root not in app.chains.rejudging, 60, pilot=pilot,
                        what="the quiet why to end")
            assert ptree.marks == marks  # judged again, the same chain

    run(body(), timeout=150)


_REJUDGE_REUSE = Path(__file__).with_name("_dash_rejudge_reuse.py")


def test_a_quiet_refresh_judges_nobody_once_the_root_judged_is_gone(tmp_path):
    """``w`` on a shell draws a chain on its stopped child only; the shell
    dies (the child stays, adopted by a subreaper in the tree) and its pid
    goes to an actor look-alike with a SIGUSR1 handler outside the tree.
    The child then runs, so a quiet refresh is due: it traces and signals
    nobody, and the chain goes with a line saying why (before, the refresh
    judged the tree at that pid: the newcomer got py-spy and a SIGUSR1, and
    the chain stayed)."""
    got = ns_scenario(_REJUDGE_REUSE, tmp_path, timeout=180)
    shell, sleeper = got["shell"], got["sleeper"]
    # the set-up: a chain on the child only, of the shell's tree, standing
    # after the shell died (nothing but the refresh could drop it)
    assert got["marked"] == [sleeper] and got["tree"] == [shell], got
    assert got["chain_after_root_died"], got
    assert not got["usr1"], "the newcomer at the root's pid got a SIGUSR1"
    assert not got["touched"], "a capture traced or signalled the newcomer at the root's pid"
    assert got["chains_left"] == 0 and got["rejudging"] == [], got
    assert (f"({sleeper}) no longer holds: the root of its tree ({shell}) exited, and its pid "
            "now belongs to another process (w judges again)") in got["events"], got["events"]
