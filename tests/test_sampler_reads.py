"""The sampler reads the least it can per tick, on real processes: a
command line once per process (again after an exec), wchan only for
processes not on a CPU, and the full detail only for processes that ran."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from _ptree_helpers import wait_for
from tractor_diag import procfs
from tractor_diag.sampler import Sampler
from tractor_diag.trees import Targets

# A root with three idle children, and one that execs into a titled
# program once it is old enough that only the exec can reveal the new title.
_TREE = r"""
for i in 1 2 3; do sleep 600 & done
( sleep 4; exec -a "_subactor[late@$BASHPID]" cat < <(sleep 600) ) &
echo READY
wait
"""


def _count_reads(monkeypatch, pids: set[int]) -> dict[str, int]:
    """Files of ``pids`` only (the box's other processes come and go as
    they please): ``open <name>`` for each file opened, ``<name>`` for each
    read of it (a read of a file kept open included)."""
    counts: dict[str, int] = {}
    real_open, real_pread, real_read = os.open, os.pread, procfs._read

    def pid_of(fd) -> tuple[int | None, str]:
        try:
            parts = os.readlink(f"/proc/self/fd/{fd}").split("/")
            return int(parts[2]), parts[-1]
        except (OSError, ValueError, IndexError):
            return None, ""

    def count(key: str) -> None:
        counts[key] = counts.get(key, 0) + 1

    def opening(path, flags, mode=0o777, *, dir_fd=None):
        fd = real_open(path, flags, mode, dir_fd=dir_fd)
        pid, name = pid_of(fd)
        if pid in pids:
            count(f"open {name}")
        return fd

    def preading(fd, n, offset):
        pid, name = pid_of(fd)
        if pid in pids:
            count(name)
        return real_pread(fd, n, offset)

    def reading(name, dfd):
        pid, _ = pid_of(dfd)
        if pid in pids:
            count(name)
        return real_read(name, dfd)

    monkeypatch.setattr(procfs.os, "open", opening)
    monkeypatch.setattr(procfs.os, "pread", preading)
    monkeypatch.setattr(procfs, "_read", reading)
    return counts


def _ours(s: Sampler, root: int) -> set[int]:
    """The test tree's members (the box's strays come and go as they please)."""
    return {pid for pid, e in s.latest.entries.items() if e.root == root}


def test_known_processes_cost_a_stat(spawn, monkeypatch):
    tree = spawn(["bash", "-c", _TREE], label="reads")
    s = Sampler(Targets([tree.root]))
    wait_for(lambda: len(s.sample()[0].entries) >= 5, timeout=10)
    ours = _ours(s, tree.root)
    counts = _count_reads(monkeypatch, ours)
    time.sleep(0.3)
    s.sample()
    members = len(ours)
    assert members >= 5
    # the tree is seconds old: its command lines may still be read (a
    # title may come); the idle members' full detail is kept
    assert counts.get("cmdline", 0) <= members
    assert counts.get("status", 0) == 0 and counts.get("schedstat", 0) == 0
    # once old, nothing but stat (and wchan of the sleepers)
    wait_for(lambda: "late" in [e.proc.actor.name for e in s.sample()[0].entries.values()
                                 if e.proc.actor is not None], timeout=15)
    time.sleep(3.2)
    s.sample()  # the last young one (cat's feeder) is read once more, now old
    s.sample()
    ours = _ours(s, tree.root)
    counts = _count_reads(monkeypatch, ours)
    for _ in range(procfs.IDLE_EVERY):
        s.sample()
    assert _ours(s, tree.root) == ours
    assert counts.get("cmdline", 0) == 0, counts
    # a read or two of a kept-open file a tick, no directory opened: a
    # sleeper with one thread costs its schedstat (it did not run: nothing
    # else changed), and once in IDLE_EVERY ticks its stat and wait channel
    # instead; a record made again (after a change) costs a schedstat
    # opened and read beside its stat once; a tick that finds the box
    # changed (processes come and go on a shared box) reads them again in
    # a whole pass
    stat, sched = counts.get("stat", 0), counts.get("schedstat", 0)
    assert procfs.IDLE_EVERY * len(ours) <= stat + sched <= 2 * (procfs.IDLE_EVERY + 1) * len(ours), counts
    assert counts.get("wchan", 0) <= len(ours), counts
    assert not [k for k in counts if k.startswith("open") and k != "open schedstat"], counts


def test_an_exec_is_seen(spawn):
    tree = spawn(["bash", "-c", _TREE], label="exec")
    s = Sampler(Targets([tree.root]))
    s.sample()
    time.sleep(3.5)  # the subshell is no longer young: only its exec tells
    s.sample()

    def late() -> bool:
        return any(e.proc.actor is not None and e.proc.actor.name == "late"
                   for e in s.sample()[0].entries.values())

    wait_for(late, timeout=10)


def test_a_launch_command_line_is_read_once(released_tree, monkeypatch):
    """The released runtime's actors keep ``python -m tractor._child`` for
    life: once old, their command lines are not read again every tick."""
    tree = released_tree(depth=1, breadth=2, hang="sleep")
    s = Sampler(Targets([tree.root]))

    def placed() -> bool:
        entries = s.sample()[0].entries.values()
        mine = [e for e in entries if e.root == tree.root]
        return len(mine) >= 3 and all(e.proc.actor is not None for e in mine)

    wait_for(placed, timeout=20)
    time.sleep(3.2)  # none of them young any more
    s.sample()
    ours = _ours(s, tree.root)
    named = [e.proc.actor.name for e in s.latest.entries.values()
             if e.root == tree.root and e.proc.pid != tree.root]
    assert sorted(named) == ["leaf_0", "leaf_1"], named
    counts = _count_reads(monkeypatch, ours)
    for _ in range(3):
        s.sample()
    assert counts.get("cmdline", 0) == 0, counts
    assert _ours(s, tree.root) == ours


# A process old enough that only a new comm can reveal its title: it sets
# one with setproctitle (as the current runtime does), which sets comm too.
_LATE_TITLE = r"""
import os, sys, time
import setproctitle
print("READY", flush=True)
sys.stdin.readline()
setproctitle.setproctitle(f"_subactor[titled@{os.getpid()}]")
print("TITLED", flush=True)
time.sleep(600)
"""


def test_a_title_set_late_is_seen(spawn):
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", _LATE_TITLE], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "READY"
        s = Sampler(Targets([proc.pid]))
        s.sample()
        time.sleep(3.2)  # no longer young
        s.sample()
        s.sample()
        assert s.latest.entries[proc.pid].proc.actor is None
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "TITLED"
        actor = s.sample()[0].entries[proc.pid].proc.actor
        assert actor is not None and actor.name == "titled"
    finally:
        proc.kill()
        proc.wait()


def test_an_unchanged_sleeper_is_copied_not_read_or_judged_again(spawn, monkeypatch):
    """A member asleep whose stat reads as on the last tick costs that one
    read: no detail read for it, no new judgement (the last one stands),
    and each tick's record is a copy, so an earlier snapshot never changes."""
    from tractor_diag import trees

    tree = spawn(["bash", "-c", "for i in 1 2 3; do sleep 600 & done; echo READY; wait"],
                 label="asleep")
    s = Sampler(Targets([tree.root]))
    wait_for(lambda: s.sample() and len(_ours(s, tree.root)) >= 4, timeout=10)
    time.sleep(3.2)  # no longer young: titles final
    s.sample()
    time.sleep(0.3)
    s.sample()
    ours = _ours(s, tree.root)
    detail: list[int] = []
    judged: list[int] = []
    real_detail, real_state = procfs._read_detail, trees.state_of
    monkeypatch.setattr(procfs, "_read_detail",
                        lambda proc, *a, **k: (detail.append(proc.pid), real_detail(proc, *a, **k))[1])
    monkeypatch.setattr(trees, "state_of",
                        lambda proc, *a, **k: (judged.append(proc.pid), real_state(proc, *a, **k))[1])
    before = s.latest
    for _ in range(procfs.IDLE_EVERY):
        time.sleep(0.25)
        s.sample()
    asleep = {pid for pid in ours if s.latest.entries[pid].proc.state == "S"}
    assert len(asleep) >= 4, {p: s.latest.entries[p].proc.state for p in ours}
    assert not asleep & set(detail), detail
    assert not asleep & set(judged), judged
    for pid in asleep:
        then, now = before.entries[pid], s.latest.entries[pid]
        assert now.proc is not then.proc and now.proc == then.proc
        assert now.state == then.state and now.cpu_percent == 0.0


def test_sampled_records_are_not_tracked_by_the_cycle_collector(spawn):
    """A dashboard's history holds tens of thousands of them: a full
    collection would walk them all, every few dozen ticks."""
    import gc

    s = Sampler(Targets([os.getpid()]))
    snap, _ = s.sample()
    entry = snap.entries[os.getpid()]
    assert not gc.is_tracked(snap) and not gc.is_tracked(entry)
    assert not gc.is_tracked(entry.proc)


# Run as pid 1 of a private PID namespace: the box's other processes (and
# their strays coming and going) are not there to force whole passes.
_STILL = r"""
import os, signal, subprocess, sys, tempfile, time
from tractor_diag import procfs
from tractor_diag import sampler as sampler_mod
from tractor_diag.sampler import Sampler
from tractor_diag.trees import Targets

fifo = os.path.join(tempfile.mkdtemp(), "go")
os.mkfifo(fifo)
# bash blocks opening the fifo (it does not run) until we write to it
tree = subprocess.Popen(["bash", "-c", f"for i in 1 2 3; do sleep 600 & done; "
                         f"read x < {fifo}; sleep 600 & read x < {fifo}; wait"])
s = Sampler(Targets([tree.pid]))
deadline = time.monotonic() + 10
while len(s.sample()[0].entries) < 4:
    assert time.monotonic() < deadline, "the tree did not start"
    time.sleep(0.1)
time.sleep(3.2)  # titles final
for _ in range(3):
    time.sleep(0.25)
    s.sample()
passes = []
real = sampler_mod.take_snapshot
sampler_mod.take_snapshot = lambda *a, **k: (passes.append(1), real(*a, **k))[1]
before = s.latest
for _ in range(procfs.IDLE_EVERY):
    time.sleep(0.25)
    snap, events = s.sample()
    assert not events, events
assert not passes, passes  # (a whole pass every WHOLE_EVERY ticks)
assert snap.entries.keys() == before.entries.keys()
assert all(e.stuck_for > 1.0 for e in snap.entries.values()), snap.entries
ours = set(snap.entries)
with open(fifo, "w") as f:  # a child joins
    f.write("go\n")
while len(procfs._read_children(tree.pid)) < 4:
    assert time.monotonic() < deadline + 20, "no fourth child"
    time.sleep(0.02)
snap, events = s.sample()
new = set(snap.entries) - ours
assert len(new) == 1 and [e.kind for e in events if e.pid in new] == ["spawned"], events
(victim,) = new  # our tree's child, in our own namespace
os.kill(victim, signal.SIGTERM)
while (st := procfs.read_stat(victim)) is not None and st.state != "Z":
    time.sleep(0.02)
snap, events = s.sample()
assert {e.kind for e in events if e.pid == victim} & {"exited", "zombied"}, events
print("OK")
tree.kill()
"""


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="needs root and unshare for a private pid namespace")
def test_a_still_tree_is_taken_again_until_something_moves():
    """Nothing shown ran and nothing that matters came or went: a tick takes
    the last snapshot again (one read of each member's schedstat, or of its
    stat in turn), with a whole pass every WHOLE_EVERY ticks. A child
    joining the tree and one that exits are each seen at the next tick."""
    out = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child",
         sys.executable, "-c", _STILL],
        capture_output=True, text=True, timeout=90)
    assert out.returncode == 0 and out.stdout.strip() == "OK", out.stdout + out.stderr
