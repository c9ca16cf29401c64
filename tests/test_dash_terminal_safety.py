"""The dashboard shows what hostile processes chose escaped, never raw.

The real app under ``App.run_test()`` against the real hostile process of
``trees/hostile.py`` (title, zombie comm, frame file and function names,
thread and task names) and a launched program that prints OSC 52, OSC 0
and a C1 CSI. Checked on what Textual actually rendered: the tree labels,
the detail pane after ``s`` and ``t``, the events pane, the log pane and a
screenshot of the whole screen.
"""
from __future__ import annotations

import sys

from tractor_diag.tui.app import DashApp

from _dash_helpers import key_result, run, until
from test_terminal_safety import ACTOR_SHOWN, SHOWN, hostile  # noqa: F401 (fixture)

SIZE = (200, 50)
FAST = 0.3


def raw_controls(text: str) -> list[str]:
    return sorted({hex(ord(c)) for c in text
                   if (ord(c) < 0x20 and c != "\n") or 0x7F <= ord(c) <= 0x9F})


def screen_svg(app) -> str:
    """What Textual drew, as its own SVG export of the screen."""
    svg = app.export_screenshot()
    assert not raw_controls(svg), raw_controls(svg)
    return svg


def test_tree_detail_stacks_and_tasks_are_escaped(hostile):  # noqa: F811
    async def body():
        app = DashApp([str(hostile.pid)], interval=FAST)
        async with app.run_test(size=SIZE) as pilot:
            await until(lambda: {hostile.pid, hostile.zombie} <= set(app.proc_tree.keys), 20,
                        pilot=pilot, what="hostile tree shown")
            label = app.proc_tree.node_for(hostile.pid).label.plain
            assert ACTOR_SHOWN in label and not raw_controls(label), label
            zlabel = app.proc_tree.node_for(hostile.zombie).label.plain
            assert "[\\x1b[2J\\x1b]0;z\\x07]" in zlabel and not raw_controls(zlabel), zlabel

            _, stacks = await key_result(app, pilot, hostile.pid, "s", "stacks", 30,
                                         "py-spy result")
            _, tasks = await key_result(app, pilot, hostile.pid, "t", "tasks", 30, "task tree")
            await pilot.pause()
            stacks, tasks = stacks.plain, tasks.plain
            detail = app.detail.text
            for text in (stacks, tasks, detail):
                assert not raw_controls(text), (raw_controls(text), text)
            if "no Python stack" not in stacks:  # py-spy may not attach on every box
                assert f"fn{SHOWN}" in stacks                  # frame function name
                assert "ev\\x1b]0;file\\x07\\x1b[2J\\nil.py" in stacks  # frame file name
                assert f"th{SHOWN}" in stacks                  # thread name
            assert f"task{SHOWN}" in tasks
            assert ACTOR_SHOWN in detail
            events = app.events_pane.text
            assert not raw_controls(events)
            # what reached the screen: every rendered line of the panes, and the whole screen
            rendered = "".join(strip.text for strip in app.events_pane.lines)
            assert not raw_controls(rendered)
            svg = screen_svg(app)
            assert "\\x1b[2J" in svg.replace("&#160;", " ")

            # the signal dialog names the process in its title
            from textual.widgets import Label

            from tractor_diag.tui.dialogs import SignalScreen

            await pilot.press("k")
            await until(lambda: isinstance(app.screen, SignalScreen), 5, pilot=pilot)
            title = str(app.screen.query_one("#dialog-title", Label).render())
            assert ACTOR_SHOWN in title and not raw_controls(title), title
            screen_svg(app)
            await pilot.press("escape")

    run(body(), timeout=120)


PRINTS = ("import sys, time\n"
          "print('hi \\x1b]52;c;cHduZWQ=\\x07 osc0 \\x1b]0;owned\\x07 c1 \\x9b2J bye', flush=True)\n"
          "print('done', flush=True)\n"
          "time.sleep(60)\n")


def test_launched_programs_output_is_escaped_in_the_log(tmp_path):
    prog = tmp_path / "loud.py"
    prog.write_text(PRINTS)

    async def body():
        app = DashApp(launch=[sys.executable, str(prog)], interval=FAST, grace=1.0)
        async with app.run_test(size=SIZE) as pilot:
            await until(lambda: "done" in app.log_pane.text, 20, pilot=pilot, what="output")
            await pilot.press("l")   # the log tab: RichLog renders what is shown
            await pilot.pause(0.2)
            rendered = "\n".join(strip.text for strip in app.log_pane.lines)
            assert "hi" in rendered and "bye" in rendered, rendered
            assert not raw_controls(rendered), (raw_controls(rendered), rendered)
            # Rich drops the ESC ] of the OSCs (the rest is inert text); the C1
            # CSI it keeps is shown escaped
            assert "\\x9b2J" in rendered
            screen_svg(app)

    run(body(), timeout=60)
