"""The dump runner: every dump served from one thread, and a signal handler
that raises while a dump is being started (dump-all's SIGTERM) never leaves
that dump's process group behind."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tractor_diag import pyspy, stacks


class _Raised(Exception):
    pass


def _state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0]
    except (OSError, IndexError):
        return None


def test_a_signal_raising_as_the_spawn_returns_still_kills_the_dump(tmp_path, monkeypatch):
    """The handler's exception lands right after the spawn (the worst
    moment: the child runs, its pid is not recorded yet): the group is
    killed."""
    marker = tmp_path / "pids"
    script = f"sleep 600 & echo $$ $! > {marker}; wait"
    real = pyspy._spawn

    def spawn_then_signal(*args, **kw):
        pid = real(*args, **kw)
        os.kill(os.getpid(), signal.SIGUSR2)  # pending from here on
        time.sleep(0.05)  # lets an unblocked handler run before the pid is kept
        return pid

    def handler(signum, frame):
        raise _Raised()

    old = signal.signal(signal.SIGUSR2, handler)
    monkeypatch.setattr(pyspy, "_spawn", spawn_then_signal)
    try:
        with pytest.raises(_Raised):
            pyspy.run_bounded(["sh", "-c", script], 30)
    finally:
        monkeypatch.undo()
        signal.signal(signal.SIGUSR2, old)
    deadline = time.monotonic() + 5
    while not (marker.exists() and marker.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.02)
    if not marker.exists():
        return  # killed before it got as far as its sleep: nothing left
    sh, sleep = map(int, marker.read_text().split())
    try:
        deadline = time.monotonic() + 5
        while _state(sleep) not in (None, "Z", "X") and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _state(sleep) in (None, "Z", "X"), "the dump's group was left running"
        assert _state(sh) is None, "the dump's child was left unreaped"
    finally:
        for pid in (sleep, sh):
            if _state(pid) not in (None, "Z", "X"):
                os.kill(pid, signal.SIGKILL)  # ours: started by this test


def test_many_dumps_from_one_thread(tmp_path):
    """More commands than slots, each bounded: all end, in any order, with
    their own output, and no thread is started for them."""
    import threading

    argvs = [[sys.executable, "-c", f"import time; time.sleep({0.3 if i % 3 else 0}); print({i})"]
             for i in range(7)]
    argvs.append(["sh", "-c", "sleep 600 & wait"])  # hits its bound
    todo = list(enumerate(argvs))
    got: dict[int, pyspy.Ran] = {}
    peak = [0]
    threads = threading.active_count()

    def start(into):
        if not todo or len(into) >= 3:
            return None
        i, argv = todo.pop(0)
        dump = pyspy.Dump(i, argv, 1.0 if i == 7 else 20, None, pyspy.OUTPUT_CAP, into)
        peak[0] = max(peak[0], len(into))
        return dump

    def done(dump):
        assert threading.active_count() == threads
        got[dump.key] = dump.ran

    pyspy.drive(start, done)
    assert sorted(got) == list(range(8))
    for i in range(7):
        assert got[i].returncode == 0 and got[i].stdout.strip() == str(i).encode()
    assert got[7].returncode is None  # killed at its bound
    assert peak[0] == 3


def test_default_jobs_stays_within_the_cpus():
    cores = len(os.sched_getaffinity(0))
    assert min(2, cores) <= stacks.default_jobs() <= cores


def test_a_cut_dump_whose_other_pipe_is_ready_in_the_same_round():
    """stdout passes the cap while stderr has output waiting in the same
    select round: the cut lets go of both pipes, the waiting one included."""
    script = "head -c 20000 /dev/zero; head -c 1000 /dev/zero >&2; exec sleep 30"
    made = []

    def start(into):
        if made:
            return None
        made.append(pyspy.Dump(None, ["sh", "-c", script], 20, None, 1000, into))
        time.sleep(0.5)  # both pipes hold output before the first select
        return made[0]

    got = []
    pyspy.drive(start, lambda d: got.append(d.ran))
    (ran,) = got
    assert ran.cut and ran.returncode is None and len(ran.stdout) == 1000


def test_the_quick_re_check_reads_what_a_capture_needs(spawn):
    """`procfs.read_quick`: identity, state, wchan and signal mask as
    `read_proc` reads them, without the status detail."""
    from tractor_diag import procfs

    proc = spawn([sys.executable, "-c",
                  "import signal, time; signal.signal(signal.SIGUSR1, lambda *a: None); "
                  "print('READY', flush=True); time.sleep(60)"])
    full, quick = procfs.read_proc(proc.root), procfs.read_quick(proc.root)
    assert quick is not None and quick.pid == full.pid == proc.root
    assert (quick.ppid, quick.create_time, quick.cmdline) == (full.ppid, full.create_time,
                                                              full.cmdline)
    assert quick.handles_signal(signal.SIGUSR1) is True
    assert quick.state in "SR" and quick.wchan is not None
    assert quick.vol_ctx is None  # no status read
    assert procfs.read_quick(2 ** 22 + 12345) is None


def test_a_dump_runs_in_a_group_of_its_own_inside_our_session():
    """A group (killed whole on timeout) but not a session: with scheduler
    autogroups a session per dump would take a larger share of a loaded box."""
    ran = pyspy.run_bounded(["sh", "-c", "cut -d' ' -f5,6 /proc/$$/stat; echo $$"], 30)
    pgid, sid, pid = (int(x) for x in ran.stdout.split())
    assert pgid == pid
    assert sid == os.getsid(0)


def test_a_dump_gets_none_of_our_descriptors_and_default_signals(tmp_path):
    """Like subprocess: stdin on /dev/null, no descriptor of ours past
    stderr (an inheritable one included), SIGPIPE back to its default and
    no signal blocked, whatever this process ignores or holds."""
    r, w = os.pipe()
    os.set_inheritable(w, True)
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})
    try:
        fds = pyspy.run_bounded(["sh", "-c", "ls /proc/$$/fd; readlink /proc/$$/fd/0"], 30)
        # grep reads its own status: the spawned process itself
        status = pyspy.run_bounded(["grep", "-E", "SigBlk|SigIgn", "/proc/self/status"], 30)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        os.close(r)
        os.close(w)
    assert fds.returncode == 0 and status.returncode == 0, (fds.stderr, status.stderr)
    lines = fds.stdout.decode().split()
    assert lines[-1] == "/dev/null"
    got = sorted(int(x) for x in lines[:-1])
    assert got in ([0, 1, 2], [0, 1, 2, 255]), got  # 255: some shells' own
    masks = dict(line.split(":") for line in status.stdout.decode().splitlines())
    assert int(masks["SigBlk"], 16) == 0
    assert not int(masks["SigIgn"], 16) >> (signal.SIGPIPE - 1) & 1


def test_a_missing_program_is_an_oserror_and_leaves_nothing_open():
    before = sorted(os.listdir("/proc/self/fd"))
    with pytest.raises(OSError):
        pyspy.run_bounded(["/nonexistent/py-spy", "dump"], 5)
    with pytest.raises(OSError):
        pyspy.run_bounded(["no-such-program-anywhere-xyz"], 5)
    assert sorted(os.listdir("/proc/self/fd")) == before


@pytest.mark.parametrize("free_fds", [2, 3])
def test_out_of_descriptors_is_an_oserror_and_leaves_nothing_open(free_fds):
    """The first (2 free: the runner's selector takes one) or the second
    pipe cannot be made: nothing stays open, and the mark for the sampler
    ends (`captures`: else the traced process would not be judged for a
    minute)."""
    import resource

    from tractor_diag import captures

    traced = os.getpid()  # a mark is a note in this process only: nothing is touched
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    before = sorted(os.listdir("/proc/self/fd"))
    used = {int(x) for x in before}
    limit, free = 0, 0
    while free < free_fds:
        free += limit not in used
        limit += 1
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    try:
        with pytest.raises(OSError):
            pyspy.run_bounded(["true"], 5, traced=traced)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert sorted(os.listdir("/proc/self/fd")) == before
    later = time.monotonic() + captures.TAIL + 0.5
    assert traced not in captures.touched(later, later + 1)
