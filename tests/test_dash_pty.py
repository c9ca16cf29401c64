"""The dashboard as a real program in a real pty: launch a hung actor tree,
resize, quit; the tree must be gone and the terminal restored."""
from __future__ import annotations

import os
import re
import shlex
import sys
import time

import pexpect
import pytest

from _dash_helpers import DEMO_TREE, alive, descendants_of, kill_all


def test_dash_launch_resize_quit_in_a_pty(xdg_runtime_dir):
    dash = [sys.executable, "-m", "tractor_diag", "dash", "--interval", "0.5", "--grace", "1",
            "--", *DEMO_TREE]
    script = (f"stty -a; echo STTY-BEFORE-END; {shlex.join(dash)}; echo RC=$?; "
              f"stty -a; echo DONE")
    env = dict(os.environ, TERM="xterm-256color")
    for var in ("NO_COLOR", "COLUMNS", "LINES"):  # COLUMNS/LINES would pin the size
        env.pop(var, None)
    child = pexpect.spawn("bash", ["--noprofile", "--norc", "-c", script], env=env,
                          dimensions=(40, 140), encoding="utf-8", codec_errors="replace",
                          timeout=30)
    seen: set[int] = set()
    try:
        child.expect("STTY-BEFORE-END")
        before = child.before
        # the screen shows the launched tree's actors (in whatever order
        # the tree sorts them)
        screen = ""
        deadline = time.monotonic() + 30
        while not all(n in screen for n in ("db_pool", "stubborn", "flaky_parent")):
            assert time.monotonic() < deadline, screen[-2000:]
            try:
                screen += child.read_nonblocking(65536, timeout=1)
            except pexpect.TIMEOUT:
                pass
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(seen) < 10:
            seen.update(descendants_of(child.pid))
            time.sleep(0.1)
        assert len(seen) >= 10, "dash + root + 8 sub-actors expected"

        # SIGWINCH: the app must redraw at the new size: the footer moves up
        # to row 30, and nothing is drawn past column 100 from then on.
        child.setwinsize(30, 100)
        footer_on_30 = re.compile(r"\x1b\[30;\d+H(?:(?!\x1b\[\d+;\d+H).)*Stacks", re.S)
        screen = ""
        deadline = time.monotonic() + 15
        while not footer_on_30.search(screen):
            assert time.monotonic() < deadline, screen[-2000:]
            try:
                screen += child.read_nonblocking(65536, timeout=1)
            except pexpect.TIMEOUT:
                pass
        later = ""
        deadline = time.monotonic() + 1.5  # a few more ticks of repaint
        while time.monotonic() < deadline:
            try:
                later += child.read_nonblocking(65536, timeout=0.3)
            except pexpect.TIMEOUT:
                pass
        assert not re.search(r"\x1b\[\d+;1(0[1-9]|[1-9]\d)H", later), "drew past column 100"
        assert child.isalive()

        child.send("q")
        child.expect(r"RC=(\d+)", timeout=30)
        rc = int(child.match.group(1))
        quit_output = child.before
        child.expect("DONE", timeout=10)
        after = child.before
        child.expect(pexpect.EOF, timeout=10)
    finally:
        if child.isalive():
            child.terminate(force=True)
        seen.update(descendants_of(child.pid))
        kill_all(p for p in seen if alive(p))
    assert rc == 0, quit_output[-2000:]
    assert "was running at quit: stopped its tree (SIGINT, then SIGKILL)" in quit_output
    # the alternate screen was left and the cursor shown again
    assert "\x1b[?1049l" in quit_output
    assert "\x1b[?25h" in quit_output
    # the terminal is back in the mode it had before: canonical input, echo on
    modes = lambda text: {w for w in text.split() if w.lstrip("-") in ("icanon", "echo", "isig")}
    assert modes(after) == modes(before) == {"icanon", "echo", "isig"}
    gone = [p for p in seen if alive(p)]
    assert not gone, f"processes of the launched tree survived quit: {gone}"
