"""Arming the task dumper at interpreter start (`tractor-diag run`, the
dashboard's launch mode): every actor of a real launched tree answers with
its own full task tree, with no change to the program, in venvs where
tractor_diag is not installed, with every spawn backend at hand.

The current tractor runtimes are found like the runtime_trees fixture finds
them (``trees.harness.runtime_python``); a missing one skips with one line
saying what to set. The tree itself is ``taskdump_progs/runtime_tree.py``,
launched through ``tractor-diag run`` (each actor names its own task).
"""
from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tractor_diag.cli import run_verb
from tractor_diag.taskdump import ENV_VAR, STARTUP_DIR, startup_env

from test_stacks import stacks_json
from trees import harness
from trees.harness import free_port

REPO = Path(__file__).resolve().parent.parent
RUNTIME_TREE = REPO / "tests" / "taskdump_progs" / "runtime_tree.py"
RUN = [sys.executable, "-m", "tractor_diag", "run", "--"]


def _runtime(which: str) -> Path:
    py = harness.runtime_python(which)
    if py is None:
        pytest.skip(harness.runtime_missing_reason(which))
    return py


@pytest.fixture(scope="module")
def runtime_python() -> Path:
    return _runtime("main")


def _python_sees(python: str, code: str, env: dict[str, str]) -> str:
    ran = subprocess.run([python, "-c", code], capture_output=True, text=True,
                         env=env, timeout=60)
    assert ran.returncode == 0, ran.stderr
    return ran.stdout.strip()


# ---------------------------------------------------------------------------
# the start-up hook
# ---------------------------------------------------------------------------

_SHOW_HANDLER = "import signal; print(type(signal.getsignal(signal.SIGUSR1)).__name__)"


def _interpreters() -> list[str]:
    found = [sys.executable]
    released = Path(os.environ.get("TRACTOR_DIAG_TRACTOR_VENV") or REPO / ".venv-tractor")
    if (released / "bin" / "python").exists():
        found.append(str(released / "bin" / "python"))
    current = harness.runtime_python("main")
    if current is not None:
        found.append(str(current))
    return found


@pytest.mark.parametrize("python", _interpreters())
def test_hook_arms_in_any_venv_and_is_a_no_op_unset(python, tmp_path):
    env = startup_env()
    # another venv: tractor_diag is not importable there, the hook still arms
    assert _python_sees(python, _SHOW_HANDLER, env) == "_SignalDumper"
    off = dict(env, **{ENV_VAR: ""})
    assert _python_sees(python, _SHOW_HANDLER, off) == "Handlers"  # SIG_DFL
    # an existing sitecustomize still runs (after ours)
    other = tmp_path / "site"
    other.mkdir()
    (other / "sitecustomize.py").write_text("import builtins; builtins.OTHER_SITE = 1\n")
    chained = dict(env, PYTHONPATH=os.pathsep.join([env["PYTHONPATH"], str(other)]))
    code = "import builtins, signal; print(builtins.OTHER_SITE, type(signal.getsignal(signal.SIGUSR1)).__name__)"
    assert _python_sees(python, code, chained) == "1 _SignalDumper"
    # a program that installs its own SIGUSR1 handler keeps it, and is no
    # longer announced as ours
    code = textwrap.dedent("""
        import os, signal
        ns = os.stat('/proc/self/ns/pid').st_ino
        path = f'/tmp/tractor-diag-taskdump-{ns}-{os.getpid()}.log'
        before = os.path.exists(path)
        signal.signal(signal.SIGUSR1, lambda *a: None)
        print(before, os.path.exists(path))
    """)
    assert _python_sees(python, code, env) == "True False"


def test_run_exits_with_the_commands_status():
    ran = subprocess.run([*RUN, sys.executable, "-c", "import os; raise SystemExit("
                          f"0 if os.environ['{ENV_VAR}'] == '1' and "
                          f"os.environ['PYTHONPATH'].startswith({STARTUP_DIR!r}) else 9)"],
                         timeout=60)
    assert ran.returncode == 0
    assert subprocess.run([*RUN, "sh", "-c", "exit 7"], timeout=60).returncode == 7
    assert subprocess.run([*RUN, "sh", "-c", "kill -TERM $$"], timeout=60).returncode == 143
    ran = subprocess.run([*RUN, "/nonexistent/cmd"], capture_output=True, text=True, timeout=60)
    assert ran.returncode == 127 and ran.stderr.count("\n") == 1 and "Traceback" not in ran.stderr
    ran = subprocess.run(RUN, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 2 and "Traceback" not in ran.stderr


def test_dashboard_launch_arms_the_launched_program():
    import trio

    from tractor_diag.launch import Supervisor

    lines: list[str] = []

    async def main():
        sup = Supervisor([sys.executable, "-c", _SHOW_HANDLER],
                         on_output=lambda name, got: lines.extend(got), grace=1.0)
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            with trio.move_on_after(30):
                while sup.returncode is None or not lines:
                    await trio.sleep(0.05)
            nursery.cancel_scope.cancel()  # run() then stops what is left

    trio.run(main)
    assert "_SignalDumper" in lines, lines


# ---------------------------------------------------------------------------
# every actor of a real launched current-runtime tree
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("method", sorted(harness.BACKEND_RUNTIME))
def test_task_tree_from_every_actor_of_a_launched_tree(method, spawn, tmp_path):
    # main_thread_forkserver (fork without exec) is on the branch snapshot only
    runtime_python = _runtime(harness.BACKEND_RUNTIME[method])
    marks = tmp_path / "marks"
    marks.mkdir()
    tree = spawn([*RUN, str(runtime_python), str(RUNTIME_TREE), str(free_port()), method,
                  str(marks)], timeout=90, label=f"runtime-{method}")
    _, root, mid, leaf = tree.ready_line.split()
    pids = {"root": int(root), "mid": int(mid), "leaf": int(leaf)}
    procs = stacks_json("--task-timeout", "10", str(pids["root"]))
    for name, pid in pids.items():
        tasks = procs[pid].tasks
        assert tasks.status == "collected" and tasks.format == "tractor-diag", (name, tasks)
        assert tasks.complete
        # its own tree: its own pid in the dump, its own task, nobody else's
        assert f"process: pid={pid} " in tasks.text
        names = {t.name for t in tasks.tasks}
        assert f"{name}_waits" in names, (name, sorted(names))
        assert not {f"{other}_waits" for other in pids if other != name} & names


def test_tractors_own_empty_stackscope_dump_is_called_empty(runtime_python, spawn, tmp_path):
    # Not launched under tractor-diag: the runtime's own stackscope handler
    # answers, and on Python 3.13 its dump holds no task of the program.
    marks = tmp_path / "marks"
    marks.mkdir()
    tree = spawn([str(runtime_python), str(RUNTIME_TREE), str(free_port()), "trio",
                  str(marks), "--stackscope"], timeout=90, label="runtime-stackscope")
    _, root, mid, leaf = tree.ready_line.split()
    try:
        procs = stacks_json("--task-timeout", "5", root)
        for pid in (int(mid), int(leaf)):  # sub-actors, recognised by their titles
            tasks = procs[pid].tasks
            assert tasks.status == "collected" and tasks.format == "undelimited", tasks
            assert "stackscope" in tasks.text and "_waits" not in tasks.text
            assert tasks.empty and "tractor-diag run -- CMD" in tasks.reason
        from test_stacks import cli

        rc, text, _ = cli("--color", "never", "--task-timeout", "5", mid)
        assert rc == 0 and "trio tasks: empty stackscope dump:" in text
        out = tmp_path / "bundles"
        rc = run_verb(["dump-all", "--task-timeout", "5", "-o", str(out), root],
                      out=io.StringIO(), err=io.StringIO())
        assert rc == 0
        (bundle,) = out.iterdir()
        summary = (bundle / "summary.md").read_text()
        assert "EMPTY stackscope dump" in summary and "## Empty task dumps" in summary
    finally:
        for pid in (root, mid, leaf):
            Path(f"/tmp/tractor-stackscope-{pid}.log").unlink(missing_ok=True)


def test_stackscope_enabled_under_run_keeps_our_dumper(runtime_python, spawn, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    tree = spawn([*RUN, str(runtime_python), str(RUNTIME_TREE), str(free_port()), "trio",
                  str(marks), "--stackscope"], timeout=90, label="runtime-run-stackscope")
    _, root, mid, leaf = tree.ready_line.split()
    procs = stacks_json("--task-timeout", "10", root)
    for name, pid in (("root", root), ("mid", mid), ("leaf", leaf)):
        tasks = procs[int(pid)].tasks
        assert tasks.status == "collected" and tasks.format == "tractor-diag", (name, tasks)
        assert f"{name}_waits" in {t.name for t in tasks.tasks}
