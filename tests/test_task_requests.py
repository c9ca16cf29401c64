"""Who gets a task-tree request (SIGUSR1), what asking may change, and the
dump files themselves: real processes, real signals.

- a program whose SIGUSR1 means "graceful restart" is never signalled
  unless named with --tasks-from, even with a forged announcement;
- a handler that reaps exited children while answering (tractor's relay
  does, through Popen.send_signal) cannot make a zombie vanish from the
  report, and the report says what asking may have changed;
- dump files: 0600, never through a planted symlink, rotated, and named per
  PID namespace (a process in its own PID namespace is still collected).
"""
from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import _leaks_helpers as lh

from tractor_diag import taskdump
from tractor_diag.cli import run_verb
from tractor_diag.stackmodel import procs_from_json

from test_stacks import alive, cli, stacks_json

REPO = Path(__file__).resolve().parent.parent

# A non-tractor daemon: SIGUSR1 = "graceful restart" (it logs a line to the
# file named on its command line), and a child of its own.
_RESTARTER = textwrap.dedent("""
    import signal, subprocess, sys, time
    log = sys.argv[1]
    def restart(signum, frame):
        with open(log, 'a') as f:
            f.write('RESTARTED\\n')
    signal.signal(signal.SIGUSR1, restart)
    child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])
    print('READY', child.pid, flush=True)
    while True:
        time.sleep(600)
""")


def _ticks(pid: int) -> int:
    raw = Path(f"/proc/{pid}/stat").read_bytes()
    return int(raw[raw.rindex(b")") + 2:].split()[19])


def test_graceful_restart_handler_is_not_signalled(spawn, tmp_path):
    log = tmp_path / "restarts.log"
    proc = spawn([sys.executable, "-c", _RESTARTER, str(log)])
    pid = proc.root
    procs = stacks_json("--task-timeout", "0.5", str(pid))
    assert procs[pid].tasks.status == "not-asked", procs[pid].tasks
    rc, text, _ = cli("--color", "never", "--task-timeout", "0.5", str(pid))
    assert rc == 0 and "not-asked: not a tractor actor" in text and "--tasks-from" in text
    time.sleep(0.3)
    assert not log.exists(), "stacks sent SIGUSR1 to a program that only restarts on it"
    assert alive(pid)

    # dump-all asks the same way
    out = tmp_path / "bundles"
    err = io.StringIO()
    assert run_verb(["dump-all", "--task-timeout", "0.5", "-o", str(out), str(pid)],
                    out=io.StringIO(), err=err) == 0, err.getvalue()
    time.sleep(0.3)
    assert not log.exists(), "dump-all sent SIGUSR1 to a program that only restarts on it"

    # named explicitly: asked (and its restart handler runs, as the user wanted)
    procs = stacks_json("--task-timeout", "1", "--tasks-from", str(pid), str(pid))
    assert procs[pid].tasks.status in ("timeout", "collected")
    deadline = time.monotonic() + 5
    while not log.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert log.read_text() == "RESTARTED\n"


def test_forged_or_stale_announcement_is_not_believed(spawn, tmp_path):
    log = tmp_path / "restarts.log"
    proc = spawn([sys.executable, "-c", _RESTARTER, str(log)])
    pid = proc.root
    ns = os.stat(f"/proc/{pid}/ns/pid").st_ino
    path = Path(f"/tmp/tractor-diag-taskdump-{ns}-{pid}.log")
    good = (f"===== tractor-diag taskdump ARMED pid={pid} start={_ticks(pid)} "
            f"pidns={ns} signal=10 dumps=- =====\n")
    stale = good.replace(f"start={_ticks(pid)}", f"start={_ticks(pid) - 1}")
    try:
        # a stale line (an earlier process with this pid) owned by the right user
        path.write_text(stale)
        assert stacks_json("--task-timeout", "0.5", str(pid))[pid].tasks.status == "not-asked"
        # the right line, but in a file another user planted
        path.write_text(good)
        os.chown(path, 65534, 65534)
        assert stacks_json("--task-timeout", "0.5", str(pid))[pid].tasks.status == "not-asked"
        # a symlink to a right line is not followed
        path.unlink()
        real = tmp_path / "real.log"
        real.write_text(good)
        path.symlink_to(real)
        assert stacks_json("--task-timeout", "0.5", str(pid))[pid].tasks.status == "not-asked"
    finally:
        path.unlink(missing_ok=True)
    time.sleep(0.3)
    assert not log.exists()


# A process recognised as an actor (its title), with a SIGUSR1 handler that,
# like tractor's own, answers and then relays the signal to its child through
# Popen.send_signal, which polls the child first and so reaps it when it has
# exited. Its children exit at once and stay zombies until then.
_RELAYER = textwrap.dedent("""
    import os, signal, subprocess, sys, time
    import setproctitle
    setproctitle.setproctitle(f'_subactor[relay@{os.getpid()}]')
    children = [subprocess.Popen(['true']) for _ in range(40)]
    def handler(signum, frame):
        with open(f'/tmp/tractor-stackscope-{os.getpid()}.log', 'a') as f:
            f.write('Dumping `stackscope` tree for actor\\n')
        for child in children:
            child.send_signal(signum)
    signal.signal(signal.SIGUSR1, handler)
    for child in children:
        while open(f'/proc/{child.pid}/stat').read().rsplit(')', 1)[1].split()[0] != 'Z':
            time.sleep(0.01)
    print('READY', *[c.pid for c in children], flush=True)
    while True:
        time.sleep(600)
""")


def test_zombie_recorded_before_a_reaping_handler_is_asked(spawn):
    pytest.importorskip("setproctitle")
    proc = spawn([sys.executable, "-c", _RELAYER])
    pid = proc.root
    zpids = [int(z) for z in proc.ready_line.split()[1:]]
    try:
        # one worker: the parent (first in tree order) is asked before the
        # zombie's turn comes
        rc, out, err = cli("--json", "--jobs", "1", "--task-timeout", "1", str(pid))
        assert rc == 0, err
        procs = {p.pid: p for p in procs_from_json(out)}
    finally:
        Path(f"/tmp/tractor-stackscope-{pid}.log").unlink(missing_ok=True)
    lost = [z for z in zpids if z not in procs or procs[z].python.status != "exited"]
    assert not lost, f"zombies reported as gone after the request reaped them: {lost}"
    assert all(procs[z].kernel.state == "Z" for z in zpids)
    assert not any(os.path.exists(f"/proc/{z}") for z in zpids), \
        "the handler did reap them (the side effect is real)"
    note = getattr(procs[pid].tasks, "note", None)
    assert note and "reaps" in note and str(zpids[0]) in note, procs[pid].tasks


# ---------------------------------------------------------------------------
# the dump files
# ---------------------------------------------------------------------------

_ARMED_SLEEPER = ("import time; from tractor_diag import taskdump; taskdump.arm(); "
                  "print('READY', flush=True); time.sleep(600)")


def _run_py(code: str, timeout: float = 20, **env) -> subprocess.CompletedProcess:
    full = dict(os.environ, PYTHONPATH=str(REPO), **env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout, env=full)


def test_dump_file_is_0600_even_with_umask_0_and_never_follows_a_symlink(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    code = textwrap.dedent(f"""
        import os, signal, stat, time
        os.umask(0)
        from tractor_diag import taskdump
        path = taskdump.default_dump_path()
        os.symlink({str(victim)!r}, path)      # planted before arm()
        try:
            taskdump.arm()
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(0.05)
            assert os.path.islink(path)
        finally:
            os.unlink(path)
        taskdump.arm()
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.05)
        st = os.lstat(path)
        print(oct(stat.S_IMODE(st.st_mode)), stat.S_ISREG(st.st_mode))
        os.unlink(path)
    """)
    ran = _run_py(code)
    assert ran.returncode == 0, ran.stderr
    assert victim.read_text() == "precious\n", "a dump went through the planted symlink"
    assert "cannot" in ran.stderr  # said so, on stderr
    assert ran.stdout.split() == ["0o600", "True"]


def test_existing_file_of_ours_is_made_0600_and_claimed(tmp_path):
    code = textwrap.dedent("""
        import os, signal, stat, time
        from tractor_diag import taskdump
        path = taskdump.default_dump_path()
        with open(path, 'w') as f:
            f.write('left by an earlier process with this pid\\n')
        os.chmod(path, 0o644)
        taskdump.arm()
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.05)
        text = open(path).read()
        print(oct(stat.S_IMODE(os.stat(path).st_mode)))
        print('earlier' in text, text.startswith('===== tractor-diag taskdump ARMED pid='))
        os.unlink(path)
    """)
    ran = _run_py(code)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split() == ["0o600", "False", "True"]


def test_dump_file_is_rotated_not_grown_without_bound():
    code = textwrap.dedent("""
        import os, signal, time
        from tractor_diag import taskdump
        taskdump.MAX_FILE_BYTES = 16 * 1024
        path = taskdump.default_dump_path()
        taskdump.arm()
        for _ in range(60):
            os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.05)
        size, old = os.path.getsize(path), os.path.getsize(path + '.1')
        first = open(path).readline()
        blocks = taskdump.parse_dumps(open(path).read())
        print(size <= 16 * 1024, old <= 16 * 1024, first.startswith('===== tractor-diag taskdump ARMED'),
              all(b.complete for b in blocks) and len(blocks) > 0)
        os.unlink(path); os.unlink(path + '.1')
    """)
    ran = _run_py(code)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split() == ["True"] * 4


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="needs root and unshare(1) for a private PID namespace")
def test_process_in_its_own_pid_namespace_is_collected(tmp_path):
    # pid 1 (or so) inside, a host pid outside: its dump file carries its
    # namespace's inode, so it cannot collide with our pid of the same
    # number, and the collector still finds it.
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    code = ("import os, time, trio; from tractor_diag import taskdump; taskdump.arm()\n"
            "async def main():\n"
            "    async def in_the_box(): await trio.sleep_forever()\n"
            "    async with trio.open_nursery() as n:\n"
            "        n.start_soon(in_the_box)\n"
            "        print('READY', os.getpid(), flush=True)\n"
            "        await trio.sleep_forever()\n"
            "trio.run(main)\n")
    box = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc",
                            sys.executable, "-c", code],
                           stdout=subprocess.PIPE, text=True, env=env, start_new_session=True)
    inner_path = None
    try:
        line = box.stdout.readline().split()
        assert line and line[0] == "READY", line
        inner_pid = int(line[1])
        unshare_pid = box.pid
        forked = Path(f"/proc/{unshare_pid}/task/{unshare_pid}/children").read_text().split()
        (host_pid,) = [int(p) for p in forked]
        assert host_pid != inner_pid
        ns = os.stat(f"/proc/{host_pid}/ns/pid").st_ino
        assert ns != os.stat("/proc/self/ns/pid").st_ino
        inner_path = Path(f"/tmp/tractor-diag-taskdump-{ns}-{inner_pid}.log")
        assert inner_path.exists(), "the dump file is named by namespace and inner pid"
        procs = stacks_json("--task-timeout", "5", str(host_pid))
        tree = procs[host_pid].tasks
        assert tree.status == "collected" and tree.format == "tractor-diag", tree
        assert "in_the_box" in [t.name.rsplit(".", 1)[-1] for t in tree.tasks]
    finally:
        os.killpg(box.pid, signal.SIGKILL)
        box.wait(timeout=10)
        if inner_path is not None:
            inner_path.unlink(missing_ok=True)


# An actor (by its title) whose SIGUSR1 handler writes nothing anywhere.
_SILENT_ACTOR = textwrap.dedent("""
    import os, signal, time
    import setproctitle
    setproctitle.setproctitle(f'_subactor[silent@{os.getpid()}]')
    signal.signal(signal.SIGUSR1, lambda *a: None)
    print('READY', flush=True)
    while True:
        time.sleep(600)
""")


def test_a_dump_file_planted_by_another_user_is_not_read(spawn):
    pytest.importorskip("setproctitle")
    import threading

    proc = spawn([sys.executable, "-c", _SILENT_ACTOR])
    pid = proc.root
    planted = Path(f"/tmp/tractor-stackscope-{pid}.log")
    planted.write_text("")
    os.chown(planted, 65534, 65534)
    stop = threading.Event()

    def forge():  # "another user" writing a fake dump while we wait for one
        while not stop.is_set():
            with open(planted, "a") as f:
                f.write("Dumping `stackscope` tree for actor\nFORGED <Task 'fake' at 0x1>\n")
            time.sleep(0.05)

    writer = threading.Thread(target=forge, daemon=True)
    writer.start()
    try:
        tree = stacks_json("--task-timeout", "1", str(pid))[pid].tasks
    finally:
        stop.set()
        writer.join()
        planted.unlink(missing_ok=True)
    assert tree.status == "timeout" and "FORGED" not in tree.text, tree


# An armed program that starts the restart daemon through fork + exec with
# a preexec_fn (Python's at-fork hooks run in that child before the exec),
# and forks a child of its own that closes every fd, as fork servers do.
_ARMED_PARENT = textwrap.dedent("""
    import os, subprocess, sys, time
    from tractor_diag import taskdump
    taskdump.arm()
    daemon = subprocess.Popen([sys.executable, '-c', sys.argv[1], sys.argv[2]],
                              preexec_fn=lambda: None, stdout=subprocess.PIPE)
    assert daemon.stdout.readline().startswith(b'READY')
    pid = os.fork()
    if pid == 0:
        os.closerange(3, 4096)
        while True:
            time.sleep(600)
    print('READY', daemon.pid, pid, flush=True)
    while True:
        time.sleep(600)
""")


def test_exec_drops_the_announcement_a_fork_keeps_it(spawn, tmp_path):
    log = tmp_path / "restarts.log"
    proc = spawn([sys.executable, "-c", _ARMED_PARENT, _RESTARTER, str(log)])
    _, daemon, forked = proc.ready_line.split()
    daemon, forked = int(daemon), int(forked)
    procs = stacks_json("--task-timeout", "3", str(proc.root))
    # same pid and start time as the forked child that ran our at-fork
    # hook, but another program since its exec: not asked
    assert procs[daemon].tasks.status == "not-asked", procs[daemon].tasks
    time.sleep(0.3)
    assert not log.exists(), "SIGUSR1 reached an exec'd program on an inherited announcement"
    # forked without exec, every fd closed: still announced, dumps its own
    tree = procs[forked].tasks
    assert tree.status == "collected" and f"process: pid={forked} " in tree.text, tree
    assert procs[proc.root].tasks.status == "collected"


def test_run_sweeps_empty_dump_files_of_killed_processes(tmp_path):
    # an armed process killed by SIGKILL cannot remove its (empty) file;
    # `run` removes such files when its program ends, never one with a dump
    # or one whose process lives
    code = textwrap.dedent("""
        import os, signal, subprocess, sys, time
        ns = os.stat('/proc/self/ns/pid').st_ino
        live = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        killed = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
        dumped = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
        paths = {n: f'/tmp/tractor-diag-taskdump-{ns}-{p.pid}.log'
                 for n, p in (('live', live), ('killed', killed), ('dumped', dumped))}
        while not all(os.path.exists(p) for p in paths.values()):
            time.sleep(0.01)
        os.kill(dumped.pid, signal.SIGUSR1)
        while os.path.getsize(paths['dumped']) < 200:
            time.sleep(0.01)
        for p in (killed, dumped):
            p.kill(); p.wait()
        print(' '.join(f'{n}={p}' for n, p in paths.items()), live.pid, flush=True)
    """)
    ran = subprocess.run([sys.executable, "-m", "tractor_diag", "run", "--", sys.executable, "-c", code],
                         capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    *pairs, live_pid = ran.stdout.split()
    live_start = lh.start_ticks(int(live_pid))  # (None once gone: nothing to kill)
    paths = dict(p.split("=", 1) for p in pairs)
    try:
        assert not os.path.exists(paths["killed"])
        assert os.path.exists(paths["dumped"]) and os.path.exists(paths["live"])
    finally:
        lh.kill_if(int(live_pid), start=live_start)
        for p in paths.values():
            Path(p).unlink(missing_ok=True)


def test_a_process_without_a_handler_is_answered_from_its_stat_without_a_pin(monkeypatch):
    """Most processes of a tree handle no SIGUSR1: one stat read answers,
    with no pidfd and none of the pin's reads (a "no" signals nobody)."""
    from tractor_diag import pinning, procfs, tasks

    opened = []
    real_open = pinning.Pin.open.__func__

    def counting_open(cls, pid, **kw):
        opened.append(pid)
        return real_open(cls, pid, **kw)

    monkeypatch.setattr(pinning.Pin, "open", classmethod(counting_open))
    child = subprocess.Popen(["sleep", "60"])
    try:
        deadline = time.monotonic() + 10
        while (proc := procfs.read_quick(child.pid)) is None or proc.comm != "sleep":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        got = tasks.request(proc, explicit=True)
        assert got.status == "no-handler" and opened == []
        # the same answer as a pinned request gives
        with pinning.Pin.open(proc.pid, start_time=proc.create_time) as pin:
            assert tasks._request(pin, proc, True).reason == got.reason
    finally:
        child.kill()
        child.wait()


def test_a_stale_file_claimed_after_the_request_is_read_from_its_start(spawn, tmp_path):
    """A forked child claims its dump file at its first dump: a file an
    earlier process of its pid left is emptied then and written anew. The
    request took its offset from the stale file; once the new one has grown
    past that offset, reading from it cut the header off and the tree was
    taken for an undelimited dump from the middle of a line."""
    log = tmp_path / "restarts.log"
    proc = spawn([sys.executable, "-c", _ARMED_PARENT, _RESTARTER, str(log)])
    _, _daemon, forked = proc.ready_line.split()
    forked = int(forked)
    ns = os.stat(f"/proc/{forked}/ns/pid").st_ino
    path = Path(taskdump.default_dump_path(forked, ns))
    stale = (f"===== tractor-diag taskdump ARMED pid={forked} start={_ticks(forked) - 1} "
             f"pidns={ns} signal=10 dumps=- =====\n") + "an earlier process's dump\n" * 12
    try:
        path.write_text(stale)
        os.chmod(path, 0o600)
        tree = stacks_json("--task-timeout", "5", str(forked))[forked].tasks
        assert len(path.read_bytes()) > len(stale)  # grown past the request's offset
    finally:
        path.unlink(missing_ok=True)
    assert tree.status == "collected" and tree.format == "tractor-diag", tree
    assert f"process: pid={forked} " in tree.text, tree
