"""The sampler on real processes: events, deltas, bounded history, and the
trio loop's pause / interval changes (also from another thread)."""
from __future__ import annotations

import signal
import threading
import time

import pytest
import trio

from _ptree_helpers import Puppet, cpu_boost, proc_state, wait_for  # noqa: F401 (fixture)
from tractor_diag import procfs
from tractor_diag.model import to_json
from tractor_diag.sampler import Sampler
from tractor_diag.trees import Targets


@pytest.fixture
def puppet(spawn, tmp_path) -> Puppet:
    return Puppet(spawn, tmp_path / "puppet")


def events_of(events, pid: int) -> dict[str, object]:
    """{kind: event} of one pid's events in a tick."""
    return {e.kind: e for e in events if e.pid == pid}


def wait_state(pid: int, letters: str) -> None:
    wait_for(lambda: (proc_state(pid) or "?") in letters, timeout=10)


def test_lifecycle_events(puppet):
    s = Sampler(Targets([puppet.pid]))
    snap, events = s.sample()
    assert events == [] and snap.roots == [puppet.pid] and snap.samples == 1

    # spawned
    sleeper = puppet.pid_of("sleep")  # forked by now, so the next tick sees it
    snap, events = s.sample()
    assert [e.kind for e in events] == ["spawned"] and events[0].pid == sleeper
    assert snap.entries[sleeper].depth == 1 and snap.entries[sleeper].bucket == "live"

    # seen alive, then exits unreaped: zombied with its code, then exited
    kid = puppet.pid_of("exit-later", 5)
    _, events = s.sample()
    assert "spawned" in events_of(events, kid)
    puppet.do("release", kid)
    wait_state(kid, "Z")
    snap, events = s.sample()
    assert snap.entries[kid].bucket == "zombie" and snap.entries[kid].state == "exited"
    assert events_of(events, kid)["zombied"].exit_code == 5
    puppet.do("reap", kid)
    _, events = s.sample()
    assert events_of(events, kid)["exited"].exit_code == 5

    # killed by a signal: the code is -N, as in subprocess
    puppet.handle.kill_pid(sleeper, signal.SIGTERM)
    wait_state(sleeper, "Z")
    _, events = s.sample()
    assert events_of(events, sleeper)["zombied"].exit_code == -signal.SIGTERM

    # born and dead between two ticks: spawned and zombied at once
    quick = puppet.pid_of("exit-later", 4)
    puppet.do("release", quick)
    wait_state(quick, "Z")
    _, events = s.sample()
    got = events_of(events, quick)
    assert "spawned" in got and got["zombied"].exit_code == 4

    # exited and reaped between two ticks: the code comes from whoever
    # waited on it (the launcher), when it says so
    reaped = puppet.pid_of("exit-later", 9)
    s.sample()
    puppet.do("release", reaped)
    assert puppet.do("reap", reaped) == str(9 << 8)
    s.known_exit_codes[reaped] = 9
    _, events = s.sample()
    assert events_of(events, reaped)["exited"].exit_code == 9

    # nothing else happened to the puppet itself, and events encode
    assert not events_of(s.events, puppet.pid)
    to_json(list(s.events))


def test_orphaned_and_left_the_tree(puppet):
    s = Sampler(Targets([puppet.pid]))
    mid, leaf = map(int, puppet.do("actor-pair").split())
    sh, sleeper = map(int, puppet.do("shell-pair").split())
    wait_for(lambda: proc_state(sleeper) == "S")
    snap, _ = s.sample()
    assert snap.entries[leaf].proc.actor.name == "leaf"
    assert snap.entries[leaf].bucket == "live" and snap.entries[leaf].root == puppet.pid

    puppet.handle.kill_pid(mid, signal.SIGKILL)
    puppet.handle.kill_pid(sh, signal.SIGKILL)
    wait_state(mid, "Z")
    wait_state(sh, "Z")
    snap, events = s.sample()

    orphaned = events_of(events, leaf)["orphaned"]
    assert orphaned.title == "leaf" and orphaned.detail
    assert snap.entries[leaf].bucket == "orphan" and snap.entries[leaf].root is None
    assert leaf in snap.strays
    assert events_of(events, mid)["zombied"].exit_code == -signal.SIGKILL
    # the re-parented sleep is alive, just outside every watched tree
    assert sleeper not in snap.entries
    assert proc_state(sleeper) in ("S", "R")
    assert not events_of(events, sleeper)


def test_runaway_then_recovered(puppet, cpu_boost):
    s = Sampler(Targets([puppet.pid]))
    burner = puppet.pid_of("burn")
    cpu_boost(burner)
    s.sample()

    def tick_until(kind: str, timeout: float = 12.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(0.5)
            snap, events = s.sample()
            if kind in events_of(events, burner):
                return snap, events_of(events, burner)[kind]
        raise AssertionError(f"no {kind} event for the burner within {timeout}s: "
                             f"{[(e.kind, e.pid) for e in s.events]}")

    snap, event = tick_until("runaway")
    entry = snap.entries[burner]
    assert entry.state == "runaway" and entry.cpu_percent >= 90
    assert entry.proc.actor is not None and entry.proc.actor.name == "burner"
    assert "% CPU" in event.detail
    assert snap.samples == 2 and snap.window > 0

    puppet.do("calm", burner)
    snap, _ = tick_until("recovered")
    assert snap.entries[burner].state != "runaway"
    # no CPU progress since: "stuck for" counts up
    time.sleep(0.3)
    snap, _ = s.sample()
    assert snap.entries[burner].stuck_for is not None and snap.entries[burner].stuck_for > 0.2
    assert snap.entries[burner].proc.vol_ctx is not None  # the sampler reads full detail


def test_history_and_events_are_bounded(puppet):
    s = Sampler(Targets([puppet.pid]), history=3, max_events=4)
    for _ in range(3):
        for _ in range(2):
            puppet.do("sleep")
        s.sample()
    s.sample()
    assert len(s.history) == 3 and s.latest is s.history[-1]
    assert len(s.events) == 4
    assert all(e.kind == "spawned" for e in s.events)


def test_trio_loop_interval_and_pause(puppet):
    s = Sampler(Targets([puppet.pid]), interval=30.0)
    ticks: list[float] = []

    def on_sample(snap, events):
        assert snap.roots == [puppet.pid]
        ticks.append(time.monotonic())

    def from_another_thread(fn, *args):
        t = threading.Thread(target=fn, args=args)
        t.start()
        t.join(5)

    async def wait_ticks(n: int, timeout: float) -> None:
        with trio.fail_after(timeout):
            while len(ticks) < n:
                await trio.sleep(0.01)

    async def main():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(s.run, on_sample)
            await wait_ticks(1, 10)
            # the 30 s wait is cut short by a new interval set from outside trio
            await trio.to_thread.run_sync(from_another_thread, s.set_interval, 0.05)
            await wait_ticks(4, 5)
            assert s.interval == 0.05

            await trio.to_thread.run_sync(from_another_thread, s.pause)
            await trio.sleep(0.5)  # a tick already under way may land
            paused_at = len(ticks)
            await trio.sleep(0.6)
            assert len(ticks) == paused_at, "sampled while paused"

            s.pause(False)  # from inside trio too
            await wait_ticks(paused_at + 3, 5)
            s.set_interval(0.01)  # clamped: never a busy loop
            assert s.interval == 0.05
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert len(s.history) == len(ticks)
    # after the run ended, poking must not raise
    s.set_interval(1.0)
    s.pause()



_NAMED_KIDS = r"""
import os, subprocess, sys, time
flag = sys.argv[1]
kid = '''
import os, sys, time, setproctitle
if sys.argv[1] == "actor":
    setproctitle.setproctitle(f"_subactor[crash_and_burn@{os.getpid()}]")
print("UP", flush=True)
while not os.path.exists(sys.argv[2]):
    time.sleep(0.05)
'''
kids = [subprocess.Popen([sys.executable, "-c", kid, mode, flag, "a_long_descriptive_name"],
                         stdout=subprocess.PIPE)
        for mode in ("actor", "plain")]
for k in kids:
    k.stdout.readline()
print("READY", *[k.pid for k in kids], flush=True)
time.sleep(600)   # never reaps them: once the flag exists they are zombies
"""


def test_the_dead_keep_their_last_known_name(tmp_path):
    """A zombie's cmdline reads empty and its comm is cut at 15 bytes
    (``_subactor[crash``): the sampler shows the name it had alive, in the
    snapshot and in the zombied event."""
    import subprocess
    import sys

    flag = tmp_path / "exit-now"
    parent = subprocess.Popen([sys.executable, "-c", _NAMED_KIDS, str(flag)],
                              stdout=subprocess.PIPE, text=True)
    try:
        actor, plain = map(int, parent.stdout.readline().split()[1:])
        s = Sampler(Targets([parent.pid]))
        snap, _ = s.sample()
        assert snap.entries[actor].proc.title == "crash_and_burn"
        assert "a_long_descriptive_name" in snap.entries[plain].proc.title
        flag.touch()
        for pid in (actor, plain):
            wait_state(pid, "Z")
        snap, events = s.sample()
        a, p = snap.entries[actor], snap.entries[plain]
        assert a.bucket == "zombie" and p.bucket == "zombie"
        assert a.proc.title == "crash_and_burn" and not a.proc.actor.name_truncated
        assert "a_long_descriptive_name" in p.proc.title
        assert events_of(events, actor)["zombied"].title == "crash_and_burn"
        snap, _ = s.sample()  # and it stays remembered
        assert snap.entries[actor].proc.title == "crash_and_burn"
        # without an earlier sample there is nothing to remember: the comm
        fresh, _ = Sampler(Targets([parent.pid])).sample()
        assert fresh.entries[actor].proc.actor.name_truncated
        assert fresh.entries[plain].proc.title.startswith("[")
    finally:
        parent.kill()
        parent.wait(10)


def test_history_is_bounded_in_bytes(puppet):
    """A byte bound holds whatever the sample count allows, the estimate
    follows what the samples really hold, and the latest two always stay."""
    import gc
    import tracemalloc

    for _ in range(6):
        puppet.do("sleep")
    wait_for(lambda: len(Sampler(Targets([puppet.pid])).sample()[0].entries) >= 7, timeout=10)
    # What the samples really hold is what letting them go frees: measured
    # so, the box's other processes coming and going (the sampler's caches
    # of them) do not count. Traced before the first sample, so that every
    # object a sample holds is one tracemalloc saw made.
    tracemalloc.start()
    try:
        big = Sampler(Targets([puppet.pid]), history=1000, history_bytes=1 << 40)
        for _ in range(procfs.IDLE_EVERY + 9):
            big.sample()
        per_sample = big.history_size / len(big.history)
        kept = len(big.history)
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        big.history.clear()  # the last sample may stay, held by the next diff
        gc.collect()
        held = (before - tracemalloc.get_traced_memory()[0]) / kept
    finally:
        tracemalloc.stop()
    # Never under (the bound must hold); over by what a sample shares with
    # the sampler's caches (names, command lines), which letting it go does
    # not free: 1.8x here.
    assert 0.9 * held <= per_sample <= 2.5 * held, (per_sample, held)

    bound = int(per_sample * 5.5)
    s = Sampler(Targets([puppet.pid]), history=1000, history_bytes=bound)
    for _ in range(12):
        s.sample()
        assert s.history_size <= bound and s.latest is s.history[-1]
    assert 4 <= len(s.history) <= 6
    assert s.history_size == sum(s._sizes)

    tiny = Sampler(Targets([puppet.pid]), history_bytes=1)
    for _ in range(4):
        tiny.sample()
    assert len(tiny.history) == 2  # the rates and diffs need two


_TITLED_AT_DEATH = """
import sys
sys.stdout.write('READY\\n'); sys.stdout.flush()
sys.stdin.readline()
import os, setproctitle
setproctitle.setproctitle(f'_subactor[crash_and_burn@{os.getpid()}]')
os._exit(3)
"""


def test_an_actor_titled_just_before_it_died_is_named_by_its_comm():
    """Seen alive only with its launch command line, then a zombie whose
    comm is the title it set just before dying: an actor (cut name), not the
    launch command line carried over from the last live sample."""
    import subprocess
    import sys

    pytest.importorskip("setproctitle")
    child = subprocess.Popen([sys.executable, "-c", _TITLED_AT_DEATH],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert child.stdout.readline() == b"READY\n"
        s = Sampler(Targets([child.pid]))
        for _ in range(2):
            assert s.sample()[0].entries[child.pid].proc.actor is None
        child.stdin.write(b"go\n")
        child.stdin.flush()
        wait_for(lambda: proc_state(child.pid) == "Z", timeout=10)
        entry = s.sample()[0].entries[child.pid]
        assert entry.bucket == "zombie"
        assert entry.proc.actor is not None and entry.proc.actor.name == "crash", entry.proc
        assert entry.proc.actor.name_truncated
    finally:
        child.kill()  # our own child: its pid is ours until we reap it
        child.wait(10)
