"""Red-team cases: each one tries to make a destructive or writing path do
harm with real processes, and fails if it does."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from _reap_helpers import NOBODY, SYSTEM_PYTHON, as_nobody

_SLEEPER = "import time; print('READY', flush=True); time.sleep(600)"

# An attacker that owns the out dir: every new '.partial-*' entry is moved
# aside and its name made a symlink to the victim dir, so that writes (and a
# chmod) by name land in the victim.
_SWAPPER = r"""
import os, sys, time
out, victim = sys.argv[1], sys.argv[2]
done = set()
print("READY", flush=True)
n = 0
while True:
    for name in os.listdir(out):
        if name.startswith(".partial-") and name not in done:
            try:
                if os.path.islink(os.path.join(out, name)):
                    continue
                n += 1
                os.rename(os.path.join(out, name), os.path.join(out, f"moved-{n}"))
                os.symlink(victim, os.path.join(out, name))
                done.add(name)
            except OSError:
                pass
    time.sleep(0.0005)
"""


@pytest.fixture
def shared_tmp():
    """A dir under /tmp that uid 65534 can reach (pytest's tmp_path is 0700)."""
    d = tempfile.mkdtemp(prefix="tdiag-redteam-")
    os.chmod(d, 0o755)
    yield d
    subprocess.run(["rm", "-rf", "--one-file-system", d], timeout=30)


def test_bundle_never_writes_through_a_swapped_partial_dir(spawn, shared_tmp):
    """dump-all into a dir another user owns: the attacker swaps the
    bundle's temporary dir for a symlink to a dir of ours. Nothing may be
    written into (or chmod-ed in) the victim dir."""
    proc = spawn([sys.executable, "-c", _SLEEPER])
    out = os.path.join(shared_tmp, "out")
    victim = os.path.join(shared_tmp, "victim")
    os.mkdir(out)
    os.chown(out, NOBODY, NOBODY)
    os.mkdir(victim, 0o700)
    attacker = subprocess.Popen(as_nobody([SYSTEM_PYTHON, "-c", _SWAPPER, out, victim]),
                                stdout=subprocess.PIPE, text=True)
    try:
        assert attacker.stdout.readline().startswith("READY")
        r = subprocess.run([sys.executable, "-m", "tractor_diag", "dump-all", "--no-tasks",
                            "-o", out, str(proc.root)], capture_output=True, text=True,
                           timeout=120)
    finally:
        attacker.kill()  # our child, not yet waited for: its pid is still its own
        attacker.wait(10)
    assert "Traceback" not in r.stderr, r.stderr
    assert os.listdir(victim) == [], f"written into the victim dir: {os.listdir(victim)}"
    assert os.stat(victim).st_mode & 0o777 == 0o700, "the victim dir was chmod-ed"
    assert any(n.startswith("moved-") for n in os.listdir(out)), \
        f"the attacker never won the race: {os.listdir(out)}"


# --- signals by pid ---------------------------------------------------------------------

def _scenario(ns, name: str, *args, env=None) -> dict:
    import json

    from _reap_helpers import THIS

    res = ns.run([sys.executable, THIS, "scenario", name, *args], env=env)
    assert res["rc"] == 0, res["stderr"]
    return json.loads(res["stdout"])


def test_task_tree_request_never_signals_a_successor_of_the_pid(ns):
    """The armed actor exits while the request is checking it and a process
    without a SIGUSR1 handler gets its pid: SIGUSR1 must not reach that one
    (it would die of it)."""
    r = _scenario(ns, "usr1-reuse")
    assert r["reused_pid"], r
    assert r["new_rc"] is None, f"the successor was signalled: {r}"
    assert r["result"] == "TaskTree" and r["status"] == "gone", r


# --- the /dev/shm sweep -----------------------------------------------------------------

@pytest.fixture
def shm_dir():
    d = tempfile.mkdtemp(prefix="tdx-shm-", dir="/dev/shm")
    yield d
    subprocess.run(["rm", "-rf", "--one-file-system", d], timeout=30)


def test_shm_sweep_keeps_a_segment_mapped_after_the_scan(ns, shm_dir):
    """Unused when scanned, mapped a moment later: the sweep must look again
    before it unlinks (the scan of every process takes a while)."""
    r = _scenario(ns, "shm-late-holder", shm_dir)
    assert r["before"] == {"late": "unused"}, r
    assert r["removed"] == [] and r["left"] == ["late"], f"a mapped segment was unlinked: {r}"


def test_shm_sweep_refuses_a_dir_that_is_no_tmpfs(ns, tmp_path):
    """``--shm-dir`` pointed at an ordinary dir (a typo, a config dir): its
    files are no shared memory, and none may go because no one holds them
    open right now."""
    victim = tmp_path / "etc-like"
    victim.mkdir()
    (victim / "important.conf").write_text("keep me\n")
    res = ns.run([sys.executable, "-m", "tractor_diag", "reap", "--shm-only", "--shm-dir",
                  str(victim)])
    assert (victim / "important.conf").exists(), res
    assert res["rc"] == 2 and "tmpfs" in res["stderr"] and "Traceback" not in res["stderr"], res


# --- the UDS sweep ----------------------------------------------------------------------

_LISTEN_AT = ("import socket, sys, time; s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); "
              "s.listen(); print('READY', flush=True); time.sleep(600)")


def _free_pid() -> int:
    """A pid no process of ours has (the socket name's binder: gone)."""
    top = int(open("/proc/sys/kernel/pid_max").read())
    pid = top - 7
    while os.path.exists(f"/proc/{pid}"):
        pid -= 1
    return pid


def test_uds_sweep_keeps_a_socket_listened_on_under_another_spelling(spawn, tmp_path):
    """The binder bound the file through another path to the same dir (a
    symlink here; a bind mount or a container's view elsewhere): the socket
    table lists that spelling, and the pid in the name means nothing here.
    Something listens on the file: it must not be unlinked."""
    bs = tmp_path / "bs"
    bs.mkdir()
    view = tmp_path / "view"
    view.symlink_to(bs)
    name = f"ghost@{_free_pid()}.sock"
    spawn([sys.executable, "-c", _LISTEN_AT, str(view / name)])
    r = subprocess.run([sys.executable, "-m", "tractor_diag", "reap", "--uds-only",
                        "--bindspace", str(bs)], capture_output=True, text=True, timeout=60)
    assert "Traceback" not in r.stderr, r.stderr
    assert (bs / name).exists(), f"a socket something listens on was unlinked: {r.stdout}"
    import socket

    c = socket.socket(socket.AF_UNIX)
    c.connect(str(bs / name))  # still reachable
    c.close()


# --- the pytest plugin's session-end reap ------------------------------------------------

_SIDE_BY_SIDE = '''
import os, sys, time
sys.path.insert(0, {tests!r})
import _leaks_helpers as lh

PIDS = {pids!r}
MADE = {made!r}

def test_session_a():
    lh.start_orphan(PIDS, "mine", lh.actor_argv("mine"))
    deadline = time.monotonic() + 60
    while not os.path.exists(MADE):
        assert time.monotonic() < deadline, "the neighbour never made its orphan"
        time.sleep(0.05)

def test_session_b():
    lh.start_orphan(PIDS, "neighbour", lh.actor_argv("neighbour"))
    open(MADE, "w").close()
'''


@pytest.mark.parametrize("cgroup", [True, False], ids=["cgroup", "no-cgroup"])
def test_session_end_reap_leaves_a_side_by_side_session_alone(tmp_path, bindspace, cgroup):
    """Two pytest sessions started side by side from one parent (one
    terminal session, one process group): the one reaping at its end must
    take its own orphaned actor (in a cgroup of its own; without one it can
    only name it) and never the other session's, made while it ran."""
    import _leaks_helpers as lh
    from _reap_helpers import orphans_go_to_init

    tests = os.path.dirname(os.path.abspath(__file__))
    pids = tmp_path / "started.pids"
    (tmp_path / "test_side.py").write_text(_SIDE_BY_SIDE.format(
        tests=tests, pids=str(pids), made=str(tmp_path / "made")))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_CURRENT_TEST", "PYTEST_ADDOPTS")}
    if not cgroup:
        env["TRACTOR_DIAG_NO_CGROUP"] = "1"
    base = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q"]
    try:
        with orphans_go_to_init():
            a = subprocess.Popen([*base, "--tractor-reap-at-end", "test_side.py::test_session_a"],
                                 cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
            time.sleep(1.0)  # A's session has started (its baseline is older than B's orphan)
            b = subprocess.run([*base, "test_side.py::test_session_b"], cwd=tmp_path, env=env,
                               capture_output=True, text=True, timeout=120)
            out_a = a.communicate(timeout=120)[0]
        assert b.returncode == 0, b.stdout + b.stderr
        assert a.returncode == 0, out_a
        got = lh.recorded(str(pids))
        if cgroup:
            assert not lh.alive(*got["mine"]), f"A's own orphan was not reaped:\n{out_a}"
        else:
            assert lh.alive(*got["mine"]) and "not signalled: cannot prove" in out_a, out_a
        assert lh.alive(*got["neighbour"]), f"A reaped the other session's orphan:\n{out_a}"
    finally:
        left = lh.kill_recorded(str(pids))
        assert not left, f"could not kill: {left}"


# --- text that reads differently than it is ------------------------------------------------

# zero-width space, no-break space, byte-order mark, soft hyphen, word joiner,
# a tag character: each invisible (or a look-alike of a space) on a terminal
_INVISIBLE = ["\u200b", "\u00a0", "\ufeff", "\u00ad", "\u2060", "\U000e0041"]


def test_invisible_characters_are_shown(spawn, bindspace):
    """A title or a file name holding characters that show as nothing (or
    as a plain space) reads as another name than it is: 'regis<ZWSP>try'
    looks like 'registry'. Every face's text shows them as escapes."""
    title = "look" + "".join(_INVISIBLE) + "alike"
    proc = spawn([sys.executable, "-c", "import setproctitle, sys, time; "
                  "setproctitle.setproctitle(sys.argv[1]); print('READY', flush=True); "
                  "time.sleep(600)", title])
    import socket

    s = socket.socket(socket.AF_UNIX)
    s.bind(str(bindspace / ("sock\u200bname@1.sock")))
    s.close()
    cli = [sys.executable, "-m", "tractor_diag"]
    outs = {
        "ptree": subprocess.run([*cli, "ptree", str(proc.root)], capture_output=True,
                                text=True, timeout=60).stdout,
        "bindspace": subprocess.run([*cli, "bindspace"], capture_output=True, text=True,
                                    timeout=60).stdout,
    }
    assert "look" in outs["ptree"] and "sock" in outs["bindspace"], outs
    for face, text in outs.items():
        for ch in _INVISIBLE:
            assert ch not in text, (face, hex(ord(ch)), text)
    assert "look\\u200b\\xa0\\ufeff\\xad\\u2060\\U000e0041alike" in outs["ptree"], outs["ptree"]
    assert "sock\\u200bname@1.sock" in outs["bindspace"], outs["bindspace"]


# --- launch mode --------------------------------------------------------------------------

def test_launch_stop_leaves_the_dashboards_own_other_children_alone():
    """The dashboard starts children of its own in sessions of their own
    after the launch. In a cgroup of its own the tree's orphans are told by
    membership: such a child is neither signalled nor reaped (its waiter
    would lose the exit status)."""
    import trio

    from tractor_diag.launch import Supervisor

    got = {}

    async def main():
        sup = Supervisor([sys.executable, "-c", "import time; time.sleep(600)"], grace=1.0,
                         cgroup=True)
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            assert sup.cgroup_path, sup.cgroup_unavailable
            helper = subprocess.Popen([sys.executable, "-c", "import time; print('READY', "
                                       "flush=True); time.sleep(1.0)"],
                                      stdout=subprocess.PIPE, start_new_session=True)
            assert helper.stdout.readline().startswith(b"READY")
            nursery.cancel_scope.cancel()
        got["sup"] = sup
        got["helper"] = helper

    trio.run(main)
    helper = got["helper"]
    try:
        code = helper.wait(10)  # ours to wait for: nobody may have reaped it
    finally:
        if helper.returncode is None:
            helper.kill()
            helper.wait(10)
    assert code == 0, f"the dashboard's own helper was signalled ({code})"
    assert helper.pid not in got["sup"].exit_codes, "the helper was reaped as an orphan of the tree"


def _child_running(word: str) -> int | None:
    """A child of this process whose command line holds ``word``."""
    for tid in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{tid}/children") as f:
            for pid in f.read().split():
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as c:
                        if word.encode() in c.read():
                            return int(pid)
                except OSError:
                    pass
    return None


def test_launch_stop_leaves_a_running_py_spy_dump_alone(tmp_path, monkeypatch):
    """Without a cgroup, a child of ours in another session started after
    the launch counts as an orphan the tree left us, but a py-spy dump the
    dashboard runs (a slow one here) is ours: the stop must not signal or
    reap it, and the dump ends as it would have (its timeout)."""
    import threading

    import trio

    from tractor_diag import pyspy
    from tractor_diag.launch import Supervisor

    stand_in = tmp_path / "py-spy"
    stand_in.write_text("#!/bin/sh\ntrap 'exit 42' INT\nsleep 3 & wait\n")
    stand_in.chmod(0o755)
    monkeypatch.setenv(pyspy.PY_SPY_ENV, str(stand_in))
    got = {}

    def dump():
        got["dump"] = pyspy.dump_python(os.getpid(), py_spy=str(stand_in), timeout=2.0)

    async def main():
        sup = Supervisor([sys.executable, "-c", "import time; time.sleep(600)"], grace=0.5,
                         cgroup=False)
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            t = threading.Thread(target=dump)
            t.start()
            while (spy := _child_running(str(stand_in))) is None:
                await trio.sleep(0.01)
            got["helper"] = spy
            await trio.sleep(0.2)
            nursery.cancel_scope.cancel()
        got["sup"] = sup
        await trio.to_thread.run_sync(t.join)

    trio.run(main)
    assert got["helper"] not in got["sup"].exit_codes, \
        f"the py-spy dump was reaped as an orphan of the tree: {got['sup'].exit_codes}"
    assert got["dump"].status == "timeout", got["dump"]


# --- SIGUSR1 only to recognised actors ----------------------------------------------------

_EXECS_AWAY = (
    "import os, signal, sys, time, setproctitle\n"
    "setproctitle.setproctitle(f'_subactor[leaf@{os.getpid()}]')\n"
    "signal.signal(signal.SIGUSR1, lambda *a: None)\n"
    "print('READY', flush=True)\n"
    "sys.stdin.readline()\n"
    "os.execv(sys.executable, [sys.executable, '-c', sys.argv[1], sys.argv[2]])\n"
)
# a daemon for which SIGUSR1 means something else entirely
_RELOADER = (
    "import signal, sys, time\n"
    "def reload(*a):\n"
    "    open(sys.argv[1], 'w').write('reloaded')\n"
    "signal.signal(signal.SIGUSR1, reload)\n"
    "print('READY', flush=True)\n"
    "time.sleep(600)\n"
)


def test_task_tree_request_skips_an_actor_that_exec_d_into_another_program(tmp_path):
    """Seen as an actor in the snapshot, then exec'd (same pid, same start
    time) into a program whose SIGUSR1 means 'reload': it is no recognised
    actor any more, and must not be asked."""
    from tractor_diag import procfs, tasks

    marker = tmp_path / "reloaded"
    p = subprocess.Popen([sys.executable, "-c", _EXECS_AWAY, _RELOADER, str(marker)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().startswith("READY")
        seen = procfs.read_proc(p.pid)
        assert seen is not None and seen.actor is not None, seen
        p.stdin.write("go\n")
        p.stdin.flush()
        assert p.stdout.readline().startswith("READY")  # the reloader runs now
        got = tasks.request(seen)
        time.sleep(0.3)
        assert not marker.exists(), "SIGUSR1 reached the program the actor exec'd into"
        assert getattr(got, "status", None) == "not-asked", got
    finally:
        p.kill()  # our child, not yet waited for
        p.wait(10)


# --- the dashboard's keys -------------------------------------------------------------------

def test_reap_key_never_plans_a_newcomer_with_the_selected_pid(ns):
    """The selected actor dies and a new actor of ours gets its pid before
    'r' is pressed: the dialog must not offer the newcomer's subtree under
    the old row, and confirming must not reach it."""
    import json

    from _launch_ns import THIS as LAUNCH_NS

    res = ns.run([sys.executable, LAUNCH_NS, "reap-key-reused"], timeout=90)
    assert res["rc"] == 0, res["stderr"][-3000:]
    out = json.loads(res["stdout"].strip().splitlines()[-1])
    assert out["new"] == out["old"], out
    assert not out["asked"], f"the dialog offered the newcomer: {out}"
    assert out["new_alive"] and "GOT" not in out["new_output"], out
    assert "another process" in (out["result"] or ""), out


_REPORTER = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, lambda *a: print('GOT', flush=True))\n"
    "print('READY', flush=True)\n"
    "time.sleep(600)\n"
)


def test_signal_key_skips_a_process_that_exec_d_while_the_dialog_was_open():
    """The k key's dialog named one program; before the user confirmed, the
    process exec'd into another (same pid, same start time): that one gets
    nothing."""
    import trio

    from tractor_diag import procfs
    from tractor_diag.tui import key_jobs

    p = subprocess.Popen([sys.executable, "-c", _EXECS_AWAY, _REPORTER, "-"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().startswith("READY")
        seen = procfs.read_proc(p.pid, detail=False)  # what the dialog showed
        p.stdin.write("go\n")
        p.stdin.flush()
        assert p.stdout.readline().startswith("READY")  # another program now
        done = trio.run(lambda: key_jobs.send_signal(seen.pid, seen.create_time,
                                                     signal.SIGTERM, cmdline=seen.cmdline))
        import select

        got = select.select([p.stdout], [], [], 0.5)[0]
        assert not got, f"the program it exec'd into was signalled: {p.stdout.readline()!r}"
        assert not done.ok, done
    finally:
        p.kill()  # our child, not yet waited for
        p.wait(10)


# --- the taskdump file sweep ------------------------------------------------------------------

def test_stale_dump_sweep_keeps_a_file_replaced_after_its_check(tmp_path, monkeypatch):
    """An announcement of a dead process is judged stale; before the unlink
    the name is taken by a new announcement of a live process (a successor
    with the pid, arming): the sweep must unlink only the file it judged."""
    from tractor_diag import taskdump

    ns = os.stat("/proc/self/ns/pid").st_ino
    dead = 4194301  # above any pid_max here: never running
    name = tmp_path / f"tractor-diag-taskdump-{ns}-{dead}.log"
    stale = (f"===== tractor-diag taskdump ARMED pid={dead} start=1 pidns={ns} signal=10 "
             "dumps=- =====\n")
    name.write_text(stale)
    name.chmod(0o600)
    live = f"===== tractor-diag taskdump ARMED pid={dead} start=2 pidns={ns} signal=10 dumps=- =====\n"
    real_alive = taskdump._alive

    def alive_then_replaced(pid, start):
        answer = real_alive(pid, start)
        fresh = tmp_path / "fresh"
        fresh.write_text(live)
        fresh.chmod(0o600)
        os.rename(fresh, name)  # a new file under the judged name
        return answer

    monkeypatch.setattr(taskdump, "_alive", alive_then_replaced)
    taskdump.sweep_stale(str(tmp_path))
    assert name.exists() and name.read_text() == live, "the new announcement was unlinked"


# --- reap: a target that exec'd between plan and signal ------------------------------------

def test_reap_skips_a_target_that_exec_d_into_a_non_actor():
    """Planned as an actor, then exec'd (same pid, same start time) into a
    program that is no actor: without --all it is not signalled."""
    from tractor_diag import reap

    p = subprocess.Popen([sys.executable, "-c", _EXECS_AWAY, _REPORTER, "-"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().startswith("READY")
        plan = reap.make_plan(parent=os.getpid())
        assert plan.pids() == [p.pid], plan
        p.stdin.write("go\n")
        p.stdin.flush()
        assert p.stdout.readline().startswith("READY")
        (fate,) = reap.execute(plan, grace=0.5).fates
        assert fate.fate == "skipped" and fate.signals == [], fate
        assert p.poll() is None
    finally:
        p.kill()  # our child, not yet waited for
        p.wait(10)


def test_default_reap_leaves_a_containers_orphans_to_the_container(ns, tmp_path):
    """An orphaned actor of the same uid inside another PID namespace whose
    init is a known subreaper (tini: a container) is that container's: the
    default reap takes only our namespace's orphans."""
    d = tempfile.mkdtemp(prefix="tdiag-box-")
    try:
        r = _scenario(ns, "container-orphan", d)
    finally:
        subprocess.run(["rm", "-rf", d], timeout=30)
    assert r["ours"] in r["planned"] and not r["ours_alive"], r  # the control
    assert r["boxed"] not in r["planned"] and r["boxed_alive"], f"reaped inside a container: {r}"


# --- the demo's own clean-up ------------------------------------------------------------------

def test_demo_cleanup_leaves_another_users_dump_file():
    """The demo removes the stackscope dump files its actors left in /tmp,
    by pid: a file of that name owned by someone else is not its to remove."""
    from tractor_diag import demo

    pid = 4194299  # above any pid_max here: never running
    path = f"/tmp/tractor-stackscope-{pid}.log"
    with open(path, "w") as f:
        f.write("someone else's\n")
    os.chown(path, NOBODY, NOBODY)
    try:
        demo.sweep_sockets({pid})
        assert os.path.exists(path), "another user's file was unlinked"
    finally:
        if os.path.exists(path):
            os.unlink(path)
