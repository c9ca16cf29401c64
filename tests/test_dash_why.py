"""The dashboard's tree pane with the real Textual app under ``run_test()``
on real trees: the actors-only view drawn by the actor tree (logical
parents)."""
from __future__ import annotations

import signal

import pytest

from tractor_diag.tui.app import DashApp

from _dash_helpers import run, until

pytestmark = pytest.mark.timeout(240)

SIZE = (200, 48)
FAST = 0.3


async def wait_for_pids(app, pilot, pids, timeout=30.0):
    pids = set(pids)
    await until(lambda: pids <= set(app.proc_tree.keys), timeout, pilot=pilot,
                what=f"tree to show {sorted(pids)}")


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
