"""The dashboard's own captures are not its patients' symptoms: the real
Textual app under ``run_test()`` on real trees presses ``w`` (why: py-spy
on every process, task-dump signals) and ``s`` (py-spy on one) over and
over, and the sampler's runaway rule never reports a window in which we
traced a process: no ``runaway`` or ``recovered`` event for an idle actor
we traced, no ``recovered`` flap for a busy loop we traced (the ptrace
stops read as the loop giving the CPU up). The rule is not blinded: the
busy loop is judged a runaway, while and after we trace it."""
from __future__ import annotations

import os

import pytest

from tractor_diag.tui.app import DashApp

from _dash_helpers import run, until, wait_for_pids

pytestmark = pytest.mark.timeout(300)

SIZE = (200, 48)
FAST = 0.25  # short windows: more of them overlap a capture
ROUNDS = 6


def events_of(app, pids, kinds=("runaway", "recovered")):
    return [(e.kind, e.pid) for e in app.sampler.events if e.pid in pids and e.kind in kinds]


async def finished(app, pilot, pid, section, before, timeout=60.0):
    """Wait for the key's result for ``pid`` newer than ``before``."""
    def done():
        got = app._extras.get(pid, {}).get(section)
        return got is not None and got is not before
    await until(done, timeout, pilot=pilot, what=f"{section} of {pid}")
    return app._extras[pid][section]


async def press_on(app, pilot, pid, key, section):
    before = app._extras.get(pid, {}).get(section)
    assert app.proc_tree.select_pid(pid)
    await pilot.pause(0.05)
    await pilot.press(key)
    return await finished(app, pilot, pid, section, before)


async def capture_rounds(app, pilot, root, leaves, rounds=ROUNDS):
    """``w`` on the root and ``s`` on every leaf, ``rounds`` times, with a
    sampler tick or two between them (windows that open during one capture
    and close during the next)."""
    for _ in range(rounds):
        await press_on(app, pilot, root, "w", "why")
        for pid in leaves:
            await press_on(app, pilot, pid, "s", "stacks")
        n = app.samples_shown
        await until(lambda: app.samples_shown >= n + 1, 10, pilot=pilot)


def hot_tree(current_tree):
    """root -> leaf_0 (a tight loop), leaf_1 (idle)."""
    tree = current_tree(depth=1, breadth=2, hang="runaway")
    a = tree.actors()
    return tree.root, a["leaf_0"], a["leaf_1"]


def test_a_traced_busy_loop_stays_a_runaway_and_traced_idle_actors_stay_quiet(current_tree):
    """A look-alike of today's runtime (titles, UDS sockets, SIGUSR1
    dumpers), its first leaf in a tight loop: judged a runaway once, then
    no ``recovered`` while we attach py-spy to it and signal its tree; the
    idle actors we trace get no event at all."""
    root, hot, idle = hot_tree(current_tree)

    async def body():
        app = DashApp([str(root)], interval=FAST)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for_pids(app, pilot, {root, hot, idle})
            # the rule sees the loop before we touch it (BOOT_GRACE passed)
            await until(lambda: ("runaway", hot) in events_of(app, {hot}), 30,
                        pilot=pilot, what="the busy loop judged a runaway")
            # The loop's own yield, not ours: trio's idle worker thread
            # exits 10 s after boot and takes the GIL from the loop once (a
            # voluntary switch, a real one). Traced from then on only.
            await until(lambda: len(os.listdir(f"/proc/{hot}/task")) == 1, 20,
                        pilot=pilot, what="the loop's process down to its main thread")
            n = app.samples_shown
            await until(lambda: app.samples_shown >= n + 2
                        and app.snapshot.entries[hot].state == "runaway", 10, pilot=pilot)
            events = events_of(app, {hot})
            await capture_rounds(app, pilot, root, [hot, idle])
            # the loop still spins: still a runaway in the latest sample
            n = app.samples_shown
            await until(lambda: app.samples_shown >= n + 4, 15, pilot=pilot)
            assert app.snapshot.entries[hot].state == "runaway"
            assert events_of(app, {hot}) == events, (
                "our own captures read as the loop's recovery")
            assert events_of(app, {root, idle}) == [], "idle actors judged over our captures"

    run(body(), timeout=240)


def test_a_busy_loop_is_judged_while_we_trace_its_tree(current_tree):
    """The rule is not blinded by captures elsewhere: a loop that starts
    spinning while we keep tracing its siblings and its root is judged a
    runaway as soon as a clean window of its own closes."""
    root, hot, idle = hot_tree(current_tree)

    async def body():
        app = DashApp([str(root)], interval=FAST)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for_pids(app, pilot, {root, hot, idle})
            for _ in range(ROUNDS):
                await press_on(app, pilot, idle, "s", "stacks")
                await press_on(app, pilot, root, "s", "stacks")
                if ("runaway", hot) in events_of(app, {hot}):
                    break
            await until(lambda: ("runaway", hot) in events_of(app, {hot}), 30,
                        pilot=pilot, what="the busy loop judged a runaway")
            assert events_of(app, {root, idle}) == []

    run(body(), timeout=240)


@pytest.mark.parametrize("backend", ["trio", "main_thread_forkserver"])
def test_idle_actors_of_todays_runtime_traced_get_no_runaway_events(runtime_trees, backend,
                                                                     monkeypatch):
    """Today's tractor, an idle tree (root -> spawner_0 -> leaf_0_0, all
    in trio's loop): ``w`` and ``s`` again and again, and not one
    ``runaway`` or ``recovered`` event for any of them."""
    tree = runtime_trees.start(backend, "uds", depth=2, breadth=1, hang="none")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tree.xdg))
    a = tree.actors
    root, spawner, leaf = a["root"], a["spawner_0"], a["leaf_0_0"]

    async def body():
        app = DashApp([str(root)], interval=FAST)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for_pids(app, pilot, {root, spawner, leaf})
            await capture_rounds(app, pilot, root, [spawner, leaf])
            n = app.samples_shown
            await until(lambda: app.samples_shown >= n + 3, 15, pilot=pilot)
            pids = set(app.snapshot.entries)
            assert events_of(app, pids) == []

    run(body(), timeout=240)
