"""``ptree --names`` on an actor whose pid is taken over before its dump,
run whole inside a private PID namespace, where pids are predictable
(``ns_last_pid``). ``python tests/_names_reuse.py TMPDIR`` starts a parent
and one child that only its stack can name (a multiprocessing spawn child
marked as tractor's, serving a TCP socket), and a stand-in py-spy that,
before dumping that child, kills it, waits until the parent has reaped it
and starts under the same pid a newcomer whose stack names an actor
(``impostor``: a ``_actor_child_main`` frame in ``tractor/_child.py``);
then runs the real py-spy. Prints one JSON line: the child's pid and the
name ``ptree --names --json`` gives it.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys

from _ptree_helpers import wait_for
from tractor_diag.cli import run_verb
from tractor_diag.pyspy import PY_SPY_ENV, find_py_spy

# serves a socket and sleeps: an mp_spawn actor as /proc shows one
CHILD = ("from multiprocessing.spawn import spawn_main; import socket, sys, time; "
         "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); "
         "open(sys.argv[1], 'w').close(); time.sleep(600)")
PARENT = ("import signal, subprocess, sys, time; "
          "kid = subprocess.Popen(sys.argv[1:], env={'PYTHONBREAKPOINT': '0'}); "
          "signal.signal(signal.SIGCHLD, lambda *a: kid.poll()); time.sleep(600)")
# what tractor's child entry looks like to py-spy: the actor's uid a local
IMPOSTOR = """import sys, time
def _actor_child_main(uid):
    open(sys.argv[1], "w").close()
    time.sleep(600)
_actor_child_main(("impostor", "6c1e0b9e"))
"""
STAND_IN = """#!/bin/sh
case " $* " in *" --pid {victim} "*)
    kill -KILL {victim}
    while [ -e /proc/{victim}/stat ]; do sleep 0.01; done
    sleep 0.2
    echo {before} > /proc/sys/kernel/ns_last_pid
    {python} {tmp}/tractor/_child.py {tmp}/newcomer >/dev/null 2>&1 &
    while [ ! -e {tmp}/newcomer ]; do sleep 0.01; done
    sleep 0.2;;
esac
exec {py_spy} "$@"
"""


def main() -> None:
    tmp = sys.argv[1]
    subprocess.Popen(["sleep", "600"])  # pid 2; goes with the namespace
    parent = subprocess.Popen([sys.executable, "-c", PARENT, sys.executable, "-c", CHILD,
                               f"{tmp}/child.ready", "--multiprocessing-fork"])
    wait_for(lambda: os.path.exists(f"{tmp}/child.ready"), 20)
    with open(f"/proc/{parent.pid}/task/{parent.pid}/children") as f:
        (victim,) = map(int, f.read().split())
    os.makedirs(f"{tmp}/tractor")
    with open(f"{tmp}/tractor/_child.py", "w") as f:
        f.write(IMPOSTOR)
    path = os.path.join(tmp, "py-spy")
    with open(path, "w") as f:
        f.write(STAND_IN.format(victim=victim, before=victim - 1, python=sys.executable,
                                tmp=tmp, py_spy=find_py_spy()))
    os.chmod(path, 0o755)
    os.environ[PY_SPY_ENV] = path
    out, err = io.StringIO(), io.StringIO()
    rc = run_verb(["ptree", "--names", "--json", "--no-strays", str(parent.pid)], out=out, err=err)
    assert rc == 0, err.getvalue()
    actor = json.loads(out.getvalue())["entries"][str(victim)]["proc"]["actor"]
    print(json.dumps({"victim": victim, "newcomer": os.path.exists(f"{tmp}/newcomer"),
                      "actor": actor}))


if __name__ == "__main__":
    main()
