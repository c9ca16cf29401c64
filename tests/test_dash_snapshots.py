"""SVG snapshot tests of the dashboard (pytest-textual-snapshot), fed
deterministic snapshots and events through `DashApp.show` instead of the
live sampler (``live=False``).

Update after an intended visual change:
``pytest tests/test_dash_snapshots.py --snapshot-update``, then look at the
SVGs in ``tests/__snapshots__/test_dash_snapshots/``.
"""
from __future__ import annotations

import contextlib
import sys
import time

import pytest

from tractor_diag.actors import parse_actor
from tractor_diag.model import Entry, Event, Proc, Snapshot
from tractor_diag.tui.app import DashApp
from tractor_diag.tui.messages import Exited, Output, Sampled, SocketsRead
from tractor_diag.tui.proc_tree import ProcTree
from tractor_diag.sockmodel import SockView as Sock

from _dash_helpers import run

T0 = 1_800_000_000.0  # a fixed "now"
SIZE = (150, 44)
BINDSPACE = "/run/user/1000/tractor"


@pytest.fixture(autouse=True)
def utc(monkeypatch):
    """Event times are shown in local time: pin it."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def _proc(pid, ppid, argv, *, state="S", wchan="do_epoll_wait", age=300.0, rss=30 << 20,
          cpu=1.0, usr1=True, exit_code=None, comm=None):
    comm = comm or (argv[0][:15] if argv else "python")
    return Proc(
        pid=pid, ppid=ppid, uid=1000, state=state, comm=comm, cmdline=list(argv),
        create_time=T0 - age, utime=cpu, stime=0.1, rss=rss if state != "Z" else 0,
        num_threads=4, exit_code=exit_code, wchan=wchan if state != "Z" else "",
        cgroup="/user.slice", vol_ctx=120, invol_ctx=7,
        sig_caught=(1 << 9) | (1 << 1) if usr1 else (1 << 1),
        actor=parse_actor(list(argv), comm),
    )


def _actor(pid, ppid, name, **kw):
    title = f"_subactor[{name}@{pid}]"
    return _proc(pid, ppid, [title], comm=title[:15], **kw)


def fake_snapshot() -> Snapshot:
    """A hung tree: a sync sleep, a parent waiting on a child, a runaway, a
    zombie; an orphaned subtree and a stray from an earlier run."""
    procs = [
        (_proc(4000, 3900, ["python", "-m", "myapp.main", "--serve"]), "live", "idle", None),
        (_actor(4001, 4000, "gateway"), "live", "idle", None),
        (_actor(4010, 4001, "db_pool", wchan="hrtimer_nanosleep"), "live", "blocked", None),
        (_actor(4011, 4001, "cache"), "live", "idle", None),
        (_actor(4002, 4000, "supervisor", wchan="do_wait", usr1=False), "live", "blocked", None),
        (_actor(4020, 4002, "stubborn"), "live", "idle", None),
        (_actor(4003, 4000, "hot_loop", state="R", cpu=290.0), "live", "runaway", 99.7),
        (_actor(4004, 4000, "flaky_parent"), "live", "idle", None),
        (_proc(4030, 4004, [], state="Z", comm="_subactor[crash", exit_code=3),
         "zombie", "exited", None),
        (_actor(3500, 1, "lost_worker", age=7200.0), "orphan", "idle", None),
        (_actor(3501, 3500, "lost_leaf", age=7200.0), "orphan", "idle", None),
        (_actor(2900, 1, "ghost", age=90000.0, wchan="hrtimer_nanosleep"), "stray", "blocked", None),
    ]
    kids: dict[int, list[int]] = {}
    for p, *_ in procs:
        kids.setdefault(p.ppid, []).append(p.pid)
    roots = {4000: 4000, 3500: None, 2900: None}
    entries = {}
    for p, bucket, state, cpu in procs:
        root = 4000 if p.pid >= 4000 else None
        depth = 0
        q = p
        while q.pid not in roots:
            depth += 1
            q = next(x for x, *_ in procs if x.pid == q.ppid)
        entries[p.pid] = Entry(
            proc=p, bucket=bucket, state=state, root=root, depth=depth,
            children=sorted(kids.get(p.pid, [])),
            cpu_percent=cpu if cpu is not None else (0.0 if state != "exited" else None),
            stuck_for=240.0 if state == "blocked" else 0.0,
            note="re-parented to init" if bucket == "orphan" and depth == 0 else None,
        )
    # each actor's place in the actor tree, as a real snapshot has it
    from tractor_diag.trees import _actor_parents

    _actor_parents(entries, {p.pid: p for p, *_ in procs})
    return Snapshot(taken_at=T0, monotonic=1000.0, roots=[4000], entries=entries,
                    strays=[2900, 3500], samples=2, window=1.0, host="box")


def fake_snapshot_with(pid: int, **changes) -> Snapshot:
    """`fake_snapshot` with fields of the entry of ``pid`` changed."""
    snap = fake_snapshot()
    for name, value in changes.items():
        setattr(snap.entries[pid], name, value)
    return snap


def fake_events() -> list[Event]:
    return [
        Event("spawned", 4001, T0 - 299, "gateway"),
        Event("spawned", 4010, T0 - 298, "db_pool"),
        Event("spawned", 4030, T0 - 297, "crash"),
        Event("zombied", 4030, T0 - 296, "crash", exit_code=3),
        Event("runaway", 4003, T0 - 250, "hot_loop", detail="99% CPU"),
        Event("exited", 4099, T0 - 30, "old_worker", exit_code=-9),
    ]


def feed(app: DashApp, select: int | None = None):
    async def run_before(pilot):
        app.show(fake_snapshot(), fake_events())
        app.show_sockets(4010, [
            Sock("unix", "listening", f"{BINDSPACE}/db_pool@4010.sock"),
            Sock("unix", "connected", "(unnamed)"),
            Sock("tcp", "established", "127.0.0.1:50122", "127.0.0.1:5432"),
        ])
        app.add_output("stdout", ["READY", "demo tree up: root pid 4000, 8 actors"])
        app.add_output("stderr", ["[db_pool@4010] calling time.sleep(3600) inside a trio task",
                                  "[supervisor@4002] waiting for stubborn to finish (forever)"])
        await pilot.pause()
        if select is not None:
            app.proc_tree.select_pid(select)
        await pilot.pause()
    return run_before


def make_app() -> DashApp:
    return DashApp(["myapp.main"], live=False)


@contextlib.asynccontextmanager
async def injected(snapshot: Snapshot | None = None):
    """The app on injected data under ``run_test()``: (app, pilot), once
    ``snapshot`` is shown when one is given."""
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        if snapshot is not None:
            app.show(snapshot)
            await pilot.pause()
        yield app, pilot


def record_set_labels(monkeypatch) -> list:
    """From now on, the pid of each tree row given a new label (one entry
    per `TreeNode.set_label` or `ProcTree._relabel`)."""
    from textual.widgets.tree import TreeNode

    set_labels: list = []
    real_set = TreeNode.set_label
    monkeypatch.setattr(TreeNode, "set_label",
                        lambda node, label: (set_labels.append(node.data), real_set(node, label)))
    real_relabel = getattr(ProcTree, "_relabel", None)  # (a tick that moves no row)
    if real_relabel is not None:
        monkeypatch.setattr(ProcTree, "_relabel", lambda tree, node, label: (
            set_labels.append(node.data), real_relabel(tree, node, label)))
    return set_labels


def test_main_view(snap_compare):
    app = make_app()
    assert snap_compare(app, terminal_size=SIZE, run_before=feed(app, select=4010))


def test_log_tab(snap_compare):
    app = make_app()
    assert snap_compare(app, press=["l"], terminal_size=SIZE, run_before=feed(app))


def test_filter(snap_compare):
    app = make_app()
    assert snap_compare(app, press=["slash", *"stub"], terminal_size=SIZE, run_before=feed(app))


def test_actors_only_and_collapsed_group(snap_compare):
    app = make_app()

    async def run_before(pilot):
        await feed(app)(pilot)
        app.proc_tree.node_for("group:orphans").collapse()

    assert snap_compare(app, press=["a"], terminal_size=SIZE, run_before=run_before)


def test_signal_dialog_without_sigusr1_handler(snap_compare):
    app = make_app()
    assert snap_compare(app, press=["k"], terminal_size=SIZE, run_before=feed(app, select=4002))


def test_reconcile_keeps_nodes_and_cursor():
    """Not a picture: the same snapshot twice, then one with a process gone
    and one added, keeps node identity and the cursor (no clear())."""

    async def body():
        async with injected(fake_snapshot()) as (app, pilot):
            ptree = app.proc_tree
            ptree.select_pid(4020)
            nodes = {k: ptree.node_for(k) for k in ptree.keys}
            app.show(fake_snapshot())
            await pilot.pause()
            assert {k: ptree.node_for(k) for k in ptree.keys} == nodes
            changed = fake_snapshot()
            del changed.entries[4011]  # cache exited
            changed.entries[4001].children = [4010, 4012]
            changed.entries[4012] = Entry(proc=_actor(4012, 4001, "cache2"), bucket="live",
                                          state="idle", root=4000, depth=2)
            app.show(changed)
            await pilot.pause()
            assert 4011 not in ptree.keys
            assert ptree.node_for(4012).parent is nodes[4001]
            assert [c.data for c in nodes[4001].children] == [4010, 4012]
            assert ptree.selected_pid == 4020
            assert all(ptree.node_for(k) is n for k, n in nodes.items() if k != 4011)

    run(body(), 30)


def test_an_unchanged_tick_rebuilds_no_label(monkeypatch):
    """Not a picture: a tick whose labels read the same reuses the label
    objects and touches no node; a process whose CPU changed gets a new
    label, and only that one."""
    from tractor_diag.tui import proc_tree

    async def body():
        async with injected(fake_snapshot()) as (app, pilot):
            ptree = app.proc_tree
            before = {k: ptree.node_for(k).label for k in ptree.keys}
            set_labels = record_set_labels(monkeypatch)
            built: list = []
            real_build = proc_tree.proc_label
            monkeypatch.setattr(proc_tree, "proc_label",
                                lambda entry, now=None: (built.append(entry.proc.pid),
                                                         real_build(entry, now))[1])
            app.show(fake_snapshot())
            await pilot.pause()
            assert set_labels == [] and built == []
            assert all(ptree.node_for(k).label is before[k] for k in before)
            app.show(fake_snapshot_with(4011, cpu_percent=42.0))
            await pilot.pause()
            assert set_labels == [4011] and built == [4011]
            assert "42%" in ptree.node_for(4011).label.plain

    run(body(), 30)


def test_cpu_jitter_keeps_the_row_a_state_change_redraws_it(monkeypatch):
    """Not a picture: a row's CPU figure that moves by a point is not
    redrawn; a move of several points, leaving idle, or any change of state
    (a zombie, a runaway) is, at that very tick."""

    async def body():
        async with injected() as (app, pilot):
            ptree = app.proc_tree
            set_labels = record_set_labels(monkeypatch)

            def tick(cpu: float, **changes) -> str:
                set_labels.clear()
                app.show(fake_snapshot_with(4011, cpu_percent=cpu, **changes))
                return ptree.node_for(4011).label.plain

            tick(0.0)
            await pilot.pause()
            assert "42%" in tick(42.0) and set_labels == [4011]
            assert "42%" in tick(43.4) and set_labels == []  # jitter: the same row
            assert "42%" in tick(40.6) and set_labels == []
            assert "47%" in tick(47.0) and set_labels == [4011]
            assert "47%" in tick(46.6) and set_labels == []
            label = tick(46.6, state="runaway")
            assert set_labels == [4011] and "runaway" in label
            label = tick(46.6, state="exited", bucket="zombie")
            assert set_labels == [4011] and "zombie" in label
            tick(1.2)
            assert "  0%" in tick(0.2) and set_labels == [4011]  # back to idle shows

    run(body(), 30)


def test_detail_pane_redraws_only_when_its_text_changes(monkeypatch):
    """Not a picture: the selected process's "no cpu for" clock moves in
    steps of ten seconds (then minutes), so a blocked process does not
    redraw the pane every tick; a change of state redraws it at once."""
    from tractor_diag.tui.detail import coarse_duration

    assert [coarse_duration(s) for s in (0, 9.9, 10, 19, 20, 59, 60, 3599)] == [
        "<10s", "<10s", "10s", "10s", "20s", "50s", "1m", "59m"]

    async def body():
        async with injected(fake_snapshot()) as (app, pilot):
            app.proc_tree.select_pid(4010)
            await pilot.pause()
            body_ = app.detail._body
            updates: list = []
            real = body_.update
            monkeypatch.setattr(body_, "update",
                                lambda *a, **k: (updates.append(1), real(*a, **k))[1])

            def tick(stuck: float, **changes) -> str:
                updates.clear()
                app.show(fake_snapshot_with(4010, stuck_for=stuck, **changes))
                return app.detail.text

            assert "for 10s" in tick(12.0) and updates == [1]
            for stuck in (13.0, 14.0, 19.5):
                assert "for 10s" in tick(stuck) and updates == []
            assert "for 20s" in tick(21.0) and updates == [1]
            text = tick(21.5, bucket="zombie", state="exited")
            assert updates == [1] and "zombie" in text

    run(body(), 30)


def record_layouts(monkeypatch) -> list:
    """From now on, one entry per full layout of the tree pane's rows."""
    from tractor_diag.tui import proc_tree

    laid: list = []
    real = proc_tree.layout
    monkeypatch.setattr(proc_tree, "layout", lambda *a, **k: (laid.append(1), real(*a, **k))[1])
    return laid


def test_a_tick_that_moves_no_row_lays_out_nothing(monkeypatch):
    """Not a picture: a tick whose processes all read as before (new
    objects, equal values: the sampler's every tick) does no layout and
    touches no node; one whose processes stay in place but read otherwise
    (CPU, state, wchan, name, memory) relabels just those rows, still with
    no layout; a mark drawn stays; a process gone, a regrouping, or a
    minute of age lays the tree out again, and every row reads as a fresh
    layout would draw it."""
    from tractor_diag.tui.proc_tree import layout
    from tractor_diag.tui.waits import Mark

    async def body():
        async with injected(fake_snapshot()) as (app, pilot):
            ptree = app.proc_tree
            laid = record_layouts(monkeypatch)
            set_labels = record_set_labels(monkeypatch)

            def tick(snap: Snapshot) -> None:
                laid.clear()
                set_labels.clear()
                app.show(snap)
                # what a fresh layout would show, row for row
                fresh = layout(snap)
                assert ptree.keys == [r.key for r in fresh]
                assert [ptree.node_for(r.key).label.plain for r in fresh] == [
                    r.label.plain for r in fresh]

            tick(fake_snapshot())
            assert laid == [] and set_labels == []
            tick(fake_snapshot_with(4011, cpu_percent=42.0))
            assert laid == [] and set_labels == [4011]
            assert "42%" in ptree.node_for(4011).label.plain
            tick(fake_snapshot_with(4011, cpu_percent=42.0, state="blocked"))
            assert laid == [] and set_labels == [4011]
            snap = fake_snapshot_with(4011, cpu_percent=42.0, state="blocked")
            snap.entries[4011].proc.wchan = "futex_wait_queue"
            tick(snap)
            assert laid == [] and set_labels == [4011]
            assert "futex_wait_queue" in ptree.node_for(4011).label.plain
            snap = fake_snapshot()
            snap.entries[4010].proc = _actor(4010, 4001, "db_pool2", wchan="hrtimer_nanosleep")
            tick(snap)
            assert laid == [] and set(set_labels) == {4010, 4011}
            assert "db_pool2" in ptree.node_for(4010).label.plain
            snap = fake_snapshot()
            snap.entries[4020].proc.rss = 900 << 20
            tick(snap)
            assert laid == [] and set_labels == [4010, 4020]
            assert "900" in ptree.node_for(4020).label.plain
            ptree.set_marks({4020: Mark(((4002, "waits on"),), ("cycle",), frozenset({0}))})
            tick(fake_snapshot())
            assert laid == [] and ptree.mark_of(4020) is not None
            snap = fake_snapshot()
            snap.taken_at += 30  # no age reads otherwise yet
            tick(snap)
            assert laid == [] and set_labels == []
            snap = fake_snapshot()
            snap.taken_at += 60  # every age moves on a minute: each row relabelled
            callbacks: list = []  # (the base class's set_label posts one per row)
            real_later = ptree.call_later
            monkeypatch.setattr(ptree, "call_later",
                                lambda *a, **k: (callbacks.append(a), real_later(*a, **k))[1])
            tick(snap)
            assert laid == [] and callbacks == [] and "6m" in ptree.node_for(4020).label.plain
            await pilot.pause()
            assert "6m" in ptree.render_line(  # drawn anew
                ptree.node_for(4011).line - ptree.scroll_offset.y).text
            assert set(set_labels) == {k for k in ptree.keys if isinstance(k, int)} - {2900}
            assert "1d01h" in ptree.node_for(2900).label.plain  # (read the same)
            snap = fake_snapshot_with(3501, bucket="stray")  # orphans regrouped
            snap.taken_at += 60
            tick(snap)
            assert laid == [1]
            snap = fake_snapshot()
            snap.taken_at += 60
            del snap.entries[4020]
            snap.entries[4002].children = []
            tick(snap)
            assert laid == [1] and 4020 not in ptree.keys
            await pilot.pause()

    run(body(), 30)


def test_a_row_come_measures_the_rows_without_drawing_them(monkeypatch):
    """Not a picture: a process come or gone rebuilds the tree's line list,
    which measures every row; that renders no label (the base class drew
    each row whole to measure it), and every width is what the drawn row
    measures, marks (lit or not), arrows and collapsed rows included."""
    from textual.widgets import Tree

    from tractor_diag.tui.waits import Mark

    async def body():
        async with injected(fake_snapshot()) as (app, pilot):
            ptree = app.proc_tree
            ptree.set_marks({4020: Mark(((4002, "waits on"),), ("cycle",), frozenset({0})),
                             4002: Mark((), ("hung",), frozenset({0}))})
            ptree.node_for(3500).collapse()
            await pilot.pause()
            rendered: list = []
            real = type(ptree).render_label
            monkeypatch.setattr(type(ptree), "render_label",
                                lambda self, node, *a: (rendered.append(node.data),
                                                        real(self, node, *a))[1])
            snap = fake_snapshot()
            snap.entries[2950] = Entry(proc=_actor(2950, 1, "ghost2", age=900.0), bucket="stray",
                                       state="idle", root=None, depth=0, cpu_percent=0.0)
            snap.strays = sorted([*snap.strays, 2950])
            app.show(snap)
            assert ptree.node_for(2950) is not None
            _ = ptree._tree_lines  # the line list, rebuilt
            assert rendered == []
            for select in (None, 4020):  # unlit, then lit
                if select is not None:
                    ptree.select_pid(select)
                    await pilot.pause()
                monkeypatch.undo()
                for key in ptree.keys:
                    node = ptree.node_for(key)
                    assert ptree.get_label_width(node) == Tree.get_label_width(ptree, node), key

    run(body(), 30)


def test_the_heap_built_by_the_first_frame_is_out_of_the_collectors_view(monkeypatch):
    """Not a picture: a while after the first frame, what the app has built
    (modules, widgets, styles) is frozen out of the garbage collector's
    view, so a full collection no longer walks it; the app's unmount gives
    it back."""
    import gc

    from tractor_diag.tui import app as app_module

    monkeypatch.setattr(app_module, "HEAP_SETTLED", 0.2, raising=False)

    async def body():
        gc.unfreeze()
        try:
            async with injected(fake_snapshot()) as (app, pilot):
                assert gc.get_freeze_count() == 0
                while app.first_frame_at is None:
                    await pilot.pause(0.05)
                await pilot.pause(0.5)
                frozen = gc.get_freeze_count()
                assert frozen > 10_000, frozen
                assert app.heap_frozen
            # given back at unmount: apps run one after another in a process
            # (tests) would otherwise keep each other's cycles, and their
            # file descriptors, for good
            assert gc.get_freeze_count() == 0
        finally:
            gc.unfreeze()

    run(body(), 30)


def test_the_detail_pane_is_not_described_again_for_an_unchanged_tick(monkeypatch):
    """Not a picture: the selected process, its parent and children reading
    as before (the same values in new objects), the pane's text is not built
    again; a change in any of them, or its clock moving a step, builds it
    and shows the change."""
    from tractor_diag.tui import detail

    async def body():
        async with injected(fake_snapshot()) as (app, pilot):
            app.proc_tree.select_pid(4002)  # supervisor: a parent, a child
            await pilot.pause()
            built: list = []
            real = detail.describe
            monkeypatch.setattr(detail, "describe",
                                lambda *a, **k: (built.append(1), real(*a, **k))[1])
            socks: list = []  # the sockets' lines built again
            real_socks = detail.describe_sockets
            monkeypatch.setattr(detail, "describe_sockets",
                                lambda *a, **k: (socks.append(1), real_socks(*a, **k))[1])

            def tick(snap: Snapshot) -> str:
                built.clear()
                app.show(snap)
                assert app.detail.text.startswith(real(snap.entries[4002], snap).plain)
                return app.detail.text

            tick(fake_snapshot())
            assert built == []
            tick(fake_snapshot_with(4002, stuck_for=245.0))  # still "4m"
            assert built == []
            assert "for 5m" in tick(fake_snapshot_with(4002, stuck_for=300.0))
            assert built == [1]
            snap = fake_snapshot()
            snap.entries[4002].proc.vol_ctx = 121
            assert "121 voluntary" in tick(snap) and built == [1]
            assert "zombie" in tick(fake_snapshot_with(4020, bucket="zombie", state="exited"))
            assert built == [1]
            snap = fake_snapshot()
            snap.entries[4000].proc.cmdline = ["python", "-m", "other.main"]
            assert "other.main" in tick(snap) and built == [1]
            snap = fake_snapshot()
            snap.taken_at += 60
            assert "6m ago" in tick(snap) and built == [1]
            tick(snap)
            assert built == [] and socks == []
            app.show_sockets(4002, [Sock("unix", "listening", f"{BINDSPACE}/sup@4002.sock")])
            assert socks == [1] and "sup@4002.sock" in tick(snap) and socks == [1]
            await pilot.pause()

    run(body(), 30)


def test_a_change_below_the_screen_redraws_no_line_on_it(monkeypatch):
    """Not a picture: a stray that comes or goes below the lines on screen
    (a long tree above it) draws none of them again (the cursor's row
    aside: the tree re-selects it), and what stays on
    screen is what a fresh drawing shows; a process added among the shown
    lines redraws them."""

    def big(extra_stray: bool = False, extra_leaf: bool = False) -> Snapshot:
        snap = fake_snapshot()
        gateway = snap.entries[4001]
        for pid in range(5000, 5080):  # 80 more rows under gateway
            snap.entries[pid] = Entry(proc=_actor(pid, 4001, f"w{pid}"), bucket="live",
                                      state="idle", root=4000, depth=2, cpu_percent=0.0)
            gateway.children.append(pid)
        if extra_leaf:  # shown near the top
            snap.entries[4012] = Entry(proc=_actor(4012, 4001, "cache2"), bucket="live",
                                       state="idle", root=4000, depth=2, cpu_percent=0.0)
            gateway.children.insert(2, 4012)
        if extra_stray:
            snap.entries[2950] = Entry(proc=_actor(2950, 1, "ghost2", age=900.0), bucket="stray",
                                       state="idle", root=None, depth=0, cpu_percent=0.0)
            snap.strays = sorted([*snap.strays, 2950])
        return snap

    async def body():
        async with injected(big()) as (app, pilot):
            ptree = app.proc_tree
            ptree.select_pid(4010)
            await pilot.pause()
            ptree.scroll_end(animate=False)  # the bottom lines drawn once
            await pilot.pause()
            ptree.scroll_home(animate=False)
            app.show(big())
            await pilot.pause(0.5)  # settled: focus and the styles it brings
            height = ptree.size.height
            assert len(ptree.keys) > 2 * height
            drawn: list = []  # lines drawn (not measured for the width)
            real = type(ptree).render_label

            def render_label(self, node, *a):
                if sys._getframe(1).f_code.co_name == "_render_line":
                    drawn.append(node.data)
                return real(self, node, *a)

            monkeypatch.setattr(type(ptree), "render_label", render_label)
            composed: list = []  # lines of the pane composed again for the screen
            real_line = type(ptree).render_line

            def render_line(self, y):
                composed.append(y)
                return real_line(self, y)

            monkeypatch.setattr(type(ptree), "render_line", render_line)

            def screen() -> list[str]:
                return [ptree.render_line(y).text for y in range(height)]

            for snap in (big(extra_stray=True), big()):  # a stray comes, then goes
                drawn.clear()
                composed.clear()
                app.show(snap)
                await pilot.pause()
                assert set(drawn) <= {4010}, drawn  # the cursor's row at most
                # nor is the pane repainted: its lines are not composed again
                assert len(composed) <= 1, composed
                assert (2950 in ptree.keys) == (2950 in snap.entries)
                kept = screen()
                ptree._line_cache.clear()
                assert screen() == kept  # what stayed is what a fresh drawing shows
                # the bottom, drawn before the change, is drawn as it is now
                ptree.scroll_end(animate=False)
                await pilot.pause()
                bottom = screen()
                ptree._line_cache.clear()
                assert screen() == bottom
                assert any("ghost2" in line for line in bottom) == (2950 in snap.entries)
                ptree.scroll_home(animate=False)
                await pilot.pause()
            drawn.clear()
            app.show(big(extra_leaf=True))
            await pilot.pause()
            assert 4012 in drawn and len(drawn) >= height // 2
            assert any("cache2" in line for line in screen())
            assert ptree.selected_pid == 4010

    run(body(), 30)


def test_messages_from_trio_during_teardown_are_dropped():
    """Not a picture either: trio keeps posting until its guest run stops,
    which is after the panes may be gone. A sample, output, an exit and a
    finished action arriving then must not raise (the app would end with a
    NoMatches traceback instead of a clean exit), and the child's exit code
    is still kept."""

    async def body():
        async with injected(fake_snapshot()) as (app, pilot):
            app.child_pid = 4000
            await app.default_screen.query_one(ProcTree).remove()
            await pilot.pause()
            app.post_message(Sampled(fake_snapshot(), fake_events()))
            app.post_message(Output("stdout", ["late line"]))
            app.post_message(Exited(4000, 3))
            app.post_message(SocketsRead(4010, []))
            await pilot.pause()
            await pilot.pause()
            assert app.child_code == 3

    run(body(), 30)
