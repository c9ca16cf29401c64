"""Captures run whole inside a private PID namespace, where pids are
predictable (``ns_last_pid``). ``python tests/_stacks_reuse.py MODE FAMILY
TMPDIR`` starts FAMILY (a parent and three Python children) and captures it
one dump at a time; prints the members' (pid, status, reason, frame files)
as one JSON line.

- ``reuse``: the family starts after a placeholder (it is not pid 2), and a
  stand-in py-spy, before dumping the last child, kills it, waits until its
  parent has reaped it and starts a new Python process under the same pid;
  then runs the real py-spy.
- ``queued``: as ``reuse``, but the stand-in takes the last child's pid
  over while dumping the child before it, so the last child's dump is
  still queued then; every pid the stand-in is run on is logged in
  ``TMPDIR/spied``.
- ``pid2``: the family's parent is the namespace's pid 2 (in the initial
  namespace, the kernel threads' parent); the real py-spy.
- ``sudo``: as ``reuse``, but the stand-in py-spy is denied the last child
  (permission) unless run through ``sudo``, whose stand-in (on ``PATH``)
  runs the command as given; the pid is taken over before the retry's
  dump.
- ``pid2-blank``: as ``pid2``, and the parent empties its command line (as
  a kernel thread's is): it is still no kernel thread.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

from tractor_diag.pyspy import PY_SPY_ENV, find_py_spy
from tractor_diag.stackmodel import StacksOptions
from tractor_diag.stacks import capture
from tractor_diag.trees import snapshot_for

HERE = os.path.dirname(os.path.abspath(__file__))
# runs the family script (argv[1:]) with an empty command line
BLANK_RUN = ("import runpy, sys; sys.path.insert(0, sys.argv.pop(1)); "
             "from _proc import blank_own_cmdline; blank_own_cmdline(); "
             "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")
NEWCOMER = "import sys, time; open(sys.argv[1], 'w').close(); time.sleep(600)"

STAND_IN = """#!/bin/sh
for a; do last=$a; done
echo "$last" >> {tmp}/spied
if [ "$last" = {trigger} ]; then
    kill -KILL {victim}
    while [ -e /proc/{victim}/stat ]; do sleep 0.01; done
    sleep 0.2
    echo {before} > /proc/sys/kernel/ns_last_pid
    {python} -c "{newcomer}" {tmp}/newcomer >/dev/null 2>&1 &
    while [ ! -e {tmp}/newcomer ]; do sleep 0.01; done
    sleep 0.2
fi
exec {py_spy} "$@"
"""

# Denied the victim unless run through the stand-in sudo, which reuses its
# pid first (the sudo retry's dump reads the newcomer).
DENIED = """#!/bin/sh
for a; do last=$a; done
if [ "$last" = {victim} ] && [ -z "$TDIAG_TEST_SUDO" ]; then
    echo "Error: Permission Denied (os error 1)" >&2
    exit 1
fi
if [ "$last" = {victim} ]; then
    exec {reuse} "$@"
fi
exec {py_spy} "$@"
"""

SUDO = """#!/bin/sh
[ "$1" = -n ] && shift
[ "$1" = -- ] && shift
TDIAG_TEST_SUDO=1 exec "$@"
"""


def main() -> None:
    mode, family, tmp = sys.argv[1:4]
    if mode in ("reuse", "sudo"):
        subprocess.Popen(["sleep", "600"])  # pid 2; goes with the namespace
    argv = [sys.executable, family, "3"]
    if mode == "pid2-blank":
        argv[1:1] = ["-c", BLANK_RUN, HERE]
    fam = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    kids = [int(p) for p in fam.stdout.readline().split()[1:]]
    assert fam.stdout.readline().strip() == "READY"
    victim = kids[-1]
    snap = snapshot_for([str(fam.pid)], strays=False)
    if mode == "reuse":
        stand_in(victim, tmp)
    if mode == "queued":
        stand_in(victim, tmp, trigger=kids[-2])
    if mode == "sudo":
        denied_unless_sudo(victim, tmp)
    report = capture(snap, StacksOptions(jobs=1, tasks=False))
    print(json.dumps({"victim": victim, "procs": [
        [p.pid, p.python.status, p.python.reason,
         [f.filename for t in p.python.threads for f in t.frames]] for p in report.procs]}))


def stand_in(victim: int, tmp: str, trigger: int | None = None) -> None:
    path = os.path.join(tmp, "py-spy")
    with open(path, "w") as f:
        f.write(STAND_IN.format(victim=victim, trigger=trigger or victim, before=victim - 1,
                                python=sys.executable,
                                newcomer=NEWCOMER, tmp=tmp, py_spy=find_py_spy()))
    os.chmod(path, 0o755)
    os.environ[PY_SPY_ENV] = path


def denied_unless_sudo(victim: int, tmp: str) -> None:
    stand_in(victim, tmp)
    reuse = os.environ[PY_SPY_ENV]
    bin_dir = os.path.join(tmp, "bin")
    os.mkdir(bin_dir)
    for name, text in (("py-spy", DENIED.format(victim=victim, reuse=reuse,
                                                py_spy=find_py_spy())),
                       ("sudo", SUDO)):
        with open(os.path.join(bin_dir, name), "w") as f:
            f.write(text)
        os.chmod(os.path.join(bin_dir, name), 0o755)
    os.environ[PY_SPY_ENV] = os.path.join(bin_dir, "py-spy")
    os.environ["PATH"] = bin_dir + os.pathsep + os.environ["PATH"]


if __name__ == "__main__":
    main()
