"""``/proc/<pid>/stat`` parsing (recorded lines) and the one-pass scan on
real processes: odd comms, zombies with exit codes, vanished pids."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

import _leaks_helpers as lh

from tractor_diag import procfs
from tractor_diag.procfs import _parse_stat

pytestmark = pytest.mark.skipif(not procfs.HAVE_PROCFS, reason="needs Linux /proc")

TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
BTIME = 1_700_000_000.0

# Recorded from real processes on a 6.x kernel.
STAT_PARENS = (b"11749 (a) b (c) S 11708 11706 6585 0 -1 4194304 1928 0 0 0 1 0 0 0 20 0 1 0 "
               b"758306 16961536 3358 18446744073709551615 94409307021312 94409307021653 "
               b"140737373583632 0 0 0 0 16781312 2 1 0 0 17 1 0 0 0 0 0 94409307033008 "
               b"94409307033624 94409797795840 140737373591572 140737373591656 140737373591656 "
               b"140737373593551 0\n")
STAT_ZOMBIE_EXIT3 = (b"11752 (python3) Z 11708 11706 6585 0 -1 4227148 227 0 0 0 0 0 0 0 20 0 1 0 "
                     b"758336 0 0 18446744073709551615 0 0 0 0 0 0 0 16781312 2 1 0 0 17 0 0 0 0 0 0 "
                     b"0 0 0 0 0 0 0 768\n")
STAT_ZOMBIE_KILLED = (b"11753 (python3) Z 11708 11706 6585 0 -1 4228172 1 0 0 0 0 0 0 0 20 0 1 0 "
                      b"758356 0 0 18446744073709551615 0 0 0 0 0 0 0 16781312 2 1 0 0 17 0 0 0 0 0 0 "
                      b"0 0 0 0 0 0 0 9\n")
STAT_KTHREAD = (b"2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 8 0 0 "
                b"18446744073709551615 0 0 0 0 0 0 0 2147483647 0 1 0 0 0 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n")
STAT_SUBACTOR = (b"10543 (_subactor[leaf_) S 10540 10535 6585 0 -1 4194304 4775 37 0 0 6 0 0 0 20 0 2 0 "
                 b"747572 110731264 7051 18446744073709551615 93917482913792 93917482914133 "
                 b"140733486971600 0 0 0 0 16781312 514 0 0 0 17 1 0 0 0 0 0 93917482925488 "
                 b"93917482926104 93918313517056 140733486975284 140733486975467 140733486975467 "
                 b"140733486976981 0\n")


def fields(line: bytes, pid: int = 1):
    keys = ("ppid", "state", "comm", "utime", "stime", "threads", "create", "rss", "exit", "sigcatch")
    return dict(zip(keys, _parse_stat(pid, line, BTIME)))


def test_comm_with_parens_and_spaces():
    f = fields(STAT_PARENS)
    assert f["comm"] == "a) b (c"
    assert (f["ppid"], f["state"], f["threads"]) == (11708, "S", 1)
    assert f["utime"] == pytest.approx(1 / TCK)
    assert f["create"] == pytest.approx(BTIME + 758306 / TCK)
    assert f["rss"] == 3358 * PAGE
    assert f["exit"] is None  # only zombies carry one
    assert f["sigcatch"] == 2  # SIGINT caught: python's KeyboardInterrupt handler


@pytest.mark.parametrize("comm", [b"(sd-pam)", b"a) b (c", b")", b"((", b"x y z", b"", b"tab\there"])
def test_any_comm_survives(comm):
    line = STAT_SUBACTOR.replace(b"(_subactor[leaf_)", b"(" + comm + b")")
    f = fields(line)
    assert f["comm"] == comm.decode()
    assert (f["ppid"], f["state"], f["threads"]) == (10540, "S", 2)


def test_subactor_comm_is_the_15_byte_title():
    f = fields(STAT_SUBACTOR)
    assert f["sigcatch"] == 514  # SIGINT and SIGUSR1: an armed task-dump handler
    assert f["comm"] == "_subactor[leaf_" and len(f["comm"]) == 15
    assert f["utime"] == pytest.approx(6 / TCK)


def test_zombie_exit_status():
    assert fields(STAT_ZOMBIE_EXIT3)["exit"] == 3
    assert fields(STAT_ZOMBIE_EXIT3)["state"] == "Z"
    assert fields(STAT_ZOMBIE_KILLED)["exit"] == -signal.SIGKILL


def test_kernel_thread():
    f = fields(STAT_KTHREAD, 2)
    assert (f["ppid"], f["comm"], f["rss"]) == (0, "kthreadd", 0)
    # the flags field (PF_KTHREAD), not the pid, says it
    assert _parse_stat(2, STAT_KTHREAD, BTIME).kthread is True
    assert _parse_stat(2, STAT_KTHREAD.replace(b" 2129984 ", b" 4194560 "), BTIME).kthread is False
    assert _parse_stat(10543, STAT_SUBACTOR, BTIME).kthread is False


@pytest.mark.parametrize("line", [b"", b"garbage", b"12 (x", b"12 (x) S 1 2 3", b"\xff\xfe"])
def test_malformed_stat_is_skipped(line):
    assert _parse_stat(12, line, BTIME) is None


# --- the scan, on real processes ---------------------------------------------

def _spawn(code: str, *args: bytes) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable.encode(), b"-c", code.encode(), *args],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"ok"
    return proc


def _end(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=5)


def test_scan_reads_odd_comm_and_non_utf8_argv():
    proc = _spawn(
        "import sys,time; open('/proc/self/comm','w').write('a) b (c'); print('ok', flush=True); time.sleep(30)",
        b"caf\xe9", b"plain",
    )
    try:
        got = procfs.scan(only=[proc.pid])[proc.pid]
        assert got.comm == "a) b (c"
        assert got.ppid == os.getpid() and got.state in "SR"
        assert got.cmdline[-1] == "plain" and got.cmdline[-2].startswith("caf")
        assert got.actor is None
        assert got.uid == os.getuid()
        assert abs(got.create_time - time.time()) < 30
        assert got.rss > 0 and got.num_threads >= 1
    finally:
        _end(proc)


def test_read_proc_detail_of_a_live_process():
    proc = _spawn(
        "import signal,time; signal.signal(signal.SIGUSR1, lambda *a: None); print('ok', flush=True); time.sleep(30)")
    try:
        deadline = time.monotonic() + 10
        while True:  # until it is asleep in time.sleep (it may still be running)
            got = procfs.read_proc(proc.pid)
            assert got is not None
            if got.state == "S" and got.wchan:
                break
            assert time.monotonic() < deadline, got
            time.sleep(0.02)
        assert got.handles_signal(signal.SIGUSR1) is True
        assert got.handles_signal(signal.SIGUSR2) is False
        assert got.vol_ctx is not None and got.invol_ctx is not None
        assert got.cgroup is not None
        bare = procfs.read_proc(proc.pid, detail=False)
        assert bare is not None and bare.wchan is None and bare.vol_ctx is None
        # the caught-signal mask comes with stat, so even a bare read has it
        assert bare.handles_signal(signal.SIGUSR1) is True
    finally:
        _end(proc)


def test_zombie_scanned_with_exit_code_and_empty_cmdline():
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(7)"], stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            got = procfs.read_proc(proc.pid)
            if got is not None and got.state == "Z":
                break
            assert time.monotonic() < deadline, "child never became a zombie"
            time.sleep(0.02)
        assert got.exit_code == 7 and got.cmdline == []
    finally:
        proc.wait(timeout=5)


def test_vanished_pid_is_simply_absent():
    proc = subprocess.Popen(["true"])
    proc.wait(timeout=5)
    assert procfs.read_proc(proc.pid) is None
    assert procfs.scan(only=[proc.pid, os.getpid()]).keys() == {os.getpid()}


def test_full_scan_sees_us_and_our_parent_once():
    procs = procfs.scan()
    me = procs[os.getpid()]
    assert me.ppid == os.getppid() and os.getppid() in procs
    assert all(pid == p.pid for pid, p in procs.items())


def test_root_test_marks_a_whole_subtree_for_detail():
    parent = subprocess.Popen(
        ["sh", "-c", "sleep 30 & sleep 30 & echo ok; wait"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    kids = []
    try:
        assert parent.stdout.readline().strip() == b"ok"
        deadline = time.monotonic() + 10
        while True:  # until both children have exec'd sleep and sleep in it
            procs = procfs.scan(lambda pid, argv, comm: pid == parent.pid, detail_actors=False,
                                full=True)
            kids = [p for p in procs.values() if p.ppid == parent.pid]
            if len(kids) == 2 and all(k.comm == "sleep" and k.state == "S" for k in kids):
                break
            assert time.monotonic() < deadline, kids
            time.sleep(0.02)
        assert procs[parent.pid].vol_ctx is not None
        assert all(k.vol_ctx is not None and k.wchan is not None for k in kids)
        # and a process outside the subtree was not detailed
        assert procs[os.getpid()].vol_ctx is None
    finally:
        for kid in kids:
            try:
                os.kill(kid.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        parent.kill()
        parent.wait(timeout=5)


def test_detail_sizes_and_fill_detail():
    proc = _spawn("import time; print('ok', flush=True); time.sleep(30)")
    try:
        only_me = lambda pid, argv, comm: pid == proc.pid  # noqa: E731
        light = procfs.scan(only_me, only=[proc.pid])[proc.pid]
        assert light.wchan is not None and light.vol_ctx is None and light.cgroup is None
        full = procfs.scan(only_me, only=[proc.pid], full=True)[proc.pid]
        assert full.vol_ctx is not None and full.cgroup is not None
        bare = procfs.scan(only=[proc.pid])
        procfs.fill_detail(bare, [proc.pid, 999_999_999], full=False)
        assert bare[proc.pid].wchan is not None and bare[proc.pid].vol_ctx is None
        procfs.fill_detail(bare, [proc.pid])
        assert bare[proc.pid].vol_ctx is not None and bare[proc.pid].cgroup is not None
    finally:
        _end(proc)


def teststatus_field_lookup():
    from tractor_diag.procfs import status_field

    status = (b"Name:\tpython\nUid:\t1000\t1000\t1000\t1000\nSigCgt:\t0000000000000202\n"
              b"voluntary_ctxt_switches:\t17\nnonvoluntary_ctxt_switches:\t3")
    assert status_field(status, b"Uid") == b"\t1000\t1000\t1000\t1000"
    assert status_field(status, b"nonvoluntary_ctxt_switches") == b"\t3"
    assert status_field(status, b"voluntary_ctxt_switches") == b"\t17"
    assert status_field(status, b"Gid") is None


def test_boot_time_is_plausible():
    assert 0 < procfs.boot_time() <= time.time()


def _small_tree():
    """sh -> (sh -> sleep, sleep): a real tree of 4, its pids once built."""
    root = subprocess.Popen(["sh", "-c", "sh -c 'sleep 60 & wait' & sleep 60 & wait"])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = procfs.subtrees([root.pid])
        if found is not None and len(found[0]) == 4 and all(
                (p := procfs.read_quick(pid)) is not None and p.comm in ("sh", "sleep")
                for pid in found[0]):
            return root, found[0]
        time.sleep(0.02)
    root.kill()
    raise AssertionError("tree not built")


def test_given_trees_without_strays_are_read_alone(monkeypatch):
    """stacks (and ptree --no-strays) on given pids read those trees and the
    roots' parents, not every process: the same snapshot as a whole pass."""
    from tractor_diag import trees

    root, members = _small_tree()
    starts = {pid: lh.start_ticks(pid) for pid in members}  # what kill_if checks
    try:
        calls = []
        real_scan = procfs.scan

        def scan(*a, **kw):
            calls.append(kw.get("only"))
            return real_scan(*a, **kw)

        monkeypatch.setattr(procfs, "scan", scan)
        alone = trees.snapshot_for([str(root.pid)], strays=False)
        assert calls and all(only is not None for only in calls)
        assert sorted(alone.entries) == sorted(members)
        calls.clear()
        whole = trees.snapshot_for([str(root.pid)], strays=True)
        assert None in calls  # strays wanted: every process is read
        shape = lambda s: {pid: (e.bucket, e.root, e.depth, e.children, e.proc.cmdline)  # noqa: E731
                           for pid, e in s.entries.items() if e.root is not None}
        assert shape(alone) == shape(whole)
        assert alone.roots == whole.roots == [root.pid]
    finally:
        for pid in reversed(members[1:]):
            lh.kill_if(pid, start=starts.get(pid))
        root.kill()
        root.wait()


def test_a_thread_id_as_root_falls_back_to_the_whole_pass():
    """A whole pass lists no thread ids: given one, the children lists do
    not answer (the whole pass's answer stands)."""
    import threading

    ready = threading.Event()
    stop = threading.Event()

    def run():
        ready.set()
        stop.wait(30)

    t = threading.Thread(target=run)
    t.start()
    try:
        ready.wait(5)
        assert procfs.subtrees([t.native_id]) is None
        assert procfs.subtrees([os.getpid()]) is not None
    finally:
        stop.set()
        t.join()
