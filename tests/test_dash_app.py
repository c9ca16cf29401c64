"""The dashboard driven through ``App.run_test()`` + ``Pilot`` against REAL
process trees: every pane and every key."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tractor_diag.tui.app import DashApp
from tractor_diag.tui.dialogs import ChoiceScreen, ConfirmScreen, IntervalScreen, SignalScreen

from _proc import open_proc_files
from _dash_helpers import (
    DEMO_ACTORS, DEMO_TREE, alive, alive_pinned, descendants_of, key_result, kill_pinned,
    ns_scenario, pin_all, run, until, wait_for_pids,
)

SIZE = (160, 48)
FAST = 0.3  # sampling interval for tests


def label_of(app: DashApp, pid: int) -> str:
    node = app.proc_tree.node_for(pid)
    assert node is not None, f"no node for {pid}"
    return node.label.plain


@contextlib.asynccontextmanager
async def watching(tree, pids, timeout: float = 30.0, **kw):
    """The dashboard on ``tree`` (a sample every `FAST` s) under
    ``run_test()``, once it shows ``pids``: (app, pilot)."""
    app = DashApp([str(tree.root)], interval=FAST, **kw)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for_pids(app, pilot, pids, timeout)
        yield app, pilot


# -- tree pane -------------------------------------------------------------------

def test_tree_pane_reconciles_by_pid_and_keeps_cursor_and_collapse(current_tree):
    tree = current_tree(depth=2, breadth=2, hang="sleep")
    actors = tree.actors()

    async def body():
        async with watching(tree, actors.values()) as (app, pilot):
            ptree = app.proc_tree
            # one node per process, nested under its parent
            leaf = actors["leaf_1_1"]
            assert ptree.node_for(leaf).parent is ptree.node_for(actors["spawner_1"])
            assert ptree.node_for(actors["spawner_1"]).parent is ptree.node_for(tree.root)
            text = label_of(app, leaf)
            assert "leaf_1_1" in text and str(leaf) in text and "blocked" in text
            assert "hrtimer_nanosleep" in text  # wchan of the sync time.sleep

            assert ptree.select_pid(leaf)
            ptree.node_for(actors["spawner_0"]).collapse()
            root_node = ptree.node_for(tree.root)
            other_leaf = ptree.node_for(actors["leaf_0_0"])
            victim = actors["leaf_0_1"]
            tree.kill_pid(victim, signal.SIGKILL)
            await until(lambda: victim not in ptree.keys, 15, pilot=pilot, what="victim removed")
            n = app.samples_shown
            await until(lambda: app.samples_shown >= n + 2, 10, pilot=pilot)
            assert ptree.selected_pid == leaf, "cursor moved off the selected process"
            assert ptree.cursor_node is ptree.node_for(leaf)
            assert ptree.node_for(tree.root) is root_node, "nodes were re-created"
            assert ptree.node_for(actors["leaf_0_0"]) is other_leaf
            assert not ptree.node_for(actors["spawner_0"]).is_expanded, "collapse lost"
            assert "exited" in app.events_pane.text and str(victim) in app.events_pane.text

    run(body())


def test_a_quiet_real_tree_is_compared_each_tick_not_laid_out(sleep_tree, monkeypatch):
    """The live sampler on a tree where nothing happens (a shell and two
    sleeps): after the first ticks, a tick lays the tree out no more and
    does not build the detail pane's text again; it only compares."""
    from tractor_diag.tui import detail, proc_tree

    sh = sleep_tree()
    pids = sh.pids()

    async def body():
        async with watching(sh, pids, strays=False) as (app, pilot):
            await until(lambda: app.samples_shown >= 4, 30, pilot=pilot)
            app.proc_tree.select_pid(pids[1])
            await pilot.pause(FAST * 2)
            laid: list = []
            real_layout = proc_tree.layout
            monkeypatch.setattr(proc_tree, "layout",
                                lambda *a, **k: (laid.append(1), real_layout(*a, **k))[1])
            built: list = []
            real_describe = detail.describe
            monkeypatch.setattr(detail, "describe",
                                lambda *a, **k: (built.append(1), real_describe(*a, **k))[1])
            start = app.samples_shown
            await until(lambda: app.samples_shown >= start + 8, 30, pilot=pilot)
            assert laid == []
            # (its "no cpu for" clock may step once: ten seconds a step)
            assert len(built) <= 1, built
            assert "sleep" in label_of(app, pids[1]) and "sleep" in app.detail.text

    run(body(), 60)


def test_the_sampler_s_kept_files_are_closed_when_the_dashboard_ends(sleep_tree):
    """The sampler keeps a /proc file or two open per process between
    ticks; run in-process (the xontrib), a dashboard that ended must not
    leave them behind."""
    sh = sleep_tree()
    pids = sh.pids()
    before = open_proc_files()

    async def body():
        async with watching(sh, pids) as (app, pilot):
            await until(lambda: app.samples_shown >= 3, 30, pilot=pilot)
            assert len(open_proc_files()) > len(before) + len(pids)
            await pilot.press("q")

    run(body(), 60)
    assert open_proc_files() == before


def test_zombies_and_exit_codes_in_tree_and_events(zombie_maker):
    h = zombie_maker(count=2, code=3, title="zed")

    async def body():
        app = DashApp([str(h.root)], interval=FAST)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for_pids(app, pilot, [h.root, *h.zombies])
            for z in h.zombies:
                text = label_of(app, z)
                assert "[zombie]" in text and "exited:3" in text, text
            assert "2 zombie" in str(app.query_one("#status").render())

    run(body())


def test_a_zombie_keeps_the_name_it_had_alive(tmp_path):
    """The tree pane and a `d` bundle name the zombie as it was called
    alive (``crash_and_burn``), not by its 15-byte comm (``crash…``)."""
    import subprocess

    from test_sampler import _NAMED_KIDS

    flag = tmp_path / "exit-now"
    parent = subprocess.Popen([sys.executable, "-c", _NAMED_KIDS, str(flag)],
                              stdout=subprocess.PIPE, text=True)
    try:
        actor, plain = map(int, parent.stdout.readline().split()[1:])

        async def body():
            app = DashApp([str(parent.pid)], interval=FAST, dump_root=str(tmp_path / "dumps"))
            async with app.run_test(size=SIZE) as pilot:
                await wait_for_pids(app, pilot, [actor, plain])
                await until(lambda: "crash_and_burn" in label_of(app, actor), 10, pilot=pilot)
                flag.touch()
                await until(lambda: "[zombie]" in label_of(app, actor), 15, pilot=pilot,
                            what="the actor's zombie")
                await pilot.pause(3 * FAST)
                assert "crash_and_burn" in label_of(app, actor), label_of(app, actor)
                assert label_of(app, plain).startswith("python -c"), label_of(app, plain)
                await key_result(app, pilot, parent.pid, "d", "dump", 60, "dump-all")
                summary = Path(app.last_bundle, "summary.md").read_text()
                assert "crash_and_burn (" in summary and "crash… (" not in summary

        run(body())
    finally:
        parent.kill()
        parent.wait(10)


def test_released_runtime_actors_are_named(released_tree):
    tree = released_tree(depth=1, breadth=2, hang="sleep")
    actors = tree.actors()

    async def body():
        async with watching(tree, actors.values(), timeout=20) as (app, pilot):
            for name, pid in actors.items():
                if pid != tree.root:
                    assert label_of(app, pid).startswith(name)
            app.proc_tree.select_pid(actors["leaf_0"])
            await until(lambda: "parent @" in app.detail.text, 5, pilot=pilot)
            assert f"127.0.0.1:{tree.port}" in app.detail.text  # --parent_addr

    run(body())


# -- detail pane -------------------------------------------------------------------

def test_detail_pane_cmdline_sockets_children(current_tree):
    tree = current_tree(depth=2, breadth=2, hang="sleep")
    actors = tree.actors()
    spawner = actors["spawner_0"]

    async def body():
        async with watching(tree, actors.values()) as (app, pilot):
            app.proc_tree.select_pid(spawner)
            sock = f"spawner_0@{spawner}.sock"
            await until(lambda: sock in app.detail.text, 10, pilot=pilot, what="sockets")
            text = app.detail.text
            assert f"_subactor[spawner_0@{spawner}]" in text  # cmdline (the title)
            assert f"listening   unix  {tree.bindspace}/{sock}" in text
            assert f"parent    {tree.root}" in text
            assert str(actors["leaf_0_0"]) in text and str(actors["leaf_0_1"]) in text
            assert "SIGUSR1   yes" in text

    run(body())


# -- keys ---------------------------------------------------------------------------

def test_key_s_shows_python_stacks(current_tree):
    tree = current_tree(depth=1, breadth=1, hang="sleep")
    leaf = tree.pid_of("leaf_0")

    async def body():
        async with watching(tree, [leaf]) as (app, pilot):
            title, body_ = await key_result(app, pilot, leaf, "s", "stacks", 30, "py-spy result")
            assert "py-spy" in title
            assert "Actor.hang" in body_.plain, body_.plain  # where it sits in time.sleep
            assert "Python stacks" in app.detail.text

    run(body())


def test_key_t_task_tree_only_with_a_handler(current_tree):
    tree = current_tree(depth=1, breadth=2, hang="sleep", unarmed=["leaf_1"])
    armed, unarmed = tree.pid_of("leaf_0"), tree.pid_of("leaf_1")

    async def body():
        async with watching(tree, [armed, unarmed]) as (app, pilot):
            _, body_ = await key_result(app, pilot, unarmed, "t", "tasks", 5)
            assert "not requested" in body_.plain
            assert alive(unarmed), "an unarmed process got SIGUSR1"

            _, body_ = await key_result(app, pilot, armed, "t", "tasks", 15)
            text = body_.plain
            assert "Actor.main [running]" in text, text  # the task wedged in time.sleep
            assert "Actor.hang" in text and "full dump: /tmp/tractor-diag-taskdump-" in text
            assert alive(armed)

    run(body())


def test_key_w_shows_the_verdict_of_the_selected_tree(current_tree):
    tree = current_tree(depth=1, breadth=1, hang="sleep")
    leaf = tree.pid_of("leaf_0")

    async def body():
        async with watching(tree, [tree.root, leaf]) as (app, pilot):
            title, body_ = await key_result(app, pilot, tree.root, "w", "why", 60)
            text = body_.plain
            assert text.startswith(f"1. [sync-blocked] leaf_0 ({leaf}) is blocked in time.sleep "
                                   "at current_tree.py:"), text
            assert "waits for child leaf_0 (trio Process.wait)" in text
            assert "why (" in app.detail.text
            # the headline reaches the events pane as one line
            assert f"sync-blocked: leaf_0 ({leaf}) is blocked in time.sleep" in app.events_pane.text

    run(body())


_REUSE = Path(__file__).with_name("_dash_reuse.py")


def test_keys_on_a_paused_row_whose_pid_was_taken_act_on_nobody(tmp_path):
    """Sampling paused, the selected row's process killed and its pid taken
    by another actor look-alike with a SIGUSR1 handler: t, s, w and d on
    the row signal, trace, judge and bundle nobody, and say why (before, the
    newcomer got the SIGUSR1, its stack was shown as the row's, its tree
    judged and bundled)."""
    got = ns_scenario(_REUSE, tmp_path, str(tmp_path / "bundles"), timeout=150)
    taken = "its pid now belongs to another process than the one shown"
    _title, text, usr1 = got["tasks"]
    assert f"{taken}: not signalled" in text and not usr1, got["tasks"]
    _title, text, usr1 = got["stacks"]
    assert f"{taken}: its stack is not shown" in text and "<string>" not in text, got["stacks"]
    _title, text, usr1 = got["why"]
    assert f"{taken}: nothing judged" in text and not usr1, got["why"]
    _title, text, usr1 = got["dump"]
    assert f"{taken}: nothing dumped" in text and not usr1, got["dump"]
    assert not (tmp_path / "bundles").exists() or not os.listdir(tmp_path / "bundles")


def test_key_d_writes_a_bundle_and_shows_its_path(current_tree, tmp_path):
    tree = current_tree(depth=1, breadth=1, hang="sleep")
    leaf = tree.pid_of("leaf_0")

    async def body():
        async with watching(tree, [tree.root, leaf],
                            dump_root=str(tmp_path / "dumps")) as (app, pilot):
            await key_result(app, pilot, tree.root, "d", "dump", 60, "dump-all")
            path = app.last_bundle
            assert path and Path(path, "summary.md").is_file()
            assert path in app.detail.text
            assert path in app.events_pane.text
            assert Path(path, "history.json").is_file()  # the sampler's history

    run(body())


def test_key_d_on_a_leaf_offers_the_whole_tree(current_tree, tmp_path):
    tree = current_tree(depth=1, breadth=1, hang="sleep")
    leaf = tree.pid_of("leaf_0")

    async def body():
        async with watching(tree, [tree.root, leaf],
                            dump_root=str(tmp_path / "dumps")) as (app, pilot):
            app.proc_tree.select_pid(leaf)
            await pilot.press("d")
            await until(lambda: isinstance(app.screen, ChoiceScreen), 5, pilot=pilot)
            text = str(app.screen.query_one("#dialog-body Static").render())
            assert f"{leaf}" in text and "is a leaf: a bundle of it holds that one process" in text
            import re
            assert f"The whole tree at {tree.root}" in text
            assert int(re.search(r"holds (\d+) processes", text)[1]) >= 2, text
            await pilot.press("escape")  # nothing written
            await pilot.pause(0.2)
            assert app.last_bundle is None and "dump" not in app._extras.get(leaf, {})

            await pilot.press("d")
            await until(lambda: isinstance(app.screen, ChoiceScreen), 5, pilot=pilot)
            await pilot.press("w")
            await key_result(app, pilot, tree.root, None, "dump", 60, "dump-all of the whole tree")
            import json
            meta = json.loads(Path(app.last_bundle, "meta.json").read_text())
            assert {tree.root, leaf} <= set(meta["pids"])

    run(body())


def test_reap_message_says_how_each_ended(current_tree):
    """leaf_0_1 exits on SIGINT; leaf_0_0 ignores it and its parent waits
    on it: those two need SIGKILL. The message counts each way of ending."""
    tree = current_tree(depth=2, breadth=2, hang="wait-child")
    actors = tree.actors()
    spawner, stubborn, polite = actors["spawner_0"], actors["leaf_0_0"], actors["leaf_0_1"]

    async def body():
        async with watching(tree, [spawner, stubborn, polite], grace=2.0) as (app, pilot):
            app.proc_tree.select_pid(spawner)
            await pilot.press("r")
            await until(lambda: isinstance(app.screen, ConfirmScreen), 10, pilot=pilot)
            await pilot.press("y")
            await key_result(app, pilot, spawner, None, "reap", 20, "reap done")
            line = next(ln for ln in app.events_pane.text.splitlines()
                        if f"reaped the subtree at {spawner}" in ln)
            assert "2 killed by SIGKILL" in line, line
            assert ("1 exited on SIGINT" in line or "1 exited after SIGINT" in line), line
            assert "3 killed" not in line

    run(body())


def test_key_r_reaps_the_selected_subtree_after_confirming(current_tree):
    tree = current_tree(depth=2, breadth=2, hang="sleep")
    actors = tree.actors()
    doomed = [actors["spawner_1"], actors["leaf_1_0"], actors["leaf_1_1"]]
    spared = [tree.root, actors["spawner_0"], actors["leaf_0_0"], actors["leaf_0_1"]]

    async def body():
        async with watching(tree, actors.values(), grace=2.0) as (app, pilot):
            app.proc_tree.select_pid(actors["spawner_1"])
            await pilot.press("r")
            await until(lambda: isinstance(app.screen, ConfirmScreen), 10, pilot=pilot)
            await pilot.press("n")  # declined: nothing happens
            await pilot.pause(0.3)
            assert all(alive(p) for p in doomed)

            await pilot.press("r")
            await until(lambda: isinstance(app.screen, ConfirmScreen), 10, pilot=pilot)
            body_text = str(app.screen.query_one("#dialog-body Static").render())
            for pid in doomed:
                assert str(pid) in body_text
            await pilot.press("y")
            await until(lambda: not any(alive(p) for p in doomed), 15, pilot=pilot,
                        what="subtree reaped")
            await key_result(app, pilot, actors["spawner_1"], None, "reap", 5)
            assert all(alive(p) for p in spared)

    run(body())


def test_key_k_sends_the_chosen_signal_after_confirming(current_tree):
    tree = current_tree(depth=1, breadth=2, hang="sleep")
    victim, other = tree.pid_of("leaf_0"), tree.pid_of("leaf_1")

    async def body():
        async with watching(tree, [victim, other]) as (app, pilot):
            app.proc_tree.select_pid(victim)
            await pilot.press("k")
            await until(lambda: isinstance(app.screen, SignalScreen), 5, pilot=pilot)
            # the way out is on screen: a hint and a Cancel button
            hint = str(app.screen.query_one("#dialog-hint").render())
            assert "Esc: cancel" in hint and "Enter" in hint
            await pilot.click("#cancel")
            await until(lambda: not isinstance(app.screen, SignalScreen), 5, pilot=pilot)
            assert alive(victim)
            await pilot.press("k")
            await until(lambda: isinstance(app.screen, SignalScreen), 5, pilot=pilot)
            await pilot.press("escape")  # changed my mind
            await pilot.pause(0.2)
            assert alive(victim)

            await pilot.press("k")
            await until(lambda: isinstance(app.screen, SignalScreen), 5, pilot=pilot)
            await pilot.press("down", "enter")  # SIGTERM (second in the list)
            await until(lambda: isinstance(app.screen, ConfirmScreen), 5, pilot=pilot)
            assert "SIGTERM" in str(app.screen.query_one("#dialog-body Static").render())
            await pilot.press("y")
            await until(lambda: not alive(victim), 10, pilot=pilot, what="SIGTERM delivered")
            assert alive(other)
            await until(lambda: victim not in app.proc_tree.keys, 10, pilot=pilot)

    run(body())


def test_keys_p_and_i_pause_and_change_the_interval(current_tree):
    tree = current_tree(depth=1, breadth=1, hang="none")

    async def body():
        app = DashApp([str(tree.root)], interval=FAST)
        async with app.run_test(size=SIZE) as pilot:
            await until(lambda: app.samples_shown >= 2, 10, pilot=pilot)
            await pilot.press("p")
            assert app.sampler.paused
            await pilot.pause(0.4)
            n = app.samples_shown
            await pilot.pause(1.0)
            assert app.samples_shown == n, "sampled while paused"
            assert "PAUSED" in str(app.query_one("#status").render())
            await pilot.press("p")
            await until(lambda: app.samples_shown > n, 5, pilot=pilot, what="resumed")

            await pilot.press("i")
            await until(lambda: isinstance(app.screen, IntervalScreen), 5, pilot=pilot)
            await pilot.press("end", "ctrl+u", *"abc", "enter")  # rejected
            assert isinstance(app.screen, IntervalScreen)
            await pilot.press("ctrl+u", *"0.5", "enter")
            await until(lambda: not isinstance(app.screen, IntervalScreen), 5, pilot=pilot)
            assert app.sampler.interval == 0.5
            assert "every 0.5s" in str(app.query_one("#status").render())

    run(body())


def test_keys_filter_actors_only_log_and_palette(current_tree, sleep_tree):
    tree = current_tree(depth=2, breadth=2, hang="sleep")
    actors = tree.actors()
    sh = sleep_tree()
    sleeps = [p for p in sh.pids() if p != sh.root]

    async def body():
        app = DashApp([str(tree.root), str(sh.root)], interval=FAST)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for_pids(app, pilot, [*actors.values(), sh.root, *sleeps])
            ptree = app.proc_tree
            await pilot.press("slash")
            assert app.query_one("#filter").has_focus
            await pilot.press(*"leaf_1")
            await until(lambda: actors["leaf_0_0"] not in ptree.keys, 5, pilot=pilot)
            shown = set(ptree.keys)
            assert {actors["leaf_1_0"], actors["leaf_1_1"], actors["spawner_1"], tree.root} <= shown
            assert actors["spawner_0"] not in shown and sh.root not in shown
            await pilot.press("escape")
            await until(lambda: actors["leaf_0_0"] in ptree.keys, 5, pilot=pilot)
            assert not app.query_one("#filter").display

            await pilot.press("a")  # actors only: the sleeps go, roots stay
            await until(lambda: not set(sleeps) & set(ptree.keys), 5, pilot=pilot)
            assert sh.root in ptree.keys and set(actors.values()) <= set(ptree.keys)
            await pilot.press("a")
            await until(lambda: set(sleeps) <= set(ptree.keys), 5, pilot=pilot)

            tabs = app.query_one("#bottom")
            assert tabs.active == "events-tab"
            await pilot.press("l")
            assert tabs.active == "log-tab"
            await pilot.press("l")
            assert tabs.active == "events-tab"

            await pilot.press("ctrl+p")
            await pilot.pause(0.3)
            await pilot.press(*"Pause", "enter")
            await until(lambda: app.sampler.paused, 5, pilot=pilot, what="palette command")

            await pilot.press("q")
            await until(lambda: not app.is_running, 10, pilot=pilot)

    run(body())


# -- launch mode -----------------------------------------------------------------------

def test_launch_mode_real_actor_tree_log_and_quit(xdg_runtime_dir):
    # What this test started, by pid and start time: the launched tree. Only
    # these may be killed in clean-up, and only after the assertion that the
    # dashboard stopped them itself.
    pinned: dict[int, int] = {}
    left: list[int] = []

    async def body():
        app = DashApp(launch=DEMO_TREE, interval=FAST, grace=1.5)
        async with app.run_test(size=SIZE) as pilot:
            def names():
                snap = app.snapshot
                if snap is None:
                    return set()
                return {e.proc.actor.name for e in snap.entries.values()
                        if e.proc.actor is not None and e.proc.pid in app.proc_tree.keys}
            await until(lambda: DEMO_ACTORS <= names(), 30, pilot=pilot, what="demo actors")
            await until(lambda: "READY" in app.log_pane.text, 10, pilot=pilot)
            assert "calling time.sleep(3600)" in app.log_pane.text  # stderr relayed
            def zombies():
                return [e.proc.pid for e in app.snapshot.entries.values()
                        if e.bucket == "zombie" and e.proc.actor is not None
                        and e.root == app.child_pid]  # not another run's stray
            zombie = await until(zombies, 10, pilot=pilot, what="the crasher's zombie")
            await pilot.pause(0.1)
            assert "exited:3" in label_of(app, zombie[0])
            await until(lambda: "zombied" in app.events_pane.text, 10, pilot=pilot)
            status = str(app.query_one("#status").render())
            assert f"child {app.child_pid} running" in status
            assert f"held by {app.containment}" in status
            pinned.update(pin_all([app.child_pid, *descendants_of(app.child_pid)]))
            assert len(pinned) >= 8  # the root and 7 live actors (the crasher is a zombie)
            await pilot.press("q")
            await until(lambda: not app.is_running, 20, pilot=pilot, what="quit")
        left.extend(alive_pinned(pinned))
        assert app.supervisor.returncode is not None

    try:
        run(body())
    finally:
        kill_pinned(pinned)
    assert not left, f"launched tree survived quit: {left}"


_SLEEPER = "import time; print('READY', flush=True); time.sleep(60)"


@pytest.mark.parametrize("strays", [None, True])
def test_launch_mode_shows_the_launched_tree_only(released_tree, strays):
    """Another run's orphaned actor on the box: launching, the view is the
    launched tree (so `r` cannot be offered the orphan); --strays adds the
    rest; attached, it is shown as before."""
    old = released_tree(depth=2, breadth=1, hang="sleep")
    (orphan,) = old.orphan("spawner_0")
    pinned: dict[int, int] = {}

    async def body():
        kw = {} if strays is None else {"strays": strays}  # None: the default
        app = DashApp(launch=[sys.executable, "-c", _SLEEPER], interval=FAST, grace=1.0, **kw)
        async with app.run_test(size=SIZE) as pilot:
            await until(lambda: app.child_pid in app.proc_tree.keys, 20, pilot=pilot,
                        what="the launched child")
            pinned.update(pin_all([app.child_pid]))
            if strays:
                await until(lambda: orphan in app.proc_tree.keys, 10, pilot=pilot,
                            what="the other run's orphan, with --strays")
            else:
                await until(lambda: app.samples_shown >= 4, 10, pilot=pilot)
                assert orphan not in app.proc_tree.keys
                assert orphan not in app.snapshot.entries
                app.proc_tree.select_pid(orphan)  # not there: `r` has nothing to offer
                assert app.proc_tree.selected_pid != orphan
            await pilot.press("q")
            await until(lambda: not app.is_running, 20, pilot=pilot, what="quit")

        attached = DashApp([str(old.root)], interval=FAST)
        async with attached.run_test(size=SIZE) as pilot:
            await until(lambda: orphan in attached.proc_tree.keys, 10, pilot=pilot,
                        what="the orphan, attached (today's default)")

    try:
        run(body())
    finally:
        kill_pinned(pinned)


def test_launch_mode_one_mib_without_newline(tmp_path):
    prog = tmp_path / "blurt.py"
    prog.write_text(
        "import sys, time\n"
        "sys.stdout.write('y' * (1 << 20)); sys.stdout.flush()\n"
        "print('\\nafter the blob', flush=True)\n"
        "sys.exit(7)\n")

    async def body():
        app = DashApp(launch=[sys.executable, str(prog)], interval=FAST)
        async with app.run_test(size=SIZE) as pilot:
            await until(lambda: app.child_code is not None, 20, pilot=pilot, what="exit")
            await until(lambda: "after the blob" in app.log_pane.text, 5, pilot=pilot)
            assert app.log_pane.received_chars >= 1 << 20
            assert app.child_code == 7
            assert "exited 7" in str(app.query_one("#status").render())
            assert "exited: 7" in app.log_pane.text

    run(body())


def test_a_program_that_exits_at_once_is_shown_exited():
    """Its exit may be reaped before the dashboard has handled its launch:
    the exit code must still land (it used to show 'running' forever)."""
    async def body():
        for _ in range(6):
            app = DashApp(launch=["sh", "-c", "exit 3"], interval=FAST)
            async with app.run_test(size=SIZE) as pilot:
                await until(lambda: app.supervisor is not None
                            and app.supervisor.returncode is not None, 10, pilot=pilot)
                await pilot.pause(0.3)
                assert app.child_code == 3
                assert "exited 3" in str(app.query_one("#status").render())

    run(body())


def test_launch_of_a_missing_command_is_reported_not_raised():
    async def body():
        app = DashApp(launch=["/nonexistent/nope"], interval=FAST)
        async with app.run_test(size=SIZE) as pilot:
            await until(lambda: app.launch_error is not None, 10, pilot=pilot)
            assert "cannot launch /nonexistent/nope" in app.launch_error
            # the error is set before its message reaches the log pane
            await until(lambda: app.launch_error in app.log_pane.text, 10, pilot=pilot,
                        what="the launch error in the log pane")

    run(body())


def test_a_failing_action_is_reported_and_sampling_goes_on():
    async def boom():
        raise RuntimeError("kaboom")

    async def body():
        app = DashApp([str(os.getpid())], interval=FAST)
        async with app.run_test(size=SIZE) as pilot:
            await until(lambda: app.samples_shown >= 1, 10, pilot=pilot)
            assert app.guest.spawn(boom)
            await until(lambda: "kaboom" in app.events_pane.text, 5, pilot=pilot)
            n = app.samples_shown
            await until(lambda: app.samples_shown >= n + 2, 5, pilot=pilot, what="sampling")
            assert app.guest.running

    run(body())


# A launched program whose own child outlives it: an orphan of the tree.
_ORPHANER = ("import subprocess, time; p = subprocess.Popen(['sleep', '60']); "
             "print('GRANDCHILD', p.pid, flush=True); time.sleep(0.5)")


@pytest.mark.parametrize("subreaper", [True, False])
def test_no_subreaper_leaves_the_launched_trees_orphans_to_others(subreaper):
    """Launching, the dashboard adopts the orphans of the tree as a child
    subreaper (they stay in its tree); ``--no-subreaper`` (subreaper=False)
    does not: the orphan goes to init or another subreaper above us."""
    import re

    from tractor_diag.launch import is_child_subreaper
    from tractor_diag.procfs import read_stat

    assert not is_child_subreaper()  # else the False case would prove nothing
    pinned: dict[int, int] = {}

    async def body():
        app = DashApp(launch=[sys.executable, "-c", _ORPHANER], interval=FAST, grace=1.0,
                      subreaper=subreaper, cgroup=False)
        async with app.run_test(size=SIZE) as pilot:
            m = await until(lambda: re.search(r"GRANDCHILD (\d+)", app.log_pane.text), 20,
                            pilot=pilot, what="the grandchild's pid in the log")
            grandchild = int(m.group(1))
            pinned.update(pin_all([grandchild]))
            await until(lambda: app.child_code is not None, 20, pilot=pilot,
                        what="the launched program's exit")
            st = await until(lambda: read_stat(grandchild), 5, pilot=pilot)
            assert (st.ppid == os.getpid()) is subreaper, (st.ppid, os.getpid())
            assert is_child_subreaper() is subreaper
            await pilot.press("q")
            await until(lambda: not app.is_running, 20, pilot=pilot, what="quit")

    try:
        run(body())
    finally:
        kill_pinned(pinned)
    assert not is_child_subreaper()


def test_no_strays_hides_another_runs_orphan_when_attached(released_tree):
    """Attached, strays of the box are shown by default (see
    test_launch_mode_shows_the_launched_tree_only); --no-strays
    (strays=False) keeps the view to the named roots."""
    old = released_tree(depth=2, breadth=1, hang="sleep")
    (orphan,) = old.orphan("spawner_0")
    mine = released_tree(depth=1, breadth=1, hang="sleep")

    async def body():
        app = DashApp([str(mine.root)], interval=FAST, strays=False)
        async with app.run_test(size=SIZE) as pilot:
            await until(lambda: mine.root in app.proc_tree.keys, 20, pilot=pilot,
                        what="the named root")
            await until(lambda: app.samples_shown >= 4, 10, pilot=pilot)
            assert orphan not in app.proc_tree.keys
            assert orphan not in app.snapshot.entries

        shown = DashApp([str(mine.root)], interval=FAST)
        async with shown.run_test(size=SIZE) as pilot:
            await until(lambda: orphan in shown.proc_tree.keys, 10, pilot=pilot,
                        what="the orphan, with strays shown (the default)")

    run(body())
