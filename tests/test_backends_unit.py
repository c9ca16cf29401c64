"""Per-process recognition of current tractor's spawn backends, from
command lines and comms recorded on real trees (tractor main 3690e43 and
the main_thread_forkserver branch e0d181b, Python 3.13)."""
from __future__ import annotations

from tractor_diag.actors import is_mp_spawn_child, parse_actor, split_cmdline

PY = "/work/x/.venv-tractor-main/bin/python"
FORKSERVER = [PY, "-B", "-c",
              "from tractor.spawn._forkserver_override import main; main(9, 12, "
              "['__main__'], **{'sys_path': ['/work/x/tests/trees'], "
              "'main_path': '/work/x/tests/trees/runtime_tree.py'})"]
MP_SPAWN = [PY, "-B", "-c",
            "from multiprocessing.spawn import spawn_main; spawn_main(tracker_fd=11, pipe_handle=13)",
            "--multiprocessing-fork"]
TRACKER = [PY, "-B", "-c", "from multiprocessing.resource_tracker import main;main(9)"]
ROOT = [".venv-tractor-mtf/bin/python", "tests/trees/runtime_tree.py",
        "--start-method", "main_thread_forkserver", "--transport", "uds"]


def title(text: str, pad: int = 40) -> list[str]:
    return split_cmdline(text.encode() + b"\0" * pad)


def test_own_title_is_the_actor():
    info = parse_actor(title("_subactor[leaf_0_0@39]"), "_subactor[leaf_", 39)
    assert (info.name, info.role, info.how, info.sure) == ("leaf_0_0", "subactor", "title", "certain")


def test_title_of_another_pid_is_a_booting_fork_of_that_pid():
    # main_thread_forkserver: forked from spawner_0 (pid 34), not titled yet
    info = parse_actor(title("_subactor[spawner_0@34]"), "None from tract", 39, 34)
    assert info.role == "booting" and info.forked_from == 34
    assert info.name == "" and info.sure == "likely"
    assert info.backend == "main_thread_forkserver"


def test_title_with_another_pid_is_believed():
    # no pids given, or a pid that is not the parent's (a PID namespace)
    assert parse_actor(title("_subactor[spawner_0@34]")).name == "spawner_0"
    info = parse_actor(title("_subactor[leaf@7]"), "_subactor[leaf@", 12345, 12000)
    assert (info.name, info.role) == ("leaf", "subactor")


def test_fork_thread_comm_without_title():
    # no setproctitle: the child keeps the root's argv, comm is the thread's
    for comm in ("None from tract", "main-thread-for"):
        info = parse_actor(ROOT, comm, 20)
        assert (info.how, info.backend, info.name) == ("fork-thread", "main_thread_forkserver", "")
    assert parse_actor(ROOT, "python", 3) is None


def test_forkserver_command_line():
    info = parse_actor(FORKSERVER, "python", 13)
    assert (info.how, info.backend, info.sure) == ("mp-forkserver", "mp_forkserver", "likely")
    # only as the program's own -c code
    assert parse_actor([PY, "script.py", "-c", FORKSERVER[3]], "python") is None
    assert parse_actor([PY, "-m", "x", "-c", FORKSERVER[3]], "python") is None


def test_mp_spawn_child_is_generic():
    assert parse_actor(MP_SPAWN, "python", 15) is None
    assert is_mp_spawn_child(MP_SPAWN)
    assert not is_mp_spawn_child(MP_SPAWN[:-1])
    assert not is_mp_spawn_child(TRACKER)
    assert parse_actor(TRACKER, "python") is None


def test_current_child_argv_before_the_title():
    argv = [PY, "-m", "tractor._child", "--uid",
            "('leaf_0_0', 'b3befd19-1bc5-4a7e-ad53-de4c387fa943')",
            "--parent_addr", "('/tmp/tdx-exp-3sPg/tractor', 'spawner_0@19.sock')",
            "--loglevel", "ERROR"]
    info = parse_actor(argv, "python", 34)
    assert (info.name, info.how, info.backend) == ("leaf_0_0", "child-argv", "trio")
    assert info.parent_addr.name == "spawner_0@19.sock"


def test_subint_driver_threads_are_hosted_actors(tmp_path):
    """A real process whose threads carry subint's driver names (set with
    prctl, as Python 3.14 names OS threads): each is a hosted actor. Python
    3.14 is not installable here, so the interpreter gate is lowered."""
    import subprocess
    import sys

    from tractor_diag import procfs
    from tractor_diag.recognise import _subint_threads

    prog = (
        "import ctypes, threading, time\n"
        "libc = ctypes.CDLL(None)\n"
        "def drive(n):\n"
        "    libc.prctl(15, f'subint-driver[{n}]'.encode()[:15], 0, 0, 0)\n"
        "    time.sleep(60)\n"
        "for n in (1, 2):\n"
        "    threading.Thread(target=drive, args=(n,), daemon=True).start()\n"
        "time.sleep(0.3)\n"
        "print('READY', flush=True)\n"
        "time.sleep(60)\n"
    )
    host = subprocess.Popen([sys.executable, "-c", prog], stdout=subprocess.PIPE)
    try:
        assert host.stdout.readline().strip() == b"READY"
        procs = procfs.scan(only=[host.pid], recognise=False)
        procs[host.pid].actor = parse_actor(title(f"_subactor[child_b@{host.pid}]"), "", host.pid)
        _subint_threads(procs)  # this interpreter is older than 3.14: not looked at
        assert procs[host.pid].hosted == []
        _subint_threads(procs, min_python=(3, 0))
        hosted = procs[host.pid].hosted
        assert [h.thread for h in hosted] == ["subint-driver[1", "subint-driver[2"]
        assert all(h.role == "hosted" and h.backend == "subint" for h in hosted)
        # a repeated scan reuses the record of a process it skipped: the
        # pass over it again counts the threads afresh
        _subint_threads(procs, min_python=(3, 0))
        assert [h.thread for h in procs[host.pid].hosted] == ["subint-driver[1", "subint-driver[2"]
    finally:
        host.kill()
        host.wait(10)


def test_orphaned_pool_worker_is_not_an_actor(tmp_path):
    """A plain multiprocessing spawn worker whose environment happens to
    carry ``PYTHONBREAKPOINT=0`` (as a tractor root exports it) is not an
    actor, parent alive or gone: it listens on nothing."""
    import os
    import signal
    import subprocess
    import sys

    import psutil

    from tractor_diag import procfs
    from trees.harness import _wait_until

    prog = tmp_path / "pool.py"
    prog.write_text(
        "import multiprocessing as mp, time\n"
        "def work():\n"
        "    time.sleep(60)\n"
        "if __name__ == '__main__':\n"
        "    mp.set_start_method('spawn')\n"
        "    p = mp.Process(target=work)\n"
        "    p.start()\n"
        "    print('READY', p.pid, flush=True)\n"
        "    time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, str(prog)], stdout=subprocess.PIPE,
                              env=dict(os.environ, PYTHONBREAKPOINT="0"))
    worker = None
    try:
        line = parent.stdout.readline().split()
        worker = psutil.Process(int(line[1]))
        assert procfs.scan()[worker.pid].actor is None
        parent.kill()
        parent.wait(10)
        assert _wait_until(lambda: worker.ppid() != parent.pid, 10)
        assert procfs.read_proc(worker.pid).actor is None
        assert procfs.scan()[worker.pid].actor is None
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)
        if worker is not None and worker.is_running():  # same pid and start time
            worker.send_signal(signal.SIGKILL)
