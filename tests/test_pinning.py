"""`tractor_diag.pinning` on real processes: a pin reaches the process it was
proven to be, or nobody.

Every process here is a child of the test, killed through its `Popen` (a
child not yet waited for cannot have its pid reused).
"""
from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from _reap_helpers import alive, build_leader_exits, leader_exits_argv, proc_info, wait_for
from tractor_diag import procfs
from tractor_diag.pinning import Gone, NoPidfd, Pin, Replaced

pytestmark = pytest.mark.timeout(60)

SLEEPER = [sys.executable, "-c", "import time; print('READY', flush=True); time.sleep(600)"]


@pytest.fixture
def children():
    started: list[subprocess.Popen] = []

    def start(argv) -> subprocess.Popen:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
        started.append(p)
        assert p.stdout.readline().startswith("READY")
        return p

    yield start
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait(10)


def observed(pid: int):
    proc = procfs.read_proc(pid, detail=False)
    assert proc is not None
    return proc


def test_signals_reach_the_pinned_process_then_nobody(children):
    p = children(SLEEPER)
    seen = observed(p.pid)
    with Pin.open(p.pid, start_time=seen.create_time, ppid=seen.ppid,
                  cmdline=seen.cmdline) as pin:
        assert not pin.exited()
        assert pin.proc().pid == p.pid
        assert not pin.wait(0.1)
        assert pin.send(signal.SIGTERM)
        assert pin.wait(5)
        assert pin.exited()
        assert pin.proc() is None  # a zombie now
        p.wait(5)
        assert pin.send(signal.SIGTERM) is False  # exited: nothing sent
    assert pin.closed
    with pytest.raises(Gone) as err:
        Pin.open(p.pid, start_time=seen.create_time)
    assert err.value.outcome == "gone"


@pytest.mark.parametrize("change", ["start", "ppid", "cmdline"])
def test_another_identity_is_refused(children, change):
    p = children(SLEEPER)
    seen = observed(p.pid)
    kw = dict(start_time=seen.create_time, ppid=seen.ppid, cmdline=seen.cmdline)
    if change == "start":
        kw["start_time"] += 1 / procfs._CLK_TCK  # one clock tick apart
    elif change == "ppid":
        kw["ppid"] = 1
    else:
        kw["cmdline"] = [*seen.cmdline, "--other"]
    with pytest.raises(Replaced) as err:
        Pin.open(p.pid, **kw)
    assert err.value.outcome == "replaced"
    assert str(p.pid) in str(err.value)
    assert alive(p.pid, proc_info(p.pid)["start"]) and p.poll() is None


def test_child_pin_needs_no_identity(children):
    p = children(SLEEPER)
    with Pin.of_child(p.pid) as pin:
        assert pin.start_ticks == proc_info(p.pid)["start"]
        assert pin.send(signal.SIGKILL) and pin.wait(5)


def test_no_pidfd_refuses_to_signal(children, monkeypatch):
    from tractor_diag import pinning

    p = children(SLEEPER)
    seen = observed(p.pid)
    monkeypatch.setattr(pinning, "_SUPPORTED", False)
    with pytest.raises(NoPidfd, match="refusing to signal"):
        Pin.open(p.pid, start_time=seen.create_time)
    with pytest.raises(NoPidfd):
        Pin.of_child(p.pid)
    assert p.poll() is None


def test_main_thread_exited_with_live_threads_is_pinned_live(children, tmp_path):
    """The leader of the thread group is a zombie, the process is not: the
    pin must not call it exited, and a signal through it must end it."""
    exe = build_leader_exits(str(tmp_path))
    p = children(leader_exits_argv(exe, "_subactor[leader@1]"))
    assert wait_for(lambda: proc_info(p.pid)["state"] == "Z")  # the leader's own stat
    seen = observed(p.pid)
    assert seen.leader_exited and seen.state != "Z" and seen.num_threads == 2
    assert seen.cmdline == ["_subactor[leader@1]"]
    assert seen.actor is not None and seen.actor.name == "leader"
    with Pin.open(p.pid, start_time=seen.create_time, ppid=seen.ppid,
                  cmdline=seen.cmdline) as pin:
        assert not pin.exited()
        assert pin.proc().leader_exited
        assert pin.send(signal.SIGINT)
        assert pin.wait(5)
    assert p.wait(5) == -signal.SIGINT
