"""A paused dashboard whose selected row's pid was taken over, run whole
inside a private PID namespace, where pids are predictable
(``ns_last_pid``).

``python tests/_dash_reuse.py TMPDIR PYTHON BUNDLES`` (PYTHON: one with
setproctitle) starts a tree (a shell and one child, an actor look-alike
with a SIGUSR1 handler), shows it in the real Textual app, pauses
sampling, kills the child (the shell reaps it) and starts a newcomer,
another look-alike with a handler, under the same pid; then presses
``t``, ``s``, ``w`` and ``d`` on the row the paused app still shows. Prints
one JSON line: each key's title, text, and whether the newcomer had got a
SIGUSR1 by then.
"""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _dash_helpers import key_result, run, until, wait_for_pids  # noqa: E402
from _ptree_helpers import wait_for  # noqa: E402
from tractor_diag.tui.app import DashApp  # noqa: E402
from tractor_diag.tui.dialogs import ChoiceScreen  # noqa: E402

# A look-alike of an actor (its title, set as today's runtime sets it)
# that handles SIGUSR1: writes a line to argv[2] for each one, touches
# argv[3] once ready.
LOOK_ALIKE = ("import os, signal, sys, time, setproctitle; "
              "setproctitle.setproctitle(f'_subactor[{sys.argv[1]}@{os.getpid()}]'); "
              "signal.signal(signal.SIGUSR1, lambda *a: open(sys.argv[2], 'a').write('usr1')); "
              "open(sys.argv[3], 'w').close(); time.sleep(600)")


def look_alike(python: str, name: str, tmp: str) -> list[str]:
    return [python, "-c", LOOK_ALIKE, name, f"{tmp}/{name}.usr1", f"{tmp}/{name}.ready"]


def main() -> None:
    tmp, python, bundles = sys.argv[1:4]
    subprocess.Popen(["sleep", "600"])  # pid 2; goes with the namespace
    victim_argv = " ".join(shlex.quote(a) for a in look_alike(python, "victim", tmp))
    root = subprocess.Popen(["bash", "-c", f"{victim_argv} & wait; sleep 600"])
    wait_for(lambda: os.path.exists(f"{tmp}/victim.ready"), 20)
    with open(f"/proc/{root.pid}/task/{root.pid}/children") as f:
        (victim,) = map(int, f.read().split())
    out: dict = {"victim": victim}

    async def body():
        app = DashApp([str(root.pid)], interval=0.25)
        app.dump_root = bundles
        async with app.run_test(size=(200, 48)) as pilot:
            await wait_for_pids(app, pilot, {root.pid, victim})
            await until(lambda: app.snapshot.entries[victim].proc.actor is not None, 20,
                        pilot=pilot, what="the victim recognised")
            await pilot.press("p")
            await until(lambda: app.sampler.paused, 5, pilot=pilot, what="paused")
            app.proc_tree.select_pid(victim)
            await pilot.pause(0.1)
            # the victim is this script's grandchild, alone in this namespace
            os.kill(victim, signal.SIGKILL)
            while os.path.exists(f"/proc/{victim}"):
                await pilot.pause(0.01)
            with open("/proc/sys/kernel/ns_last_pid", "w") as f:
                f.write(str(victim - 1))
            newcomer = subprocess.Popen(look_alike(python, "newcomer", tmp))
            assert newcomer.pid == victim, (newcomer.pid, victim)
            wait_for(lambda: os.path.exists(f"{tmp}/newcomer.ready"), 20)
            for key, section in (("t", "tasks"), ("s", "stacks"), ("w", "why"), ("d", "dump")):
                app.proc_tree.select_pid(victim)
                await pilot.press(key)
                if key == "d":  # a leaf: just this process, or its whole tree?
                    await until(lambda: isinstance(app.screen, ChoiceScreen), 10,
                                pilot=pilot, what="the choice")
                    await pilot.press("p")
                title, text = await key_result(app, pilot, victim, None, section, 60)
                out[section] = [str(title), str(text),
                                os.path.exists(f"{tmp}/newcomer.usr1")]

    run(body(), timeout=90)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
