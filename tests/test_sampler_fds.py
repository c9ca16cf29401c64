"""The sampler keeps /proc files open and skips what nobody is shown: it
must never mistake a newcomer for the process that had its pid before, and
must not hold files of processes that are gone.

The pid-reuse case runs in a private pid namespace, where the next pid can
be chosen (``ns_last_pid``)."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from _proc import open_proc_files
from _ptree_helpers import wait_for
from tractor_diag.sampler import Sampler
from tractor_diag.trees import Targets

_REUSE = r"""
import os, subprocess, sys, time
from tractor_diag import procfs
from tractor_diag.sampler import Sampler
from tractor_diag.trees import Targets

# the watched tree: a shell that starts a child each time it reads a line
tree = subprocess.Popen(["bash", "-c", "while read x; do sleep 600 & done"],
                        stdin=subprocess.PIPE, text=True)
outsider = subprocess.Popen(["sleep", "600"])  # not in the tree, no actor
time.sleep(3.2)  # no longer young: its title is final (see procfs._volatile)
s = Sampler(Targets([tree.pid]))
for _ in range(3):
    snap, _ = s.sample()
    time.sleep(0.05)
assert outsider.pid not in snap.entries
assert outsider.pid in s._cache.idle and outsider.pid in s._cache.stat_fds
reused = outsider.pid
outsider.kill()
outsider.wait()
with open("/proc/sys/kernel/ns_last_pid", "w") as f:
    f.write(str(reused - 1))
tree.stdin.write("go\n")
tree.stdin.flush()
deadline = time.monotonic() + 10
while procfs.read_stat(reused) is None or procfs.read_stat(reused).ppid != tree.pid:
    assert time.monotonic() < deadline, "the tree's child did not get the reused pid"
    time.sleep(0.02)
# a pass that would skip the outsider, were it still there
while (reused + s._cache.passes + 1) % procfs.IDLE_EVERY == 0:
    s._cache.passes += 1
snap, events = s.sample()
entry = snap.entries.get(reused)
assert entry is not None and entry.root == tree.pid and entry.proc.comm == "sleep", entry
assert [e.kind for e in events if e.pid == reused] == ["spawned"], events
print("OK")
tree.kill()
"""


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="needs root and unshare for a private pid namespace")
def test_a_reused_pid_is_a_new_process():
    """A pid given up by a process outside the tree (skipped, its stat kept
    open) and taken by a new child of the tree: the next tick shows the
    child, spawned."""
    out = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child",
         sys.executable, "-c", _REUSE],
        capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "OK", out.stdout + out.stderr


def _signal(pid: int, parent: int, signum: int) -> None:
    """Signal our tree's child through a pidfd, checked to be that child."""
    fd = os.pidfd_open(pid)
    try:
        with open(f"/proc/{pid}/stat") as f:
            assert int(f.read().rsplit(")", 1)[1].split()[1]) == parent
        signal.pidfd_send_signal(fd, signum)
    finally:
        os.close(fd)


def test_files_of_gone_processes_are_closed(spawn):
    tree = spawn(["bash", "-c", "for i in 1 2 3 4; do sleep 600 & done; echo READY; wait"],
                 label="fds")
    s = Sampler(Targets([tree.root]))
    wait_for(lambda: len(s.sample()[0].entries) >= 5, timeout=10)
    kids = set(s.latest.entries[tree.root].children)
    assert len(kids) == 4
    assert len(open_proc_files(kids)) == 8  # stat and wchan of each sleeper
    for pid in kids:
        _signal(pid, tree.root, signal.SIGKILL)
    wait_for(lambda: not (kids & set(s.sample()[0].entries)), timeout=10)
    s.sample()
    assert open_proc_files(kids) == []
    s._cache.close()
    assert open_proc_files({tree.root}) == []


def test_state_changes_show_at_the_next_tick(spawn):
    """Read through a kept file, a member's stop, its continue and its
    death show at the very next sample."""
    tree = spawn(["bash", "-c", "sleep 600 & echo READY; wait"], label="states")
    s = Sampler(Targets([tree.root]))
    wait_for(lambda: len(s.sample()[0].entries) >= 2, timeout=10)
    (kid,) = s.latest.entries[tree.root].children
    for _ in range(3):
        s.sample()
        time.sleep(0.05)
    assert s.latest.entries[kid].proc.state == "S"
    asleep = s.latest.entries[kid].proc.wchan
    assert asleep
    _signal(kid, tree.root, signal.SIGSTOP)
    wait_for(lambda: open(f"/proc/{kid}/stat").read().split(") ")[1][0] == "T", timeout=5)
    stopped = s.sample()[0].entries[kid].proc
    assert stopped.state == "T"
    assert stopped.wchan and stopped.wchan != asleep  # its stat changed: read again
    _signal(kid, tree.root, signal.SIGCONT)
    wait_for(lambda: open(f"/proc/{kid}/stat").read().split(") ")[1][0] == "S", timeout=5)
    assert s.sample()[0].entries[kid].proc.state == "S"
    _signal(kid, tree.root, signal.SIGKILL)
    # bash reaps it: it is gone (exited) or a zombie at the next tick, never a sleeper
    time.sleep(0.2)
    snap, events = s.sample()
    gone = kid not in snap.entries or snap.entries[kid].bucket == "zombie"
    assert gone, snap.entries.get(kid)
    assert {e.kind for e in events if e.pid == kid} & {"exited", "zombied"}


# An actor outside the watched tree, under a live parent of its own, is not
# read every tick; its parent's death makes it a stray to show, at once.
_ADOPTED = r"""
import os, signal, subprocess, time
from tractor_diag import procfs
from tractor_diag.sampler import Sampler
from tractor_diag.trees import Targets

tree = subprocess.Popen(["sleep", "600"])
parent = subprocess.Popen(["bash", "-c", 'exec 3<&0; exec -a "_subactor[ghost@$BASHPID]" cat <&3 & wait'],
                          stdin=subprocess.PIPE)
deadline = time.monotonic() + 10
while True:
    kids = procfs._read_children(parent.pid)
    if kids and procfs.read_quick(kids[0]).actor is not None:
        break
    assert time.monotonic() < deadline, "the ghost did not start"
    time.sleep(0.02)
ghost = kids[0]
time.sleep(3.2)  # no longer young
s = Sampler(Targets([tree.pid]))
for _ in range(3):
    snap, _ = s.sample()
assert ghost not in snap.entries and ghost in s._cache.idle, "the ghost is read every tick"
parent.kill()
parent.wait()
# a pass that would skip the ghost, were its parent still there
while (ghost + s._cache.passes + 1) % procfs.IDLE_EVERY == 0:
    s._cache.passes += 1
snap, events = s.sample()
assert ghost in snap.strays and snap.entries[ghost].bucket == "orphan", snap.strays
print("OK")
"""


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="needs root and unshare for a private pid namespace")
def test_an_adopted_actor_shows_at_once():
    out = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child",
         sys.executable, "-c", _ADOPTED],
        capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "OK", out.stdout + out.stderr
