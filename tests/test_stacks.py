"""``stacks`` against real process trees: released tractor actors, current-
runtime-style actors with real SIGUSR1 task dumpers, zombies, handler-less
processes, and py-spy missing, wedged or denied."""
from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from tractor_diag.cli import run_verb
from tractor_diag.stackmodel import StacksOptions, procs_from_json
from tractor_diag.pyspy import PY_SPY_ENV
from tractor_diag.stacks import capture
from tractor_diag.trees import snapshot_for


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = run_verb(["stacks", *argv], out=out, err=err)
    return rc, out.getvalue(), err.getvalue()


def stacks_json(*argv: str) -> dict:
    rc, out, err = cli("--json", *argv)
    assert rc == 0, err
    return {p.pid: p for p in procs_from_json(out)}


def main_frames(p) -> list[str]:
    """Function names of the main thread, innermost last."""
    main = p.python.threads[0]
    assert main.name == "MainThread"
    return [f.name for f in main.frames]


def tree_of(pid: int):
    return snapshot_for([str(pid)], strays=False)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


# ---------------------------------------------------------------------------
# released runtime
# ---------------------------------------------------------------------------

@pytest.mark.released
def test_released_tree_leaves_stuck_in_sleep(released_tree):
    tree = released_tree(depth=2, breadth=2, hang="sleep")
    actors = tree.actors()
    procs = stacks_json(str(tree.root))
    assert set(actors.values()) <= set(procs)
    for name, pid in actors.items():
        p = procs[pid]
        assert p.python.status == "ok", (name, p.python.reason)
        if name.startswith("leaf_"):
            assert p.actor == name
            assert p.state == "blocked" and p.kernel.wchan == "hrtimer_nanosleep"
            main = p.python.threads[0]
            assert main.name == "MainThread"
            # innermost LAST: the leaf's own frame ends the chain
            assert main.frames[-1].name == "_hang_leaf"
            assert main.frames[-1].filename.endswith("released_tree.py")
        # released actors arm no SIGUSR1 handler: never signalled
        assert p.tasks.status == "no-handler"
    assert all(alive(pid) for pid in actors.values())

    rc, text, _ = cli("--color", "never", str(tree.root))
    assert rc == 0
    leaf = actors["leaf_0_0"]
    block = next(b for b in text.split("\n\n") if b.startswith(f"{leaf} "))
    assert "leaf_0_0 [actor]" in block and "live/blocked" in block
    assert "wchan hrtimer_nanosleep" in block
    assert "kernel: hrtimer_nanosleep" in block
    main_section = block.split("thread MainThread", 1)[1].split("\n  thread ", 1)[0]
    at_lines = [ln.strip() for ln in main_section.splitlines() if ln.strip().startswith("at ")]
    assert "released_tree.py:" in at_lines[-1] and at_lines[-1].endswith("in _hang_leaf")
    assert "no SIGUSR1 handler" in block


# ---------------------------------------------------------------------------
# current-runtime-style trees: task trees from armed processes only
# ---------------------------------------------------------------------------

def test_current_tree_task_trees_only_from_armed(current_tree):
    tree = current_tree(depth=2, breadth=2, hang="sleep", unarmed=["leaf_0_1"])
    actors = tree.actors()
    procs = stacks_json(str(tree.root))
    unarmed = actors["leaf_0_1"]
    for name, pid in actors.items():
        p = procs[pid]
        assert p.python.status == "ok", (name, p.python.reason)
        if pid == unarmed:
            assert p.tasks.status == "no-handler"
            assert "not signalled" in p.tasks.reason
            continue
        assert p.tasks.status == "collected", (name, p.tasks.reason)
        assert p.tasks.format == "tractor-diag" and p.tasks.complete
        names = [t.name for t in p.tasks.tasks]
        assert "__main__.Actor.main" in names
        if name.startswith("leaf_"):
            # the loop is held by the task in time.sleep: it shows as running
            main = next(t for t in p.tasks.tasks if t.name == "__main__.Actor.main")
            assert main.state == "running"
            assert main.frames[-1].name == "Actor.hang"
            assert main_frames(p)[-1] == "Actor.hang"
            assert p.state == "blocked"
    # the handler-less actor was not killed by a SIGUSR1 (and nobody else was)
    time.sleep(0.2)
    assert all(alive(pid) for pid in actors.values())

    rc, text, _ = cli("--color", "never", str(tree.root))
    assert rc == 0
    leaf = actors["leaf_1_0"]
    block = next(b for b in text.split("\n\n") if b.startswith(f"{leaf} "))
    assert "trio tasks (tractor-diag taskdump" in block
    assert "__main__.Actor.main [running]  at current_tree.py:" in block
    assert "in Actor.hang" in block


def test_parent_blocked_waiting_on_child(current_tree):
    tree = current_tree(depth=2, breadth=1, hang="wait-child-sync")
    actors = tree.actors()
    procs = stacks_json("--no-tasks", str(tree.root))
    parent = procs[actors["spawner_0"]]
    assert parent.state == "blocked"
    assert parent.kernel.wchan == "do_wait"
    assert parent.kernel.stack and parent.kernel.stack[0] == "do_wait"
    assert main_frames(parent)[-1] == "Actor.hang"
    assert parent.tasks.status == "not-requested"


def test_locals_and_native(current_tree):
    tree = current_tree(depth=1, breadth=1, hang="sleep", unarmed=["leaf_0"])
    leaf = tree.pid_of("leaf_0")
    procs = stacks_json("--locals", str(leaf))
    hang = procs[leaf].python.threads[0].frames[-1]
    assert hang.name == "Actor.hang"
    assert hang.locals is not None and "self" in [v.name for v in hang.locals]
    rc, text, _ = cli("--locals", "--color", "never", str(leaf))
    assert rc == 0 and "      self = <Actor at 0x" in text
    procs = stacks_json("--native", str(leaf))
    assert procs[leaf].python.status == "ok"
    assert any(f.native for t in procs[leaf].python.threads for f in t.frames)


# ---------------------------------------------------------------------------
# SIGUSR1 safety and undelimited dumps
# ---------------------------------------------------------------------------

_HANDLERLESS = "import time; print('READY', flush=True); time.sleep(600)"

# A stand-in for tractor's own stackscope handler: undelimited text appended
# to the same file, in two writes with a pause between them.
_UNDELIMITED = textwrap.dedent("""
    import os, signal, time
    def handler(signum, frame):
        with open(f'/tmp/tractor-stackscope-{os.getpid()}.log', 'a') as f:
            f.write('Task tree of <root>\\n'); f.flush()
            time.sleep(0.1)
            f.write('  <Task sleeper> awaiting trio.sleep_forever\\n')
    signal.signal(signal.SIGUSR1, handler)
    print('READY', flush=True)
    while True:
        time.sleep(600)
""")


def test_handlerless_process_is_never_signalled(spawn):
    proc = spawn([sys.executable, "-c", _HANDLERLESS])
    pid = proc.root
    snap = tree_of(pid)
    assert snap.entries[pid].proc.handles_signal(signal.SIGUSR1) is False
    report = capture(snap, StacksOptions(task_timeout=0.5))
    (p,) = report.procs
    assert p.tasks.status == "no-handler"
    time.sleep(0.3)
    assert alive(pid), "a task-tree request killed a process without a SIGUSR1 handler"
    assert p.python.status == "ok"


def test_undelimited_dump_collected_until_quiet(spawn):
    proc = spawn([sys.executable, "-c", _UNDELIMITED])
    pid = proc.root
    log = Path(f"/tmp/tractor-stackscope-{pid}.log")
    log.write_text("an old dump that must not be reported\n")
    try:
        # not an actor and no dumper announced: asked only when named
        report = capture(tree_of(pid), StacksOptions(task_timeout=3, tasks_from=(pid,)))
        tree = report.procs[0].tasks
        assert tree.status == "collected" and tree.format == "undelimited"
        assert tree.text == "Task tree of <root>\n  <Task sleeper> awaiting trio.sleep_forever"
        assert tree.complete
    finally:
        log.unlink(missing_ok=True)
    assert alive(pid)


def test_armed_process_outside_trio_run(spawn):
    proc = spawn([sys.executable, "-c", "import time; from tractor_diag import taskdump; "
                  "taskdump.arm(); print('READY', flush=True); time.sleep(600)"])
    try:
        rc, text, _ = cli("--color", "never", str(proc.root))
        procs = stacks_json(str(proc.root))
    finally:
        Path(f"/tmp/tractor-stackscope-{proc.root}.log").unlink(missing_ok=True)
    assert rc == 0
    tree = procs[proc.root].tasks
    assert tree.status == "collected" and tree.complete and tree.tasks == []
    assert "  trio tasks: none -- no trio run active on thread 'MainThread'" in text


def test_zombie_is_reported_not_dumped(zombie_maker):
    maker = zombie_maker(count=1, code=3)
    (zpid,) = maker.zombies
    procs = stacks_json(str(maker.root))
    z = procs[zpid]
    assert z.bucket == "zombie"
    assert z.python.status == "exited"
    assert z.python.reason.startswith("zombie, exit status 3: no Python left to dump")
    assert f"parent {maker.root} has not reaped it" in z.python.reason
    assert z.tasks.status == "no-handler" and z.tasks.reason == "a zombie: not signalled"
    assert z.kernel.stack_reason == "exited (zombie): no kernel stack"


# ---------------------------------------------------------------------------
# py-spy missing, wedged, denied
# ---------------------------------------------------------------------------

def test_no_py_spy_says_why(spawn, monkeypatch, tmp_path):
    proc = spawn([sys.executable, "-c", _HANDLERLESS])
    monkeypatch.setenv(PY_SPY_ENV, str(tmp_path / "no-such-py-spy"))
    procs = stacks_json(str(proc.root))
    py = procs[proc.root].python
    assert py.status == "no-py-spy" and PY_SPY_ENV in py.reason
    rc, text, _ = cli("--color", "never", str(proc.root))
    assert rc == 0 and "python: no-py-spy: py-spy not runnable" in text


def test_wedged_py_spy_is_killed_at_its_timeout(spawn, monkeypatch, tmp_path):
    """A stand-in that never returns, and whose child (in the same group)
    holds our pipes: the dump times out, the whole group is killed."""
    proc = spawn([sys.executable, "-c", _HANDLERLESS])
    marker = tmp_path / "child.pid"
    stand_in = tmp_path / "py-spy"
    stand_in.write_text(f"#!/bin/sh\nsleep 600 &\necho $! > {marker}\nwait\n")
    stand_in.chmod(0o755)
    monkeypatch.setenv(PY_SPY_ENV, str(stand_in))
    start = time.monotonic()
    report = capture(tree_of(proc.root), StacksOptions(timeout=0.5))
    assert time.monotonic() - start < 3
    py = report.procs[0].python
    assert py.status == "timeout" and "0.5s" in py.reason
    child = int(marker.read_text())
    for _ in range(50):
        if not alive(child):
            break
        time.sleep(0.02)
    assert not alive(child), "the stand-in's child survived the group kill"


# Runs a command with its data size bounded (so the unbounded read this test
# guards against cannot take the machine down) and reports its peak RSS.
_MEASURED = textwrap.dedent("""\
    import json, resource, subprocess, sys, time
    def bound():
        resource.setrlimit(resource.RLIMIT_DATA, (1 << 30, 1 << 30))
    t = time.monotonic()
    r = subprocess.run(sys.argv[1:], capture_output=True, text=True, preexec_fn=bound, timeout=60)
    print(json.dumps(dict(rc=r.returncode, out=r.stdout, err=r.stderr, took=time.monotonic() - t,
                          maxrss_kb=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)))
""")


def test_flooding_py_spy_is_cut_at_a_bound(spawn, tmp_path, monkeypatch):
    """A py-spy that floods stdout: what is read is capped, the timeout holds
    while reading, and the dump says it was cut."""
    proc = spawn([sys.executable, "-c", _HANDLERLESS])
    stand_in = tmp_path / "py-spy"
    stand_in.write_text("#!/bin/sh\nexec yes '{\"flood\": true}'\n")
    stand_in.chmod(0o755)
    env = dict(os.environ, **{PY_SPY_ENV: str(stand_in)})
    argv = [sys.executable, "-m", "tractor_diag", "stacks", "--no-tasks", "--timeout", "3"]
    res = json.loads(subprocess.run(
        [sys.executable, "-c", _MEASURED, *argv, "--json", str(proc.root)],
        capture_output=True, text=True, env=env, timeout=90).stdout)
    assert res["rc"] == 0 and "Traceback" not in res["err"], res["err"][-2000:]
    assert res["took"] < 3, res["took"]
    assert res["maxrss_kb"] < 200 * 1024, res["maxrss_kb"]
    (p,) = procs_from_json(res["out"])
    assert p.python.status == "failed" and "cut" in p.python.reason, p.python.reason
    monkeypatch.setenv(PY_SPY_ENV, str(stand_in))
    rc, text, _ = cli("--color", "never", "--no-tasks", "--timeout", "3", str(proc.root))
    assert rc == 0 and "MiB: dump cut there" in text


def test_flooding_py_spy_within_the_timeout_is_killed_at_it(spawn, tmp_path):
    """A slow flood (below the cap) is still stopped at the timeout."""
    proc = spawn([sys.executable, "-c", _HANDLERLESS])
    stand_in = tmp_path / "py-spy"
    stand_in.write_text("#!/bin/sh\nwhile :; do echo x; sleep 0.01; done\n")
    stand_in.chmod(0o755)
    env = dict(os.environ, **{PY_SPY_ENV: str(stand_in)})
    start = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "tractor_diag", "stacks", "--json", "--no-tasks",
                        "--timeout", "0.5", str(proc.root)], capture_output=True, text=True,
                       env=env, timeout=60)
    assert time.monotonic() - start < 5
    (p,) = procs_from_json(r.stdout)
    assert p.python.status == "timeout" and "0.5s" in p.python.reason


# A tracer with a hostile name: PTRACE_SEIZE attaches without stopping the
# tracee, then it sleeps (the tracee is detached when it exits).
_SEIZER = textwrap.dedent("""\
    import ctypes, sys, time
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(15, b"gdb\\x1b]0;pwn\\x07", 0, 0, 0)  # PR_SET_NAME
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
    if libc.ptrace(0x4206, int(sys.argv[1]), None, None) != 0:  # PTRACE_SEIZE
        sys.exit(f"seize failed: errno {ctypes.get_errno()}")
    print("READY", flush=True)
    time.sleep(600)
""")


def tracer_pid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("TracerPid:"):
            return int(line.split()[1])
    return 0


@pytest.mark.parametrize("tracer", ["strace", "seizer"])
def test_already_traced_says_by_whom(spawn, tracer, monkeypatch):
    if tracer == "strace" and shutil.which("strace") is None:
        pytest.skip("strace is not installed")
    monkeypatch.setenv(PY_SPY_ENV, str(Path(sys.executable).parent / "py-spy"))
    proc = spawn([sys.executable, "-c", _HANDLERLESS])
    if tracer == "strace":
        t = spawn(["strace", "-q", "-o", "/dev/null", "-p", str(proc.root)], ready=None)
    else:
        t = spawn([sys.executable, "-c", _SEIZER, str(proc.root)])
    deadline = time.monotonic() + 10
    while tracer_pid(proc.root) != t.root:
        assert time.monotonic() < deadline, "the tracer did not attach"
        time.sleep(0.05)
    py = stacks_json("--no-tasks", str(proc.root))[proc.root].python
    assert py.status == "traced", py
    comm = "strace" if tracer == "strace" else "gdb\\x1b]0;pwn\\x07"
    assert py.reason.startswith(f"already traced by pid {t.root} ({comm})"), py.reason
    rc, text, _ = cli("--color", "never", "--no-tasks", str(proc.root))
    assert rc == 0 and f"already traced by pid {t.root}" in text
    assert "\x1b" not in text and "sudo" not in text


AS_NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def _nobody_env(home: Path, path: str) -> dict:
    """The environment for running the collector as 'nobody' (skips the test
    when 'nobody' cannot run this interpreter)."""
    repo = Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=str(repo), HOME=str(home), PATH=path)
    env[PY_SPY_ENV] = str(Path(sys.executable).parent / "py-spy")
    probe = subprocess.run([*AS_NOBODY, sys.executable, "-c", "import tractor_diag.stacks"],
                           capture_output=True, env=env, timeout=60, cwd="/")
    if probe.returncode != 0:
        pytest.skip("'nobody' cannot run this interpreter here: "
                    + probe.stderr.decode(errors="replace").strip().splitlines()[-1])
    return env


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv to run the collector as another user")
def test_permission_denied_says_why(spawn, tmp_path):
    """Run the collector as 'nobody' against a root-owned process: py-spy is
    refused; without sudo the reason says so, and sudo -n is not tried."""
    env = _nobody_env(tmp_path, "/usr/bin:/bin")
    proc = spawn([sys.executable, "-c", _HANDLERLESS])
    out = subprocess.run(
        [*AS_NOBODY, sys.executable, "-m", "tractor_diag", "stacks", "--json", str(proc.root)],
        capture_output=True, text=True, env=env, timeout=60, cwd="/",
    )
    assert out.returncode == 0, out.stderr
    (p,) = procs_from_json(out.stdout)
    assert p.python.status == "permission"
    assert f"not allowed to attach to pid {proc.root}" in p.python.reason
    if shutil.which("sudo", path="/usr/bin:/bin") is None:
        assert "sudo not available" in p.python.reason
    assert p.kernel.stack is None and "needs root" in p.kernel.stack_reason
    # SigCgt is world-readable; a root process cannot be signalled by nobody
    assert p.tasks.status == "no-handler"


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv to run the collector as another user")
@pytest.mark.parametrize("flag, retried", [([], True), (["--no-sudo"], False)])
def test_permission_denied_is_retried_through_sudo(spawn, tmp_path, request, flag, retried):
    """A refused py-spy is dumped again as ``sudo -n -- py-spy dump ...``
    (a stand-in sudo on PATH records how it was called and answers like a
    sudo that wants a password); ``--no-sudo`` never calls it."""
    # pytest's tmp_path is private to root: nobody could not run the stand-in
    bindir = Path(tempfile.mkdtemp(prefix="tractor-diag-sudo-"))
    request.addfinalizer(lambda: shutil.rmtree(bindir, ignore_errors=True))
    bindir.chmod(0o755)
    calls = bindir / "calls"
    calls.touch(0o666)
    calls.chmod(0o666)
    sudo = bindir / "sudo"
    sudo.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$*\" >> {calls}\n"
                    "echo 'sudo: a password is required' >&2\nexit 1\n")
    sudo.chmod(0o755)
    env = _nobody_env(tmp_path, f"{bindir}:/usr/bin:/bin")
    py_spy = env[PY_SPY_ENV]
    proc = spawn([sys.executable, "-c", _HANDLERLESS])
    out = subprocess.run(
        [*AS_NOBODY, sys.executable, "-m", "tractor_diag", "stacks", "--no-tasks", "--json",
         *flag, str(proc.root)],
        capture_output=True, text=True, env=env, timeout=60, cwd="/", stdin=subprocess.DEVNULL,
    )
    assert out.returncode == 0, out.stderr
    (p,) = procs_from_json(out.stdout)
    assert p.python.status == "permission"
    if retried:
        assert p.python.via_sudo is True
        assert "sudo -n needs a password" in p.python.reason, p.python.reason
        (line,) = calls.read_text().splitlines()
        assert line.startswith(f"-n -- {py_spy} dump ") and line.endswith(str(proc.root)), line
    else:
        assert p.python.via_sudo is False
        assert calls.read_text() == ""


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv to drop CAP_SYS_PTRACE")
@pytest.mark.parametrize("target_uid, needle", [
    (65534, "it runs as uid 65534 and this process lacks CAP_SYS_PTRACE"),
    (0, "it holds capabilities this process does not"),
])
def test_kernel_stack_refusal_says_what_failed(spawn, target_uid, needle):
    """Root holding CAP_SYS_ADMIN but not CAP_SYS_PTRACE: the kernel answers
    EPERM from its ptrace check, and the reason names that check, not a
    missing root."""
    argv = [sys.executable, "-c", _HANDLERLESS]
    if target_uid:
        drop = ["setpriv", f"--reuid={target_uid}", f"--regid={target_uid}", "--clear-groups"]
        if subprocess.run([*drop, sys.executable, "-c", "pass"], capture_output=True,
                          timeout=60, cwd="/").returncode != 0:
            # this interpreter's libpython is out of that uid's reach (pyenv
            # under /root): any program of that uid makes the case
            argv = ["sh", "-c", "echo READY; exec sleep 600"]
        argv = [*drop, *argv]
    proc = spawn(argv)
    pid = proc.root
    while target_uid and Path(f"/proc/{pid}/comm").read_text().strip() in ("setpriv", "sh"):
        time.sleep(0.02)  # setpriv (and sh) exec the target in place
    repo = Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=str(repo))
    out = subprocess.run(
        ["setpriv", "--bounding-set=-sys_ptrace", "--inh-caps=-sys_ptrace",
         sys.executable, "-m", "tractor_diag", "stacks", "--no-tasks", "--json", str(pid)],
        capture_output=True, text=True, env=env, timeout=60, cwd="/",
    )
    assert out.returncode == 0, out.stderr
    (p,) = procs_from_json(out.stdout)
    assert p.kernel.stack is None
    reason = p.kernel.stack_reason
    assert "EPERM" in reason and needle in reason, reason
    assert "needs root" not in reason


# ---------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("argv, code, needle", [
    (["999999999"], 1, "no such process: 999999999"),
    (["--", "-no-such-pattern-xyzzy-"], 1, "no process matches"),
    (["--timeout", "0", "1"], 2, "--timeout"),
    (["--jobs", "-1", "1"], 2, "--jobs"),
    (["--sudo", "--no-sudo", "1"], 2, "not allowed with"),
    (["--timeout", "x", "1"], 2, "invalid float"),
])
def test_bad_input_one_line(argv, code, needle):
    rc, out, err = cli(*argv)
    assert rc == code
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and needle in err
    assert "Traceback" not in err


def test_cli_process_json_and_help(spawn):
    proc = spawn([sys.executable, "-c", _HANDLERLESS])
    out = subprocess.run(
        [sys.executable, "-m", "tractor_diag", "stacks", "--json", str(proc.root)],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert isinstance(data, list) and data[0]["pid"] == proc.root
    assert data[0]["python"]["threads"][0]["frames"][-1]["name"] == "<module>"
    helped = subprocess.run([sys.executable, "-m", "tractor_diag", "stacks", "--help"],
                            capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0 and "never signalled" in helped.stdout


def test_an_exited_actor_whose_name_may_be_cut_says_so(tmp_path):
    """A zombie actor is named from its 15-byte comm (``_subactor[crash``):
    the report shows ``crash…``, in text and in a bundle's summary table,
    and --json keeps the bytes read plus a flag."""
    from test_sampler import _NAMED_KIDS

    flag = tmp_path / "exit-now"
    parent = subprocess.Popen([sys.executable, "-c", _NAMED_KIDS, str(flag)],
                              stdout=subprocess.PIPE, text=True)
    try:
        actor, _plain = map(int, parent.stdout.readline().split()[1:])
        flag.touch()
        deadline = time.monotonic() + 10
        while alive(actor):
            assert time.monotonic() < deadline, "the actor did not exit"
            time.sleep(0.05)
        (p,) = [p for p in stacks_json("--no-tasks", str(parent.pid)).values() if p.pid == actor]
        assert p.actor == "crash" and p.actor_truncated
        rc, text, _ = cli("--color", "never", "--no-tasks", str(parent.pid))
        assert rc == 0 and f"{actor} crash… [actor]" in text, text
        out = io.StringIO()
        assert run_verb(["dump-all", "-o", str(tmp_path / "b"), "--no-tasks", str(parent.pid)],
                        out=out, err=io.StringIO()) == 0
        (bundle,) = (tmp_path / "b").iterdir()
        summary = (bundle / "summary.md").read_text()
        assert f"| {actor} |   crash… |" in summary, summary
    finally:
        parent.kill()
        parent.wait(10)
