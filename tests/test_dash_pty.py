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

from _dash_helpers import (
    DEMO_TREE, alive, alive_pinned, descendants_of, kill_pinned, pin_all,
)


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
    pinned: dict[int, int] = {}  # what this test started: pid -> start time
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
        while time.monotonic() < deadline and len(pinned) < 9:
            pinned.update(pin_all(descendants_of(child.pid)))
            time.sleep(0.1)
        # dash, the root and 7 live actors (the 8th is a zombie: not pinned)
        assert len(pinned) >= 9, pinned

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
        gone = alive_pinned(pinned)  # before any clean-up of ours
    finally:
        if child.isalive():
            child.terminate(force=True)
        kill_pinned(pinned)
    # the launched root ends on SIGINT or, stubborn, on SIGKILL: its status
    assert rc in (130, 137), quit_output[-2000:]
    assert "was running at quit: stopped its tree (SIGINT, then SIGKILL" in quit_output
    # the alternate screen was left and the cursor shown again
    assert "\x1b[?1049l" in quit_output
    assert "\x1b[?25h" in quit_output
    # the terminal is back in the mode it had before: canonical input, echo on
    modes = lambda text: {w for w in text.split() if w.lstrip("-") in ("icanon", "echo", "isig")}
    assert modes(after) == modes(before) == {"icanon", "echo", "isig"}
    assert not gone, f"processes of the launched tree survived quit: {gone}"


def _dash_in_pty(command: list[str], *options: str, rows: int = 30, cols: int = 120):
    import ptyprocess

    env = dict(os.environ, TERM="xterm-256color")
    for var in ("NO_COLOR", "COLUMNS", "LINES"):
        env.pop(var, None)
    argv = [sys.executable, "-m", "tractor_diag", "dash", "--interval", "0.3", "--grace", "1",
            *options, "--", *command]
    return ptyprocess.PtyProcess.spawn(argv, env=env, dimensions=(rows, cols))


def _read_until(proc, needle: str, timeout: float) -> str:
    screen = ""
    deadline = time.monotonic() + timeout
    while needle not in screen:
        assert time.monotonic() < deadline, f"no {needle!r} on screen: {screen[-1500:]!r}"
        try:
            screen += proc.read(65536).decode(errors="replace")
        except EOFError:
            break
    return screen


@pytest.mark.parametrize("command, code", [
    (["sh", "-c", "exit 3"], 3),
    (["sh", "-c", "kill -TERM $$"], 128 + 15),
])
def test_dash_exits_with_the_launched_programs_status(command, code):
    dash = [sys.executable, "-m", "tractor_diag", "dash", "--interval", "0.3", "--", *command]
    env = dict(os.environ, TERM="xterm-256color")
    child = pexpect.spawn("bash", ["--noprofile", "--norc", "-c", f"{shlex.join(dash)}; echo RC=$?"],
                          env=env, dimensions=(30, 120), encoding="utf-8",
                          codec_errors="replace", timeout=30)
    try:
        child.expect("exited")  # the status bar says so
        child.send("q")
        child.expect(r"RC=(\d+)", timeout=30)
        assert int(child.match.group(1)) == code, child.before[-1500:]
    finally:
        if child.isalive():
            child.terminate(force=True)


TREE = ("import subprocess, sys, time\n"
        "kid = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        "print('READY', flush=True)\n"
        "time.sleep(600)\n")


def test_dash_stops_its_tree_and_exits_when_its_terminal_goes_away():
    """The terminal closes under the dashboard (a tmux window killed): it must
    stop the launched tree and exit, not hang in its writer thread."""
    proc = _dash_in_pty([sys.executable, "-c", TREE])
    pinned: dict[int, int] = {}
    try:
        _read_until(proc, "running", 30)
        deadline = time.monotonic() + 15
        while len(pinned) < 3 and time.monotonic() < deadline:  # dash, the program, its child
            pinned.update(pin_all([proc.pid, *descendants_of(proc.pid)]))
            time.sleep(0.1)
        assert len(pinned) >= 3, pinned
        os.close(proc.fd)  # the terminal is gone
        deadline = time.monotonic() + 20
        while alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = alive_pinned(pinned)  # before any clean-up of ours
    finally:
        kill_pinned(pinned)
        try:
            os.waitpid(proc.pid, 0)
        except ChildProcessError:
            pass
    assert proc.pid not in left, "the dashboard hung after its terminal went away"
    assert not left, f"the launched tree survived: {left}"
