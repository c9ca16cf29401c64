"""The watch repaint engine: frame layout (pure) and `tractor-diag watch`
driven in a real pty against a real released tractor tree."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pexpect
import pytest

from tractor_diag import watch as screen

from _xonsh_helpers import REPO, TRACTOR_DIAG, Screen, read_for

ALT_ON, ALT_OFF = b"\x1b[?1049h", b"\x1b[?1049l"
SHOW, HIDE = b"\x1b[?25h", b"\x1b[?25l"


# -- layout ------------------------------------------------------------------

def paint(scr: Screen, lines: list[str]) -> None:
    scr.feed(screen.compose(lines, scr.cols, scr.rows).encode())


def test_repaint_leaves_no_stale_tails():
    scr = Screen(40, 8)
    scr.feed(ALT_ON)
    paint(scr, ["header", "a long line that fills most of it", "second", "third", "fourth"])
    paint(scr, ["header", "short", "2"])
    assert scr.lines() == ["header", "short", "2", "", "", "", "", ""]


def test_compose_never_clears_the_screen_and_erases_per_line():
    out = screen.compose(["one", "two"], 20, 5)
    assert out.startswith(screen.HOME)
    assert screen.CLEAR not in out
    assert out == "\x1b[Hone\x1b[K\r\ntwo\x1b[K\r\n\x1b[J"


def test_full_screen_frame_does_not_scroll_or_eat_the_last_column():
    scr = Screen(5, 3)
    scr.feed(ALT_ON + b"\x1b[?7l")
    paint(scr, ["abcde", "fghij", "klmno"])
    assert scr.lines() == ["abcde", "fghij", "klmno"]
    out = screen.compose(["abcde", "fghij", "klmno"], 5, 3)
    assert not out.endswith("\r\n") and screen.ERASE_DOWN not in out


def test_clip_counts_visible_columns_and_keeps_colour():
    red = "\x1b[31mred text\x1b[0m and more"
    text, used = screen.clip(red, 5)
    assert used == 5
    assert text == "\x1b[31mred t\x1b[0m"
    assert screen.clip("日本語です", 5) == ("日本", 4)
    assert screen.clip("plain", 10) == ("plain", 5)


def test_sanitize_drops_cursor_movement_but_keeps_colour():
    line = "a\x1b[2Jb\x1b[10;3Hc\x1b]0;title\x07d\x1b7e\x1b[32mf\x1b[0m\tg\x00h"
    assert screen.sanitize(line) == "abcde\x1b[32mf\x1b[0m  g\\x00h"
    assert screen.sanitize("progress 10%\rprogress 90%") == "progress 90%"
    assert screen.sanitize("crlf line\r") == "crlf line"
    # C1 CSI (U+009B) and a smuggled byte: visible, not raw
    assert screen.sanitize("x\x9b2Jy\udcff") == "x\\x9b2Jy\\xff"
    assert "\\x1b]52" in screen.header_line(2, "ptree \x1b]52;c;eA==\x07", 0, 0, 80)


def test_fit_says_how_much_is_hidden():
    body = [f"line {i}" for i in range(50)]
    lines = screen.fit("head", body, rows=10)
    assert len(lines) == 10
    assert lines[:2] == ["head", "line 0"]
    assert lines[-2] == "line 7" and "42 more lines" in lines[-1]
    assert screen.fit("head", ["x"], rows=10) == ["head", "x"]


def test_header_shows_the_exit_code_only_on_failure():
    when = time.time()
    ok = screen.header_line(2.0, "tractor-diag ptree 1", 0, when, 80)
    bad = screen.header_line(2.0, "tractor-diag ptree 1", 3, when, 80)
    assert ok.startswith("Every 2s: tractor-diag ptree 1") and "exit" not in ok
    assert "exit 3" in bad and len(bad) <= 80
    narrow = screen.header_line(0.5, "x" * 200, 1, when, 40)
    assert screen.visible_width(narrow) <= 40 and "exit 1" in narrow and "…" in narrow


def test_interval_must_be_sane():
    from tractor_diag.errors import UsageError

    assert screen.check_interval(0.1) == 0.1
    for bad in (0, -1, 0.05, float("nan")):
        with pytest.raises(UsageError):
            screen.check_interval(bad)


# -- the CLI in a real pty -----------------------------------------------------

@pytest.fixture
def tree(released_tree):
    """root -> leaf_0, leaf_1: released-runtime `tractor._child` actors."""
    return released_tree(depth=1, breadth=2, hang="none")


def spawn(args: list[str], cols: int = 100, rows: int = 30, **kw) -> pexpect.spawn:
    env = dict(os.environ, TERM="xterm")
    for key in ("NO_COLOR", "COLUMNS", "LINES"):
        env.pop(key, None)
    return pexpect.spawn(args[0], args[1:], dimensions=(rows, cols), env=env,
                         timeout=20, cwd=str(REPO), **kw)


def finish(child: pexpect.spawn) -> bytes:
    child.expect(pexpect.EOF)
    rest = child.before
    child.close()
    return rest


def test_cli_watch_repaints_resizes_and_restores(tree):
    leaf = tree.actors()["leaf_1"]
    child = spawn([str(TRACTOR_DIAG), "watch", "-n", "0.2", "ptree", str(tree.root)], cols=100, rows=30)
    scr = Screen(100, 30)
    try:
        child.expect_exact(ALT_ON)
        data = ALT_ON + read_for(child, 1.2)
        scr.feed(data)
        assert data.count(b"Every 0.2s: tractor-diag ptree") >= 3, "frames are repainted"
        assert data.count(b"\x1b[2J") == 1, "no clear between frames"
        assert HIDE in data
        assert scr.in_alt and not scr.cursor_visible
        shown = scr.text()
        assert shown.startswith("Every 0.2s: tractor-diag ptree")
        assert str(leaf) in shown and "leaf_1" in shown

        child.setwinsize(20, 50)
        scr.resize(50, 20)
        data = read_for(child, 0.5)
        assert b"\x1b[2J" in data, "a resize redraws the whole screen"
        scr.feed(data)
        lines = scr.lines()
        assert lines[0].startswith("Every 0.2s:")
        assert all(len(ln) <= 50 for ln in lines)
        assert str(leaf) in scr.text()

        child.sendintr()
        rest = finish(child)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    tail = rest[max(0, rest.rfind(ALT_OFF) - 40):]
    assert rest.rstrip().endswith(ALT_OFF), "nothing is drawn after leaving the alternate screen"
    assert SHOW in tail and b"\x1b[?7h" in tail
    scr.feed(rest)
    assert not scr.in_alt and scr.cursor_visible


def test_resize_redraws_at_once_not_at_the_next_tick():
    # a one-line frame (an error), so it ends with an erase-down
    child = spawn([str(TRACTOR_DIAG), "watch", "-n", "60", "ptree", "99999999"], cols=90, rows=20)
    try:
        child.expect_exact(b"Every 60s")
        child.expect_exact(b"\x1b[J")  # the end of the first frame
        took = []
        for rows, cols in ((25, 70), (18, 60), (30, 100)):
            child.setwinsize(rows, cols)
            started = time.monotonic()
            child.expect_exact(b"\x1b[2J", timeout=15)
            took.append(time.monotonic() - started)
            child.expect_exact(b"\x1b[J")
        child.sendintr()
        finish(child)
    finally:
        child.close(force=True)
    # The next tick is a minute away; generous bound for a loaded machine.
    assert max(took) < 5, f"resizes were redrawn after {took}"


def test_cli_watch_shows_a_failing_verbs_exit_code():
    child = spawn([str(TRACTOR_DIAG), "watch", "-n", "0.2", "ptree", "99999999"], cols=90, rows=10)
    scr = Screen(90, 10)
    try:
        child.expect_exact(ALT_ON)
        scr.feed(ALT_ON + read_for(child, 0.7))
        first = scr.lines()[0]
        assert "exit 1" in first
        assert "no such process: 99999999" in scr.text()
        child.send("q")
        finish(child)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0


def test_cli_watch_restores_tty_mode():
    """Run between two `stty -g` in one shell: the mode before and after match."""
    # bash -c goes on after a child that handled SIGINT and exited normally
    script = f"stty -g; {TRACTOR_DIAG} watch -n 0.2 ptree 1; echo rc=$?; stty -g; echo END"
    child = spawn(["/bin/bash", "-c", script], cols=80, rows=12)
    try:
        before = child.readline().strip()
        child.expect_exact(ALT_ON)
        read_for(child, 0.5)
        child.sendintr()
        child.expect(r"rc=(\d+)")
        rc = int(child.match.group(1))
        child.expect(r"\n([^\r\n]+)\r?\n")
        after = child.match.group(1).strip()
        child.expect_exact("END")
    finally:
        child.close(force=True)
    assert rc == 0
    assert before == after and b":" in before


def test_cli_watch_usage_errors_come_before_the_screen():
    for args, needle in (
        (["ptree", "--bogus"], b"unrecognized arguments: --bogus"),
        (["-n", "0.01", "ptree"], b"at least 0.1"),
        (["nosuchverb"], b"unknown verb 'nosuchverb'"),
        (["watch", "ptree"], b"cannot watch itself"),
    ):
        child = spawn([str(TRACTOR_DIAG), "watch", *args])
        out = finish(child)
        assert child.exitstatus == 2, (args, out)
        assert needle in out and ALT_ON not in out and b"Traceback" not in out


def test_cli_watch_refuses_a_pipe():
    res = subprocess.run([str(TRACTOR_DIAG), "watch", "ptree", "1"], capture_output=True,
                         text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert res.returncode == 2
    assert res.stdout == ""
    assert res.stderr.count("\n") == 1 and "tty" in res.stderr


PROBE = textwrap.dedent("""
    import signal, sys
    from tractor_diag import watch as screen

    def mine(signum, frame):
        pass

    signal.signal(signal.SIGWINCH, mine)
    signal.signal(signal.SIGTERM, mine)
    runs = []

    def produce():
        runs.append(1)
        return screen.Frame("frame %d\\n" % len(runs), 0)

    rc = screen.run(produce, interval=0.2, command="probe", out_fd=1, in_fd=0)
    print("RESULT", rc, signal.getsignal(signal.SIGWINCH) is mine,
          signal.getsignal(signal.SIGTERM) is mine,
          signal.getsignal(signal.SIGINT) is signal.default_int_handler,
          signal.getsignal(signal.SIGTSTP) == signal.SIG_DFL, len(runs) >= 2)
""")


@pytest.mark.parametrize("how", ["ctrl-c", "q"])
def test_engine_restores_previous_signal_handlers(how):
    child = spawn([sys.executable, "-c", PROBE], cols=60, rows=10)
    try:
        child.expect_exact(ALT_ON)
        child.expect_exact(b"frame 2")
        child.setwinsize(12, 70)  # a SIGWINCH on the way, handled by the engine
        child.expect_exact(b"\x1b[2J")
        if how == "ctrl-c":
            child.sendintr()
        else:
            child.send("q")
        child.expect(r"RESULT (\d+) (\w+) (\w+) (\w+) (\w+) (\w+)")
        got = [g.decode() for g in child.match.groups()]
    finally:
        child.close(force=True)
    assert got == ["0", "True", "True", "True", "True", "True"]


def test_engine_sigterm_restores_the_terminal():
    child = spawn([sys.executable, "-c", PROBE.replace("signal.signal(signal.SIGTERM, mine)\n", "")])
    try:
        child.expect_exact(b"frame 1")
        os.kill(child.pid, signal.SIGTERM)
        child.expect(r"RESULT (\d+)")
        rc = int(child.match.group(1))
        before = child.before
    finally:
        child.close(force=True)
    assert rc == 128 + signal.SIGTERM
    assert ALT_OFF in before and SHOW in before


def test_ctrl_z_gives_the_screen_back_and_fg_repaints():
    """Under a job-control shell: Ctrl-Z leaves the alternate screen and
    stops; `fg` re-enters it and repaints."""
    child = spawn(["/bin/bash", "--norc", "--noprofile", "-i"], cols=80, rows=15)
    try:
        child.sendline("PS1='PROMPT> '")
        child.expect_exact("PROMPT> ")
        child.expect_exact("PROMPT> ")
        child.sendline(f"{TRACTOR_DIAG} watch -n 0.3 ptree 1")
        child.expect_exact(ALT_ON)
        child.expect_exact(b"Every 0.3s")
        child.sendcontrol("z")
        child.expect_exact(SHOW + ALT_OFF)
        child.expect_exact("Stopped")
        child.expect_exact("PROMPT> ")
        child.sendline("fg")
        child.expect_exact(ALT_ON)
        child.expect_exact(b"Every 0.3s")
        child.sendintr()
        child.expect_exact(SHOW + ALT_OFF)
        child.expect_exact("PROMPT> ")
        child.sendline("echo rc=$?")
        child.expect(r"rc=(\d+)")
        assert child.match.group(1) == b"0"
        child.sendline("exit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
