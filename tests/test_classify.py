"""Buckets and states as docs/ARCHITECTURE.md ("Liveness") describes them
(pure rules over `Proc`)."""
from __future__ import annotations

import pytest

from tractor_diag.classify import (
    RUNAWAY_PERCENT,
    bucket_of,
    in_event_loop,
    is_reparented,
    is_subreaper,
    state_of,
    wchan_name,
)
from tractor_diag.model import BUCKETS, ActorInfo, Proc

ACTOR = ActorInfo(name="leaf", generation="released")


def proc(pid=100, ppid=50, state="S", wchan=None, actor=ACTOR, comm="python",
         create=1000.0) -> Proc:
    return Proc(pid=pid, ppid=ppid, uid=0, state=state, comm=comm, cmdline=["python"],
                create_time=create, utime=0.0, stime=0.0, rss=0, num_threads=1,
                wchan=wchan, actor=actor)


@pytest.mark.parametrize("wchan", [
    "do_epoll_wait", "ep_poll", "do_select", "core_sys_select", "do_sys_poll",
    "poll_schedule_timeout.constprop.0", "do_epoll_wait.part.0", "do_poll.isra.3",
])
def test_event_loop_waits_are_idle(wchan):
    assert in_event_loop(wchan)
    assert state_of(proc(wchan=wchan)) == "idle"


@pytest.mark.parametrize("wchan", [
    "hrtimer_nanosleep", "do_nanosleep", "do_wait", "futex_wait_queue", "pipe_read",
    "sigsuspend.isra.0", "unix_stream_read_generic", "wait_woken",
])
def test_other_waits_are_blocked(wchan):
    assert not in_event_loop(wchan)
    assert state_of(proc(wchan=wchan)) == "blocked"


def test_wchan_suffixes_stripped():
    assert wchan_name("sigsuspend.isra.0") == "sigsuspend"
    assert wchan_name("x.constprop.0.cold") == "x"
    assert wchan_name(None) == "" and wchan_name("") == ""


@pytest.mark.parametrize("letter, state", [
    ("R", "running"), ("D", "blocked"), ("T", "stopped"), ("t", "stopped"),
    ("Z", "exited"), ("X", "exited"),
])
def test_kernel_letters(letter, state):
    assert state_of(proc(state=letter, wchan="do_epoll_wait")) == state


def test_unknown_wchan_is_idle_not_blocked():
    # wchan unread (no detail) or momentarily 0: do not cry wolf
    assert state_of(proc(wchan=None)) == "idle"
    assert state_of(proc(wchan="")) == "idle"


def test_runaway_needs_a_rate_and_beats_running_but_not_exited_or_stopped():
    assert state_of(proc(state="R")) == "running"
    assert state_of(proc(state="R"), cpu_percent=RUNAWAY_PERCENT) == "runaway"
    assert state_of(proc(state="S", wchan="do_epoll_wait"), cpu_percent=99.0) == "runaway"
    assert state_of(proc(state="R"), cpu_percent=RUNAWAY_PERCENT - 0.1) == "running"
    assert state_of(proc(state="Z"), cpu_percent=100.0) == "exited"
    assert state_of(proc(state="T"), cpu_percent=100.0) == "stopped"


# --- re-parenting -----------------------------------------------------------

def test_adopted_by_init():
    assert is_reparented(proc(ppid=1), None)
    assert is_reparented(proc(ppid=1), proc(pid=1, ppid=0, comm="init", create=0.0))


def test_parent_gone_mid_scan_counts_as_reparented():
    assert is_reparented(proc(ppid=4242), None)


def test_original_parent_is_not_reparenting():
    parent = proc(pid=50, ppid=10, create=999.0)
    assert not is_reparented(proc(ppid=50), parent)
    # same clock tick is still "born before"
    assert not is_reparented(proc(ppid=50, create=1000.0), proc(pid=50, create=1000.0))


def test_parent_younger_than_child_means_adopted():
    # only a subreaper started after the child can have it as a child
    assert is_reparented(proc(ppid=50, create=1000.0), proc(pid=50, comm="myshim", create=1005.0))


@pytest.mark.parametrize("comm", ["systemd", "tini", "containerd-shim", "dumb-init"])
def test_known_subreapers_adopt(comm):
    reaper = proc(pid=50, ppid=1, comm=comm, actor=None, create=10.0)
    assert is_subreaper(reaper)
    assert is_reparented(proc(ppid=50), reaper)


def test_subreaper_given_by_pid():
    reaper = proc(pid=50, comm="supervisor", actor=None, create=10.0)
    assert not is_subreaper(reaper)
    assert not is_reparented(proc(ppid=50), reaper)
    assert is_subreaper(reaper, {50})
    assert is_reparented(proc(ppid=50), reaper, {50})


def test_init_and_kthreads_have_nothing_to_lose():
    assert not is_reparented(proc(pid=1, ppid=0), None)
    assert not is_reparented(proc(pid=2, ppid=0), None)


# --- buckets ----------------------------------------------------------------

def test_buckets_are_ordered_most_severe_first():
    assert BUCKETS == ("zombie", "orphan", "stray", "live")


def test_zombie_beats_everything():
    assert bucket_of(proc(state="Z", ppid=1), None, True) == "zombie"
    assert bucket_of(proc(state="Z", actor=None), proc(pid=50), True) == "zombie"


def test_orphan_is_a_reparented_actor_wherever_it_is():
    assert bucket_of(proc(ppid=1), None, in_root_tree=False) == "orphan"
    assert bucket_of(proc(ppid=1), None, in_root_tree=True) == "orphan"


def test_reparented_non_actor_is_not_an_orphan():
    assert bucket_of(proc(ppid=1, actor=None), None, in_root_tree=True) == "live"
    assert bucket_of(proc(ppid=1, actor=None), None, in_root_tree=False) == "stray"


def test_live_and_stray_by_tree_membership():
    parent = proc(pid=50, create=900.0)
    assert bucket_of(proc(), parent, in_root_tree=True) == "live"
    assert bucket_of(proc(), parent, in_root_tree=False) == "stray"


# -- CPU rates over too short a window ----------------------------------------

def _snap_of(cpu_seconds: float, mono: float, prev=None, rate_base=None):
    from tractor_diag.trees import Targets, build_snapshot

    p = proc(pid=100, ppid=1, state="R", actor=None)
    p.utime = cpu_seconds
    return build_snapshot({100: p}, Targets([100]), prev=prev, rate_base=rate_base,
                          monotonic=mono, include_strays=False)


def test_two_ticks_a_few_milliseconds_apart_are_not_a_runaway():
    """CPU time moves in 10 ms ticks: 20 ms of CPU seen 20 ms apart would
    read as 100%. Below trees.MIN_RATE_WINDOW there is no rate at all."""
    first = _snap_of(1.00, mono=100.0)
    second = _snap_of(1.02, mono=100.02, prev=first)
    entry = second.entries[100]
    assert entry.cpu_percent is None and entry.state != "runaway"


def test_the_rate_comes_from_an_older_base_when_given():
    base = _snap_of(1.00, mono=99.0)
    prev = _snap_of(1.49, mono=99.98, prev=base)
    snap = _snap_of(1.50, mono=100.0, prev=prev, rate_base=base)
    assert snap.entries[100].cpu_percent == pytest.approx(50.0)
    # and a sustained burn over a long enough window still is a runaway
    hot = _snap_of(1.99, mono=100.0, prev=prev, rate_base=base)
    assert hot.entries[100].state == "runaway"


def test_kernel_runaway_needs_it_runnable_when_the_window_opens():
    """A sleeper woken inside the window (by our own py-spy attach or task
    request) and queued for most of a short window on a loaded box is not a
    runaway; the same counters from a process already runnable are."""
    from tractor_diag.kstate import is_runaway
    from tractor_diag.whymodel import KernelSample

    def ks(state, at, run_ms, wait_ms, vol=5):
        return KernelSample(pid=100, create_time=1.0, at=at, state=state, vol_ctx=vol,
                            run_ns=int(run_ms * 1e6), wait_ns=int(wait_ms * 1e6))

    busy_since_woken = (ks("S", 10.0, 100, 100), ks("R", 10.25, 130, 300))
    assert is_runaway(*busy_since_woken) is False
    assert is_runaway(ks("R", 10.0, 100, 100), busy_since_woken[1]) is True


def test_a_young_process_at_full_cpu_is_booting_not_a_runaway():
    import time

    now = 2000.0
    young = proc(state="R", create=now - 1.0)
    old = proc(state="R", create=now - 10.0)
    assert state_of(young, cpu_percent=100.0, now=now) != "runaway"
    assert state_of(old, cpu_percent=100.0, now=now) == "runaway"
    assert state_of(proc(state="R", create=time.time()), cpu_percent=100.0) != "runaway"


def test_the_runaway_window_is_between_the_two_reads_of_the_process():
    """A pass that stalled after reading the process (its thread waiting for
    the GIL while the dashboard draws) stamps its snapshot late: over the
    snapshots' 0.56 s a loop that ran all of the 0.28 s between its two
    schedstat reads is at 50%. The rule takes the reads' own times."""
    from tractor_diag.classify import runaway_between

    def rec(at, run_ms):
        p = proc(state="R", create=1.0)
        p.vol_ctx, p.sched_run, p.sched_wait, p.sched_at = 7, int(run_ms * 1e6), 0, at
        return p

    old, new = rec(10.0, 1000), rec(10.28, 1280)
    assert runaway_between(old, new, 0.56) is True
    old.sched_at = None  # not read with its time: the snapshots' window
    assert runaway_between(old, new, 0.56) is False
