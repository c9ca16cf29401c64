"""The capture's dump pool on real processes with the real py-spy: more
processes than parallel slots all get their stacks, and a process that
vanishes while the capture runs is one clear line, never another process's
stack."""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tractor_diag.cli import run_verb
from tractor_diag.pyspy import PY_SPY_ENV, find_py_spy
from tractor_diag.stackmodel import StacksOptions
from tractor_diag.stacks import capture
from tractor_diag.trees import snapshot_for

from _proc import stat_fields

# A parent with `n` Python children, every one asleep; prints READY once
# all are up, and reaps a child as soon as it ends (so a killed one is gone,
# not a zombie).
_FAMILY = textwrap.dedent("""\
    import os, signal, subprocess, sys, time
    n = int(sys.argv[1])
    kids = [subprocess.Popen([sys.executable, "-c",
                              "import time; print('up', flush=True); time.sleep(600)"],
                             stdout=subprocess.PIPE) for _ in range(n)]
    for k in kids:
        k.stdout.readline()
    signal.signal(signal.SIGCHLD, lambda *a: [k.poll() for k in kids])
    print("KIDS", *(k.pid for k in kids), flush=True)
    print("READY", flush=True)
    time.sleep(600)
""")

needs_py_spy = pytest.mark.skipif(find_py_spy() is None, reason="py-spy not installed")


def _family(spawn, n: int, tmp_path):
    script = tmp_path / "family.py"
    script.write_text(_FAMILY)
    tree = spawn([sys.executable, str(script), str(n)], ready="KIDS")
    kids = [int(pid) for pid in tree.ready_line.split()[1:]]
    tree.wait_line("READY")
    return tree, kids


@needs_py_spy
def test_more_processes_than_slots_all_get_their_stack(spawn, tmp_path):
    """Seven processes through two slots: each one dumped once, each stack
    its own (the py-spy output names the pid it read)."""
    tree, _kids = _family(spawn, 6, tmp_path)
    snap = snapshot_for([str(tree.root)], strays=False)
    assert len(snap.entries) == 7
    report = capture(snap, StacksOptions(jobs=2, tasks=False))
    assert [p.python.status for p in report.procs] == ["ok"] * 7
    for p in report.procs:
        frames = [f.name for t in p.python.threads for f in t.frames]
        assert "<module>" in frames
    out, err = io.StringIO(), io.StringIO()
    rc = run_verb(["stacks", "--jobs", "2", "--no-tasks", "--color", "never", str(tree.root)],
                  out=out, err=err)
    assert rc == 0, err.getvalue()
    assert out.getvalue().count("thread MainThread") == 7


@needs_py_spy
def test_a_process_that_vanishes_mid_run_is_one_clear_line(spawn, tmp_path, monkeypatch):
    """The py-spy that is about to dump one member finds it gone (killed by
    this test's own stand-in, then reaped by its parent): that member says
    so in one line, the others keep their stacks."""
    tree, kids = _family(spawn, 4, tmp_path)
    victim = kids[-1]
    real = find_py_spy()
    stand_in = tmp_path / "py-spy"
    start = int(stat_fields(victim)[19])
    # kills the victim (a child of this test's tree, while it is the process
    # that started at its start tick) just before the real py-spy reads it,
    # and waits until its parent has reaped it
    stand_in.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        for a; do last=$a; done
        if [ "$last" = {victim} ]; then
            started=$(awk '{{sub(/.*\\) /, ""); print $20}}' /proc/{victim}/stat)
            [ "$started" = {start} ] && kill -KILL {victim}
            while [ -e /proc/{victim} ]; do sleep 0.01; done
        fi
        exec {real} "$@"
    """))
    stand_in.chmod(0o755)
    monkeypatch.setenv(PY_SPY_ENV, str(stand_in))
    out, err = io.StringIO(), io.StringIO()
    rc = run_verb(["stacks", "--jobs", "2", "--no-tasks", "--color", "never", str(tree.root)],
                  out=out, err=err)
    assert rc == 0, err.getvalue()
    text = out.getvalue()
    lines = [ln for ln in text.splitlines() if "gone" in ln]
    assert len(lines) == 1, text
    assert "process gone" in lines[0]
    assert "Traceback" not in text + err.getvalue()


REUSE = Path(__file__).with_name("_stacks_reuse.py")


def _in_namespace(mode: str, tmp_path) -> dict:
    family = tmp_path / "family.py"
    family.write_text(_FAMILY)
    ran = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child",
         sys.executable, str(REUSE), mode, str(family), str(tmp_path)],
        capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    return json.loads(ran.stdout.splitlines()[-1])


def _only_the_victim_gone(got: dict, tmp_path) -> None:
    """The newcomer's stack is not shown as the victim's; the others dumped."""
    assert (tmp_path / "newcomer").exists(), "the newcomer never started"
    by_pid = {pid: (status, reason, files) for pid, status, reason, files in got["procs"]}
    status, reason, files = by_pid[got["victim"]]
    assert status == "gone", (status, files)
    assert "its pid now belongs to another process" in reason
    others = [st for pid, (st, _r, _f) in by_pid.items() if pid != got["victim"]]
    assert others == ["ok"] * 3


needs_unshare = pytest.mark.skipif(shutil.which("unshare") is None or os.geteuid() != 0,
                                   reason="needs unshare and root (a PID namespace)")


@needs_py_spy
@needs_unshare
def test_a_pid_reused_before_its_dump_is_not_read_as_the_old_process(tmp_path):
    """The member is gone and a newcomer holds its pid when its queued dump
    runs: py-spy reads the newcomer fine, and the capture says the member
    is gone instead of showing the newcomer's stack as its own."""
    _only_the_victim_gone(_in_namespace("reuse", tmp_path), tmp_path)


@needs_py_spy
@needs_unshare
def test_a_queued_dump_whose_pid_was_reused_traces_nobody(tmp_path):
    """The member goes and a newcomer takes its pid while the dump before
    it runs: its own dump, queued then, never starts (py-spy attaches by
    pid: it would attach to the newcomer, whatever is shown after)."""
    got = _in_namespace("queued", tmp_path)
    _only_the_victim_gone(got, tmp_path)
    spied = [int(p) for p in (tmp_path / "spied").read_text().split()]
    assert got["victim"] not in spied, spied
    assert len(spied) == 3, spied  # the parent and the other two children


@needs_py_spy
@needs_unshare
def test_a_pid_reused_before_the_sudo_retry_is_not_read_as_the_old_process(tmp_path):
    """The member's first dump is denied; before the retry through sudo it
    is gone and a newcomer holds its pid: the retry reads the newcomer
    fine, and the capture says the member is gone."""
    _only_the_victim_gone(_in_namespace("sudo", tmp_path), tmp_path)


@needs_py_spy
@needs_unshare
def test_ptree_names_no_actor_after_a_newcomer_under_its_pid(tmp_path):
    """``ptree --names``: the actor only its stack names is gone and a
    newcomer holds its pid when its dump runs, a newcomer whose stack names
    an actor (``impostor``): the gone actor stays unnamed."""
    ran = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child",
         sys.executable, str(Path(__file__).with_name("_names_reuse.py")), str(tmp_path)],
        capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    got = json.loads(ran.stdout.splitlines()[-1])
    assert got["newcomer"], "the newcomer never started"
    assert got["actor"]["how"] == "mp-spawn" and got["actor"]["name"] == "", got["actor"]


@needs_py_spy
@needs_unshare
def test_pid_2_of_a_container_and_its_children_are_dumped(tmp_path):
    """pid 2 (and a child of it) is a kernel thread only in the initial PID
    namespace: in a container's it is a process like any other."""
    got = _in_namespace("pid2", tmp_path)
    assert [p[0] for p in got["procs"]] == [2, 3, 4, 5]
    assert [p[1] for p in got["procs"]] == ["ok"] * 4, got


@needs_py_spy
@needs_unshare
def test_pid_2_of_a_container_without_a_command_line_is_no_kernel_thread(tmp_path):
    """An empty command line at pid 2 is what a kernel thread shows in the
    initial namespace; in a container's it is still a process like any
    other, and dumped (the kernel's own flag says what is a kernel thread)."""
    got = _in_namespace("pid2-blank", tmp_path)
    assert [p[0] for p in got["procs"]] == [2, 3, 4, 5]
    assert [p[1] for p in got["procs"]] == ["ok"] * 4, got
