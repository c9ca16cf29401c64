"""What the dashboard does before its first frame (issue 12: first frame
<= 1.5 s on a loaded box): nothing drawn before there is a tree to show, the
key footer built once, pid roots checked without a pass over the box, no
garbage collection, and trio imported only after that frame."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time

from textual.widgets import Footer

from tractor_diag import procfs, trees
from tractor_diag.cli import run_verb
from tractor_diag.tui.app import DashApp

from _dash_helpers import run, until, wait_for_pids

SIZE = (160, 48)


class _Watched(DashApp):
    """The dashboard, noting how many samples it had shown when it first
    drew the screen."""

    CSS_PATH = os.path.join(os.path.dirname(sys.modules[DashApp.__module__].__file__),
                            DashApp.CSS_PATH)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.shown_at_first_paint: int | None = None

    def _display(self, screen, renderable) -> None:
        if renderable is not None and not self._batch_count and self.shown_at_first_paint is None:
            self.shown_at_first_paint = self.samples_shown
        super()._display(screen, renderable)


def _start(tree, monkeypatch) -> dict:
    """Start the dashboard on ``tree`` until its first frame: what it had
    drawn by then."""
    builds = []
    real = Footer.recompose

    async def counted(self):
        builds.append(self.app.first_frame_at)
        return await real(self)

    monkeypatch.setattr(Footer, "recompose", counted)
    got = {}

    async def body():
        app = _Watched([str(tree.root)], interval=0.5)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for_pids(app, pilot, tree.pids(), 30)
            await until(lambda: app.first_frame_at is not None, 10, pilot=pilot,
                        what="the first frame")
            got["shown_at_first_paint"] = app.shown_at_first_paint
            got["builds"] = [b for b in builds if b is None]
            got["keys"] = " ".join(str(k.description) for k in app.query("FooterKey"))

    run(body(), 60)
    return got


def test_the_first_frame_drawn_already_shows_the_tree(sleep_tree, monkeypatch):
    # empty panes drawn, then drawn again with the tree, cost as much CPU as
    # the first sample itself
    assert _start(sleep_tree(), monkeypatch)["shown_at_first_paint"] == 1


def test_the_key_footer_is_built_once_before_the_first_frame(sleep_tree, monkeypatch):
    # the same keys every time the screen said its bindings may have
    # changed (each focus change): one build, not one per change
    got = _start(sleep_tree(), monkeypatch)
    assert len(got["builds"]) == 1, got["builds"]
    assert "Quit" in got["keys"] and "Stacks" in got["keys"]


def test_pid_roots_are_checked_without_a_pass_over_every_process(monkeypatch):
    """`dash PID` checks that the pid exists before it starts (one clear line
    if not): reading /proc/PID does that; a snapshot of the whole box did it
    at a tenth of the CPU the dashboard spends before its first frame."""
    def no_pass(*args, **kwargs):
        raise AssertionError("a pass over every process")

    monkeypatch.setattr(procfs, "scan", no_pass)
    monkeypatch.setattr(trees, "take_snapshot", no_pass)

    def verb(*argv):
        out, err = io.StringIO(), io.StringIO()
        return run_verb(["dash", *argv], out=out, err=err), err.getvalue()

    # gets as far as the terminal check (pytest's stdin is no tty)
    rc, err = verb(str(os.getpid()))
    assert rc == 1 and "needs a terminal" in err, err
    rc, err = verb(str(os.getpid()), "999999999")
    assert rc == 1 and "needs a terminal" in err, err
    rc, err = verb("999999999")
    assert rc == 1 and err.strip().endswith("no such process: 999999999"), err


def test_a_thread_id_is_no_root():
    """A thread's id has a /proc entry too; as before, it names no root."""
    import threading

    got = {}
    started, done = threading.Event(), threading.Event()

    def park() -> None:
        got["tid"] = threading.get_native_id()
        started.set()
        done.wait(10)

    t = threading.Thread(target=park)
    t.start()
    try:
        assert started.wait(10)
        out, err = io.StringIO(), io.StringIO()
        rc = run_verb(["dash", str(got["tid"])], out=out, err=err)
        assert rc == 1 and f"no such process: {got['tid']}" in err.getvalue(), err.getvalue()
    finally:
        done.set()
        t.join()


_TRIO_AT_FIRST_PAINT = r"""
import asyncio, json, os, sys, time
from tractor_diag.tui.app import DashApp

class Watched(DashApp):
    CSS_PATH = os.path.join(os.path.dirname(sys.modules[DashApp.__module__].__file__),
                            DashApp.CSS_PATH)
    trio_at_paint = None
    shown_at = []

    def _display(self, screen, renderable):
        if renderable is not None and not self._batch_count and self.trio_at_paint is None:
            self.trio_at_paint = "trio" in sys.modules
        super()._display(screen, renderable)

    def show(self, snap, events=()):
        self.shown_at.append(time.monotonic())
        super().show(snap, events)

async def main():
    app = Watched([sys.argv[1]], interval=0.5)
    async with app.run_test(size=(160, 48)) as pilot:
        while len(app.shown_at) < 3:
            await pilot.pause(0.05)
    gaps = [b - a for a, b in zip(app.shown_at, app.shown_at[1:])]
    print(json.dumps({"trio_at_paint": app.trio_at_paint, "gaps": gaps}))

asyncio.run(asyncio.wait_for(main(), 60))
"""


def test_trio_is_imported_after_the_first_frame(sleep_tree):
    """Attached, the first sample is taken and drawn before trio (a fifth of
    the CPU to the first frame) is imported; then trio's guest run takes
    the sampling over at the usual interval."""
    tree = sleep_tree()
    ran = subprocess.run([sys.executable, "-c", _TRIO_AT_FIRST_PAINT, str(tree.root)],
                         capture_output=True, text=True, timeout=90)
    assert ran.returncode == 0, ran.stderr[-3000:]
    got = json.loads(ran.stdout.splitlines()[-1])
    assert got["trio_at_paint"] is False, got
    # the samples after the first come from trio's loop, an interval apart
    # (not the second at once, when trio has started)
    assert all(gap > 0.35 for gap in got["gaps"]), got


_COLLECTOR_LOG = r"""
import gc, json, sys
real = gc.enable

def enable():
    # what the collector did until the dashboard turns it back on
    with open(sys.argv[2], "a") as f:
        f.write(json.dumps({"enabled": gc.isenabled(),
                            "collections": [s["collections"] for s in gc.get_stats()]}) + "\n")
    real()

gc.enable = enable
from tractor_diag import cli
sys.exit(cli.main(["dash", sys.argv[1]]))
"""


def test_no_garbage_collection_until_the_first_frame(sleep_tree, tmp_path):
    """Start-up allocates a great many objects that all live on, and the
    collector walked them some 200 times before the first frame: it is off
    from the dashboard's imports to its first frame, and on after it."""
    import pexpect

    tree = sleep_tree()
    log = tmp_path / "gc.jsonl"
    env = dict(os.environ, TERM="xterm-256color")
    child = pexpect.spawn(sys.executable, ["-c", _COLLECTOR_LOG, str(tree.root), str(log)],
                          env=env, dimensions=(40, 140), encoding="utf-8",
                          codec_errors="replace", timeout=30)
    try:
        child.expect("sleep")  # the tree is drawn
        deadline = time.monotonic() + 10
        while not log.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        child.send("q")
        child.expect(pexpect.EOF, timeout=20)
    finally:
        if child.isalive():
            child.terminate(force=True)
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    assert calls, "the collector was never turned back on"
    first = calls[0]
    assert first["enabled"] is False, first
    # no full collection: one walks every object the start-up made
    assert first["collections"][2] == 0, first
    import gc

    assert gc.isenabled()
