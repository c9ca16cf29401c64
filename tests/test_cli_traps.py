"""Traps in the command line that used to do harm, on real processes:
``--cpu`` swallowing the root as a number of seconds, an empty root meaning
"every tree on the machine", and columns clipped in a pipe."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pexpect
import pytest

BIN = Path(sys.executable).parent


def cli(*args: str, timeout: float = 30, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "NO_COLOR": "1", **(env or {})}
    full_env.pop("COLUMNS", None)
    full_env.update(env or {})
    r = subprocess.run([sys.executable, "-m", "tractor_diag", *args], capture_output=True,
                       text=True, timeout=timeout, env=full_env, stdin=subprocess.DEVNULL)
    assert "Traceback" not in r.stderr, r.stderr
    return r


def usage_error(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


# -- --cpu -------------------------------------------------------------------------

def test_cpu_flag_does_not_take_the_root_as_seconds(sleep_tree):
    h = sleep_tree()
    started = time.monotonic()
    r = cli("ptree", "--cpu", str(h.root), timeout=20)   # used to sleep h.root seconds
    assert time.monotonic() - started < 15
    assert r.returncode == 0, r.stderr
    assert "CPU over 0.3" in r.stdout and str(h.root) in r.stdout
    r = cli("ptree", "--cpu-window", "0.4", "--tree", str(h.root))
    assert r.returncode == 0 and "CPU over 0.4" in r.stdout


@pytest.mark.parametrize("args", [
    ["--cpu=inf"], ["--cpu=1e308"], ["--cpu=nan"], ["--cpu=-1"],
    ["--cpu-window", "inf"], ["--cpu-window", "1e308"], ["--cpu-window", "nan"],
    ["--cpu-window", "-1"], ["--cpu-window", "0.1"], ["--cpu-window", "61"],
    ["--cpu-window", "abc"],
])
def test_cpu_windows_out_of_bounds_are_usage_errors(args):
    started = time.monotonic()
    line = usage_error(cli("ptree", *args, "1", timeout=10))
    assert time.monotonic() - started < 8
    assert "--cpu" in line


def test_cpu_with_a_number_after_it_says_what_to_use(sleep_tree):
    h = sleep_tree()
    line = usage_error(cli("ptree", "--cpu", "0.5", str(h.root)))
    assert "--cpu-window 0.5" in line


# -- empty roots ------------------------------------------------------------------

def _dump_size(pid: int) -> int:
    try:
        return os.stat(f"/tmp/tractor-stackscope-{pid}.log").st_size
    except FileNotFoundError:
        return 0


@pytest.mark.parametrize("argv", [
    ["ptree", ""], ["ptree", " "], ["ptree", "1", ""], ["stacks", ""], ["stacks", "\t"],
    ["dump-all", " "], ["dash", ""],
])
def test_an_empty_root_is_a_usage_error_and_signals_nobody(current_tree, tmp_path, argv):
    tree = current_tree(depth=1, breadth=1)
    armed = list(tree.actors().values())
    before = {pid: _dump_size(pid) for pid in armed}
    bundles = tmp_path / "bundles"
    extra = ["-o", str(bundles)] if argv[0] == "dump-all" else []
    line = usage_error(cli(*argv, *extra, timeout=30))
    assert "empty root" in line
    time.sleep(0.3)
    # used to mean "every tree": a task-tree request to each armed actor
    assert {pid: _dump_size(pid) for pid in armed} == before
    assert not bundles.exists()


@pytest.mark.parametrize("argv", [
    ["bindspace", ""], ["bindspace", " "],
    ["reap", "--uds-only", "--dry-run", "--bindspace", ""],
])
def test_an_empty_bindspace_dir_is_a_usage_error(bindspace, argv):
    # used to mean the default dir: `reap --uds --bindspace "$UNSET"` swept it
    line = usage_error(cli(*argv))
    assert "empty bindspace dir" in line


def test_an_empty_root_in_the_xontrib_is_a_usage_error():
    from _xonsh_helpers import run_xonsh

    res = run_xonsh("xontrib load tractor_diag\n"
                    "p = ![acli.hung_dump '']\nprint('RC', p.returncode)\n"
                    "p = ![acli.ptree ' ']\nprint('RC', p.returncode)\n")
    assert res.stdout.split("\n")[:2] == ["RC 2", "RC 2"], (res.stdout, res.stderr)
    lines = res.stderr.splitlines()
    assert len(lines) == 2 and all("empty root" in ln for ln in lines), res.stderr


# -- columns in a pipe ------------------------------------------------------------

@pytest.fixture
def long_cmdline(spawn):
    filler = "x" * 300
    h = spawn([sys.executable, "-c",
               "import time; print('READY', flush=True); time.sleep(600)", filler, "db_pool"],
              label="long-cmdline")
    return h


@pytest.mark.parametrize("args", [[], ["--tree"]])
@pytest.mark.parametrize("columns", [None, "80"])
def test_piped_ptree_never_clips(long_cmdline, args, columns):
    env = {"COLUMNS": columns} if columns else {}
    r = cli("ptree", *args, str(long_cmdline.root), env=env)
    assert r.returncode == 0, r.stderr
    rows = [ln for ln in r.stdout.splitlines() if "db_pool" in ln]
    assert rows and str(long_cmdline.root) in rows[0]


def test_piped_stacks_header_is_not_clipped(long_cmdline):
    r = cli("stacks", "--no-tasks", str(long_cmdline.root), timeout=60)
    assert r.returncode == 0, r.stderr
    assert "db_pool" in r.stdout.splitlines()[0]


def test_on_a_terminal_ptree_still_fits_the_width(long_cmdline):
    child = pexpect.spawn(str(BIN / "tractor-diag"), ["ptree", str(long_cmdline.root)],
                          dimensions=(40, 100), env={**os.environ, "NO_COLOR": "1"},
                          encoding="utf-8", timeout=30)
    try:
        child.expect(pexpect.EOF)
        out = child.before
    finally:
        child.close(force=True)
    rows = [ln for ln in out.splitlines() if str(long_cmdline.root) in ln]
    assert rows and all(len(ln) <= 100 for ln in rows), rows
    assert "db_pool" not in out and "…" in rows[0]
