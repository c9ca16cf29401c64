"""A judged tree whose root died and whose pid was taken, while its chain
lives on: the dashboard's quiet re-judgement, run whole inside a private
PID namespace, where pids are predictable (``ns_last_pid``).

``python tests/_dash_rejudge_reuse.py TMPDIR PYTHON`` (PYTHON: one with
setproctitle) starts a subreaper holding a shell (the root judged) whose
child sleeps, stopped; shows the subreaper in the real Textual app and
presses ``w`` on the shell, which draws a chain on the stopped child
only. Then it kills the shell (the child goes to the subreaper, still in
the tree, its chain intact), starts a newcomer under the shell's pid (an
actor look-alike with a SIGUSR1 handler, outside the tree), continues the
child (something in the chain ran: a re-judgement is due) and lets the
quiet refresh come. Prints one JSON line: the pids, whether the chain
went, the events pane's text, whether the newcomer got a SIGUSR1 and
whether a capture of ours touched it.
"""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _dash_helpers import run, until, wait_for_pids  # noqa: E402
from _dash_reuse import look_alike  # noqa: E402
from _ptree_helpers import wait_for  # noqa: E402
from tractor_diag import captures  # noqa: E402
from tractor_diag.tui.app import DashApp  # noqa: E402

# A subreaper (an orphan below it stays in its tree) that reaps whatever
# exits under it; its shell child starts the sleeper and waits.
HOLDER = ("import ctypes, os, subprocess, sys, time; "
          "ctypes.CDLL(None).prctl(36, 1, 0, 0, 0); "
          "subprocess.Popen(['bash', '-c', sys.argv[1] + ' & wait; sleep 600'])\n"
          "while True:\n"
          "    try: os.wait()\n"
          "    except ChildProcessError: time.sleep(0.05)\n")
SLEEPER = "import sys, time; open(sys.argv[1], 'w').close(); time.sleep(600)"


def children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def main() -> None:
    tmp, python = sys.argv[1:3]
    subprocess.Popen(["sleep", "600"])  # pid 2; goes with the namespace
    holder = subprocess.Popen([python, "-c", HOLDER,
                               shlex.join([python, "-c", SLEEPER, f"{tmp}/sleeper.ready"])])
    wait_for(lambda: os.path.exists(f"{tmp}/sleeper.ready"), 20)
    (shell,) = children(holder.pid)
    (sleeper,) = children(shell)
    os.kill(sleeper, signal.SIGSTOP)
    out: dict = {"shell": shell, "sleeper": sleeper}

    async def body():
        app = DashApp([str(holder.pid)], interval=0.25)
        async with app.run_test(size=(200, 48)) as pilot:
            ptree = app.proc_tree
            await wait_for_pids(app, pilot, {holder.pid, shell, sleeper})
            await until(lambda: app.snapshot.entries[sleeper].state == "stopped", 10,
                        pilot=pilot, what="the sleeper stopped")
            ptree.select_pid(shell)
            await pilot.press("w")
            await until(lambda: sleeper in ptree.marks, 60, pilot=pilot, what="the chain")
            out["marked"] = sorted(ptree.marks)
            out["tree"] = sorted({c.tree for c in app.chains.chains})
            # the root judged goes; its pid goes to a process outside the tree
            os.kill(shell, signal.SIGKILL)  # this script's grandchild, in this namespace
            while os.path.exists(f"/proc/{shell}"):
                await pilot.pause(0.01)
            with open("/proc/sys/kernel/ns_last_pid", "w") as f:
                f.write(str(shell - 1))
            since = time.monotonic()
            newcomer = subprocess.Popen(look_alike(python, "newcomer", tmp))
            assert newcomer.pid == shell, (newcomer.pid, shell)
            wait_for(lambda: os.path.exists(f"{tmp}/newcomer.ready"), 20)
            await until(lambda: app.snapshot.entries[sleeper].proc.ppid == holder.pid, 10,
                        pilot=pilot, what="the sleeper adopted")
            out["chain_after_root_died"] = bool(app.chains.chains)
            os.kill(sleeper, signal.SIGCONT)  # the chain ran: a refresh is due
            app.chains.refresh = 1.0
            signalled = lambda: os.path.exists(f"{tmp}/newcomer.usr1")  # noqa: E731
            try:
                await until(lambda: not app.chains.chains or signalled(), 40,
                            pilot=pilot, what="the chain to go")
            except AssertionError:
                pass  # reported below
            await pilot.pause(3.0)  # a few refresh periods more: nothing comes after
            out["chains_left"] = len(app.chains.chains)
            out["rejudging"] = sorted(app.chains.rejudging)
            out["events"] = app.events_pane.text
            out["usr1"] = signalled()
            out["touched"] = shell in captures.touched(since, time.monotonic())

    run(body(), timeout=120)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
