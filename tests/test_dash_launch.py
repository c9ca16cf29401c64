"""Launch + supervise (tractor_diag.launch) against real processes."""
from __future__ import annotations

import os
import signal
import sys
import time

import pytest
import trio

from tractor_diag.launch import (
    LineSplitter,
    Supervisor,
    is_child_subreaper,
    set_child_subreaper,
)

from _dash_helpers import (
    DEMO_TREE, alive, alive_pinned, descendants_of, kill_pinned, pin_all,
)


# -- line splitting (pure) ------------------------------------------------------

def test_splitter_lines_and_partial_lines():
    s = LineSplitter(max_line=8)
    assert s.feed(b"ab\ncd") == ["ab"]
    assert s.feed(b"e\r\n\n") == ["cde", ""]
    assert s.feed(b"0123456789") == ["01234567"]  # emitted before its newline
    assert s.feed(b"\n") == ["89"]
    assert s.flush() == []


def test_splitter_keeps_utf8_split_across_reads():
    s = LineSplitter()
    data = "héllo wörld\n".encode()
    out = []
    for i in range(len(data)):
        out += s.feed(data[i:i + 1])
    assert out == ["héllo wörld"]


def test_splitter_flush_returns_the_unterminated_tail():
    s = LineSplitter()
    assert s.feed(b"no newline") == []
    assert s.flush() == ["no newline"]


# -- the supervisor on real children --------------------------------------------

def _launch(argv, body, *, grace=2.0, out=None, pinned=None, may_survive=(), **kw):
    """Run ``body(sup, nursery)`` with ``argv`` launched; cancel afterwards.

    What the test started is recorded (pid + start time) after ``body`` and
    must be gone once the supervisor has stopped: asserted here, before the
    last-resort clean-up, which kills only those recorded processes."""
    out = [] if out is None else out
    pinned = {} if pinned is None else pinned
    exits: list[tuple[int, int]] = []

    async def main():
        sup = Supervisor(argv, grace=grace,
                         on_output=lambda name, lines: out.extend((name, ln) for ln in lines),
                         on_exit=lambda pid, code: exits.append((pid, code)), **kw)
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                await nursery.start(sup.run)
                try:
                    await body(sup, nursery)
                finally:
                    pinned.update(pin_all([sup.pid, *descendants_of(sup.pid)]))
                nursery.cancel_scope.cancel()
        return sup

    try:
        sup = trio.run(main)
        survivors = [p for p in alive_pinned(pinned) if p not in may_survive]
    finally:
        kill_pinned(pinned)
    assert not survivors, f"the supervisor left processes of its tree running: {survivors}"
    return sup, out, exits


MIB_WRITER = (
    "import sys, time\n"
    "sys.stdout.write('x' * (1 << 20)); sys.stdout.flush()\n"
    "print('', flush=True)\n"
    "print('wrote it', flush=True)\n"
    "print('to stderr', file=sys.stderr, flush=True)\n"
    "sys.exit(7)\n"
)


def test_one_mib_without_newline_never_blocks_and_is_relayed():
    async def body(sup, nursery):
        while sup.returncode is None:
            await trio.sleep(0.02)
        await trio.sleep(0.2)  # let the drains catch up with the tail

    sup, out, exits = _launch([sys.executable, "-c", MIB_WRITER], body)
    stdout = [ln for name, ln in out if name == "stdout"]
    assert sum(len(ln) for ln in stdout if set(ln) == {"x"}) == 1 << 20
    assert max(len(ln) for ln in stdout) <= 4096  # relayed in pieces as it came
    assert "wrote it" in stdout
    assert ("stderr", "to stderr") in out
    assert sup.returncode == 7
    assert (sup.pid, 7) in exits


def test_child_gets_dev_null_stdin_and_its_own_session():
    prog = ("import os, sys\n"
            "print(os.readlink('/proc/self/fd/0'), os.getsid(0) == os.getpid(), flush=True)\n")

    async def body(sup, nursery):
        while sup.returncode is None:
            await trio.sleep(0.02)
        await trio.sleep(0.1)

    sup, out, _ = _launch([sys.executable, "-c", prog], body)
    assert ("stdout", "/dev/null True") in out
    assert sup.returncode == 0


def test_stop_sigints_the_tree_then_sigkills_survivors(xdg_runtime_dir):
    """The demo tree: everyone ends on SIGINT but 'stubborn', which ignores
    it and needs SIGKILL; nothing of the tree is left, no zombie either."""
    seen: dict[str, list[int]] = {}
    out: list[tuple[str, str]] = []

    async def body(sup, nursery):
        with trio.fail_after(30):
            while ("stdout", "READY") not in out:
                await trio.sleep(0.05)
        seen["pids"] = list(await trio.to_thread.run_sync(sup.tree))

    started = time.monotonic()
    sup, out, exits = _launch(DEMO_TREE, body, grace=1.5, out=out)
    took = time.monotonic() - started
    assert len(seen.get("pids", ())) >= 9, out[-10:]
    assert ("stdout", "READY") in out, "\n".join(ln for _, ln in out)
    assert not [p for p in seen["pids"] if alive(p)]
    assert sup.killed, "the stubborn actor should have needed SIGKILL"
    assert sup.returncode is not None
    assert took < 30


def test_subreaper_adopts_and_reaps_orphans_of_the_launched_tree(xdg_runtime_dir):
    """With PR_SET_CHILD_SUBREAPER, killing a mid-level actor re-parents its
    child to us: still part of the tree, stopped and reaped on quit."""
    assert set_child_subreaper(True)
    try:
        assert is_child_subreaper()
        info: dict[str, int] = {}

        async def body(sup, nursery):
            from tractor_diag.procfs import scan

            deadline = trio.current_time() + 30
            while ("stdout", "READY") not in out:
                assert trio.current_time() < deadline
                await trio.sleep(0.05)
            sup_pid = stubborn = None
            while trio.current_time() < deadline and stubborn is None:
                procs = await trio.to_thread.run_sync(scan)
                for p in procs.values():
                    if p.actor is not None and p.actor.name == "supervisor" and \
                            p.pid in descendants_of(sup.pid):
                        sup_pid = p.pid
                for p in procs.values():
                    if sup_pid and p.ppid == sup_pid:
                        stubborn = p.pid
                await trio.sleep(0.1)
            assert stubborn is not None
            info["stubborn"] = stubborn
            assert kill_pinned(pin_all([sup_pid])) == [sup_pid]
            while True:  # re-parented to us, not to init
                try:
                    with open(f"/proc/{stubborn}/stat", "rb") as f:
                        raw = f.read()
                except OSError:
                    break
                if int(raw[raw.rfind(b")") + 2:].split()[1]) == os.getpid():
                    info["adopted"] = 1
                    break
                await trio.sleep(0.05)
            members = await trio.to_thread.run_sync(sup.tree)
            info["in_tree"] = int(stubborn in members)
            await trio.sleep(0.8)  # the reaper loop collects the SIGKILLed supervisor
            info["supervisor_reaped"] = int(not os.path.exists(f"/proc/{sup_pid}"))

        out: list[tuple[str, str]] = []
        sup, out, exits = _launch(DEMO_TREE, body, grace=1.0, out=out)
    finally:
        set_child_subreaper(False)
    assert info.get("adopted") == 1, (info, out[-20:])
    assert info.get("in_tree") == 1
    assert info.get("supervisor_reaped") == 1
    assert not alive(info["stubborn"])
    assert not os.path.exists(f"/proc/{info['stubborn']}"), "adopted orphan not reaped"
    assert (info["stubborn"], -signal.SIGKILL) in exits, exits


def test_launch_of_a_missing_command_raises_oserror():
    async def main():
        await Supervisor(["/nonexistent/definitely-not-here"]).run()

    with pytest.raises(OSError):
        trio.run(main)



def test_cgroups_left_by_a_killed_dashboard_are_removed():
    """A dashboard SIGKILLed mid-run leaves its (empty) cgroup behind; the
    next launch removes it, but never one named in another PID namespace,
    whose pid means nothing here."""
    import subprocess

    from tractor_diag import cgroup

    try:
        probe = cgroup.LaunchCgroup.create()
    except cgroup.Unavailable as exc:
        pytest.skip(str(exc))
    parent = os.path.dirname(probe.path)
    probe.remove()
    dead = subprocess.Popen(["true"])
    dead.wait()
    here = os.path.join(parent, f"tractor-diag-launch.{cgroup._pidns()}.{dead.pid}.1")
    elsewhere = os.path.join(parent, f"tractor-diag-launch.1.{dead.pid}.1")
    os.mkdir(here)
    os.mkdir(elsewhere)
    try:
        cgroup.LaunchCgroup.create().remove()
        assert not os.path.exists(here)
        assert os.path.exists(elsewhere)
    finally:
        for d in (here, elsewhere):
            if os.path.exists(d):
                os.rmdir(d)
