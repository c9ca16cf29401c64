"""``tractor-diag dash`` argument handling and ``python -m tractor_diag.demo``
without a terminal."""
from __future__ import annotations

import argparse
import io
import os
import re
import subprocess
import sys

import pytest

from tractor_diag.cli import run_verb
from tractor_diag.commands import dash

from _dash_helpers import alive


def verb(*argv):
    out, err = io.StringIO(), io.StringIO()
    rc = run_verb(["dash", *argv], out=out, err=err)
    return rc, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("argv, code, words", [
    (["--"], 2, "nothing to launch"),
    (["123", "--", "true"], 2, "not both"),
    (["--interval", "0", "--", "true"], 2, "--interval"),
    (["--grace", "-1", "--", "true"], 2, "--grace"),
    (["--", "/nonexistent/prog"], 1, "cannot launch /nonexistent/prog"),
    (["--", "no-such-command-anywhere-xyz"], 1, "command not found"),
    (["no-such-pattern-anywhere-xyz"], 1, "no process matches"),
    (["--bogus"], 2, "unrecognized"),
    (["--strays", "--no-strays", "--", "true"], 2, "contradict"),
])
def test_bad_input_is_one_line_and_an_exit_code(argv, code, words):
    rc, out, err = verb(*argv)
    assert rc == code
    assert words in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_needs_a_terminal():
    rc, out, err = verb("--", "true")  # pytest's stdin/stdout are no tty
    assert rc == 1 and "needs a terminal" in err


def test_options_after_targets_are_still_options():
    parser = argparse.ArgumentParser()
    dash.add_arguments(parser)
    args = parser.parse_args(["1234", "somepattern", "--interval", "2.5", "--grace", "4"])
    targets, command = dash.split_argv(args)
    assert targets == ["1234", "somepattern"] and command is None
    assert args.interval == 2.5 and args.grace == 4
    args = parser.parse_args(["--interval", "2", "--", "python", "--interval", "9", "-k"])
    targets, command = dash.split_argv(args)
    assert targets == [] and command == ["python", "--interval", "9", "-k"]
    assert args.interval == 2


def test_help_lists_the_keys(capsys):
    rc, out, err = verb("--help")
    assert rc == 0
    captured = capsys.readouterr()
    text = out + err + captured.out + captured.err
    assert "-- CMD ARGS" in text and "dump-all" in text


def test_demo_without_a_terminal_prints_the_tree_and_stops_it(xdg_runtime_dir):
    proc = subprocess.run(
        [sys.executable, "-m", "tractor_diag.demo", "--no-runaway", "--grace", "1"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
        env=dict(os.environ, NO_COLOR="1"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for name in ("gateway", "db_pool", "cache", "supervisor", "stubborn", "hot_loop",
                 "flaky_parent"):
        assert name in out
    assert "zombie exited:3" in out
    assert "demo tree stopped" in out
    pids = [int(m) for m in re.findall(r"^[\s│├└─]*(\d+) (?:live|zombie|orphan|stray) ",
                                       out, re.M)]
    assert len(pids) >= 9
    assert not [p for p in pids if alive(p)]
    bindspace = xdg_runtime_dir / "tractor"
    assert not list(bindspace.glob("*.sock")) if bindspace.exists() else True


def test_strays_default_follows_the_mode():
    """Launching, the view is the launched tree unless --strays; attached,
    strays are shown unless --no-strays."""
    parser = argparse.ArgumentParser()
    dash.add_arguments(parser)
    for argv, want in ((["--", "true"], None), (["--strays", "--", "true"], True),
                       (["1234"], None), (["1234", "--no-strays"], False)):
        args = parser.parse_args(argv)
        dash.split_argv(args)
        assert dash.strays_of(args) is want, argv
    from tractor_diag.tui.app import DashApp

    assert DashApp(launch=["true"]).show_strays is False
    assert DashApp(launch=["true"], strays=True).show_strays is True
    assert DashApp(["1234"]).show_strays is True
