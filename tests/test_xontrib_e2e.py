"""A real xonsh, a real released tractor tree: the aliases end to end, and
`acli.watch` in a real pty."""
from __future__ import annotations

import json

import pexpect
import pytest

from _xonsh_helpers import REPO, XONSH, Screen, read_for, run_xonsh, xonsh_env

pytest.importorskip("xonsh")

ALT_ON, ALT_OFF = b"\x1b[?1049h", b"\x1b[?1049l"
SHOW = b"\x1b[?25h"
LOAD = "xontrib load tractor_diag\n"


@pytest.fixture
def tree(released_tree):
    """root -> leaf_0, leaf_1: released-runtime `tractor._child` actors."""
    return released_tree(depth=1, breadth=2, hang="none")


def test_ptree_alias_shows_the_released_tree(tree):
    actors = {n: p for n, p in tree.actors().items() if n.startswith("leaf_")}
    assert len(actors) == 2
    res = run_xonsh(LOAD + f"acli.ptree --tree {tree.root}\n")
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""
    for name, pid in actors.items():
        assert str(pid) in res.stdout and name in res.stdout
    assert str(tree.root) in res.stdout


def test_ptree_alias_pipes_into_another_command(tree):
    leaf = tree.actors()["leaf_1"]
    res = run_xonsh(LOAD + f"acli.ptree {tree.root} | grep leaf_1\n")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines and all("leaf_1" in ln for ln in lines)
    assert any(str(leaf) in ln for ln in lines)


def test_json_alias_output_is_parseable(tree):
    res = run_xonsh(LOAD + f"acli.ptree --json {tree.root}\n")
    snap = json.loads(res.stdout)
    assert str(tree.root) in snap["entries"]
    assert {str(p) for p in tree.actors().values()} <= set(snap["entries"])


def test_failing_calls_give_one_line_and_their_exit_code():
    res = run_xonsh(LOAD + (
        "p = ![acli.ptree 99999999]\n"
        "print('RC', p.returncode)\n"
        "p = ![acli.ptree --bogus]\n"
        "print('RC', p.returncode)\n"
        "p = ![acli.ptree 1 --cpu-window -1]\n"
        "print('RC', p.returncode)\n"
    ))
    assert res.stdout.split("\n")[:3] == ["RC 1", "RC 2", "RC 2"], (res.stdout, res.stderr)
    assert res.stderr.splitlines() == [
        "acli.ptree: no such process: 99999999",
        "acli.ptree: unrecognized arguments: --bogus",
        "acli.ptree: argument --cpu-window: '-1' is not a number of seconds from 0.2 to 60",
    ]


def test_entry_point_autoloads_without_xontrib_load(tree):
    """A plain `xonsh -c` (no --no-rc) loads the xontrib through its entry point."""
    res = run_xonsh(f"acli.ptree {tree.root} | grep -c leaf_\n", no_rc=False,
                    XONSHRC="/dev/null", XONSHRC_DIR=str(REPO / "nonexistent"))
    assert res.returncode == 0, res.stderr
    assert int(res.stdout.strip()) >= 2


# -- in a real pty -------------------------------------------------------------

def spawn_xonsh(code: str, cols: int = 100, rows: int = 30, **env) -> pexpect.spawn:
    env = xonsh_env(**env)
    for key in ("COLUMNS", "LINES"):
        env.pop(key, None)
    return pexpect.spawn(str(XONSH), ["--no-rc", "-c", "$XONSH_SUBPROC_RAISE_ERROR = False\n" + code],
                         dimensions=(rows, cols), env=env, timeout=30, cwd=str(REPO))


def test_alias_output_is_coloured_on_a_terminal_only(tree):
    child = spawn_xonsh(LOAD + f"acli.ptree {tree.root}\necho SEP\n"
                        f"acli.ptree {tree.root} | cat\necho END\n")
    try:
        child.expect_exact("SEP")
        direct = child.before
        child.expect_exact("END")
        piped = child.before
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert b"\x1b[32mlive" in direct
    assert b"leaf_1" in piped and b"\x1b[" not in piped


def test_acli_watch_repaints_resizes_and_restores(tree):
    leaf = tree.actors()["leaf_0"]
    child = spawn_xonsh(LOAD + f"acli.watch -n 0.2 acli.ptree {tree.root}\n"
                        "print('AFTER', __xonsh__.lastcmd.returncode)\n", cols=100, rows=30)
    scr = Screen(100, 30)
    try:
        child.expect_exact(ALT_ON)
        data = ALT_ON + read_for(child, 1.2)
        scr.feed(data)
        assert data.count(b"Every 0.2s: acli.ptree") >= 3
        assert data.count(b"\x1b[2J") == 1
        assert scr.lines()[0].startswith(f"Every 0.2s: acli.ptree {tree.root}")
        assert str(leaf) in scr.text() and "leaf_0" in scr.text()

        child.setwinsize(20, 60)
        scr.resize(60, 20)
        data = read_for(child, 0.6)
        assert b"\x1b[2J" in data
        scr.feed(data)
        assert all(len(ln) <= 60 for ln in scr.lines())
        assert scr.lines()[0].startswith("Every 0.2s:")

        child.sendintr()
        child.expect_exact(SHOW + ALT_OFF)
        child.expect(r"AFTER (\d+)")
        rc = int(child.match.group(1))
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert rc == 0


USER_ALIAS = r'''
import subprocess, sys
runs = []
def _status(args, stdout):
    runs.append(1)
    print("python print", len(runs), " ".join(args))
    stdout.write("via stdout arg\n")
    subprocess.run(["echo", "from a child process"])
    return 3
aliases["my_status"] = _status
aliases["ll"] = "ls -la"
'''


def test_acli_watch_runs_a_users_function_alias_and_shows_its_failure():
    child = spawn_xonsh(LOAD + USER_ALIAS + "acli.watch -n 0.2 my_status one two\n"
                        "acli.watch ll\nprint('LL', __xonsh__.lastcmd.returncode)\n", cols=80, rows=12)
    scr = Screen(80, 12)
    try:
        child.expect_exact(ALT_ON)
        scr.feed(ALT_ON + read_for(child, 0.8))
        text = scr.text()
        assert "exit 3" in scr.lines()[0]
        assert "python print" in text and "one two" in text
        assert "via stdout arg" in text
        assert "from a child process" in text
        child.send("q")
        child.expect_exact(ALT_OFF)
        child.expect(r"LL (\d+)")
        rc = int(child.match.group(1))
        err = child.before
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert rc == 2
    assert b"'ll' is not a callable alias" in err


def test_acli_dash_gets_the_terminal_and_gives_it_back(tree):
    """The dashboard alias is unthreadable: Textual gets the real terminal."""
    child = spawn_xonsh(LOAD + f"acli.dash {tree.root}\n"
                        "print('AFTER', __xonsh__.lastcmd.returncode)\n", cols=120, rows=30)
    try:
        child.expect_exact(ALT_ON)
        child.expect_exact(b"leaf_1", timeout=30)
        child.send("q")
        child.expect(r"AFTER (\d+)")
        rc = int(child.match.group(1))
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert rc == 0
