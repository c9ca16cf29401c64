"""The plugin's opt-in leak checks and session-end reaping, met the way a user
meets them: a real pytest run (in a subprocess) of a small test file whose
tests leave real processes and socket files behind.

The inner tests record every process they start in a pid file; the outer
test kills exactly those at teardown (whatever the plugin did or failed to
do). The isolated ``XDG_RUNTIME_DIR`` of the ``bindspace`` fixture is
inherited by the inner run, so its bindspace dir holds only its own sockets.
Orphans stay in this test's session id: the plugin blames (and reaps) only
orphans of pytest's own session, so concurrent runs elsewhere on the machine
are neither seen nor touched.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import _leaks_helpers as lh
from _reap_helpers import orphans_go_to_init

TESTS = Path(__file__).resolve().parent
TREES_HELPERS = TESTS / "trees" / "helpers.py"

INNER = textwrap.dedent("""
    import os, subprocess, sys
    import pytest

    sys.path.insert(0, {tests!r})
    import _leaks_helpers as lh

    PIDS = {pids!r}
    TREES_HELPERS = {trees_helpers!r}
    BINDSPACE = os.path.join(os.environ['XDG_RUNTIME_DIR'], 'tractor')

    def test_leaks_orphan():
        lh.start_orphan(PIDS, 'leaky', lh.actor_argv('leaky'))

    def test_leaks_socket():
        # a binder killed without cleanup: its socket file stays behind
        p = lh.start_child(PIDS, 'binder', [sys.executable, TREES_HELPERS, 'listen-uds',
                                            BINDSPACE, 'leaky'])
        p.kill()
        p.wait(10)

    def test_clean():
        p = lh.start_child(PIDS, 'tidy', lh.actor_argv('tidy'))
        p.terminate()
        p.wait(10)

    def test_child_exits_in_time():
        # still running when the test returns; exits on its own 0.3 s later
        lh.start_child(PIDS, 'quick', lh.actor_argv('quick', 0.3))

    def test_leaves_child_actor():
        lh.record(PIDS, 'pytest', os.getpid())
        lh.start_child(PIDS, 'lingering', lh.actor_argv('lingering'))

    @pytest.mark.tractor_allow_leaks
    def test_allowed_leak():
        lh.start_orphan(PIDS, 'allowed', lh.actor_argv('allowed'))

    def test_foreign_orphan_appears():
        # an orphaned actor of another session (another terminal, CI job, run)
        pid = lh.start_orphan(PIDS, 'foreign', lh.actor_argv('foreign', new_session=True))
        lh.leave_session_cgroup(pid)

    def test_leaks_non_actor_orphan():
        lh.start_orphan(PIDS, 'plain-orphan', ['sleep', '600'], ready=False)

    def test_leaves_non_actor_child():
        lh.start_child(PIDS, 'plain-child', ['sleep', '600'], ready=False)

    def test_leaks_hostile_orphan():
        # its name would clear the screen and forge a line of pytest's output
        lh.start_orphan(PIDS, 'hostile', lh.actor_argv('ev\x1b[2J\x9b2J\\nFORGED'))
""")

FINAL = re.compile(r"\d+ (passed|failed|errors?|skipped|deselected|warnings?)\b.* in [\d.]+s")
WARNING = re.compile(r"TractorLeakWarning: tractor-diag: (\S+) left \d+ things? behind: (.*)")


class Run:
    def __init__(self, out: subprocess.CompletedProcess, pids: dict[str, tuple[int, int]]):
        self.out = out
        self.text = out.stdout + out.stderr
        self.pids = pids

    def pid(self, label: str) -> int:
        return self.pids[label][0]

    def alive(self, label: str) -> bool:
        return lh.alive(*self.pids[label])

    def warnings(self) -> dict[str, str]:
        """test name -> what its TractorLeakWarning says it left behind."""
        out: dict[str, str] = {}
        for node, what in WARNING.findall(self.text):
            assert node not in out, self.text
            out[node.split("::")[1]] = what
        return out

    def reap_summary(self) -> list[str]:
        assert "tractor-diag session-end reap" in self.out.stdout, self.text
        tail = self.out.stdout.split("tractor-diag session-end reap", 1)[1]
        lines = []
        for ln in tail.splitlines()[1:]:
            if ln.startswith("=") or FINAL.match(ln):
                break
            lines.append(ln)
        return lines


def summary_pids(lines: list[str]) -> set[int]:
    """The pids a session-end summary names: ``pid N ...`` lines and the
    ``name@N.sock`` / ``binder N`` of socket lines. Whole numbers only: pid 6
    must not match a ``16`` or a temp dir name."""
    out: set[int] = set()
    for ln in lines:
        m = re.match(r"pid (\d+) ", ln)
        if m:
            out.add(int(m[1]))
        out.update(int(n) for n in re.findall(r"@(\d+)\.sock\b", ln))
        out.update(int(n) for n in re.findall(r"\bbinder (\d+)\b", ln))
    return out


def test_summary_pids_are_whole_numbers():
    lines = ["pid 16 leaky (orphaned actor): exited after SIGINT",
             "unlinked /tmp/pytest-6/x/leaky@26.sock (binder 26 is gone)"]
    assert summary_pids(lines) == {16, 26}
    assert 6 not in summary_pids(lines) and 1 not in summary_pids(lines)


@pytest.fixture
def leak_run(tmp_path, bindspace):
    pid_file = tmp_path / "started.pids"
    (tmp_path / "test_inner.py").write_text(INNER.format(
        tests=str(TESTS), pids=str(pid_file), trees_helpers=str(TREES_HELPERS)))

    def run(*args: str, tests: tuple[str, ...]) -> Run:
        env = dict(os.environ)
        for name in ("PYTEST_CURRENT_TEST", "PYTEST_ADDOPTS"):
            env.pop(name, None)
        out = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
             *args, *[f"test_inner.py::{t}" for t in tests]],
            cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120,
        )
        return Run(out, lh.recorded(str(pid_file)))

    run.pid_file = str(pid_file)
    # orphans must go to init, not to a pytest process another test left a subreaper
    with orphans_go_to_init():
        yield run
    left = lh.kill_recorded(str(pid_file))
    assert not left, f"could not kill: {left}"


ALL_KINDS = ("test_leaks_orphan", "test_leaks_socket", "test_clean", "test_child_exits_in_time",
             "test_leaves_child_actor", "test_allowed_leak", "test_foreign_orphan_appears",
             "test_leaks_non_actor_orphan")


def test_warn_names_each_leak_and_nothing_else(leak_run, bindspace):
    """ini ``tractor_leak_check = warn``: one warning per leaking test naming
    exactly what it left; clean tests, a child that exits within the settle
    window, an allowed leak, an orphan of another session and non-actor
    processes say nothing."""
    run = leak_run("-o", "tractor_leak_check=warn", tests=ALL_KINDS)
    assert run.out.returncode == 0, run.text
    assert "8 passed" in run.text, run.text
    warned = run.warnings()
    assert set(warned) == {"test_leaks_orphan", "test_leaks_socket", "test_leaves_child_actor"}, \
        run.text
    assert warned["test_leaks_orphan"] == f"orphaned actor leaky (pid {run.pid('leaky')})"
    binder = run.pid("binder")
    assert warned["test_leaks_socket"] == (
        f"socket file {bindspace}/leaky@{binder}.sock (orphaned-dead: binder {binder} is gone)")
    assert warned["test_leaves_child_actor"] == (
        f"actor lingering (pid {run.pid('lingering')}) still running below pytest "
        f"(parent {run.pid('pytest')})")
    # the foreign orphan really is another session's
    assert os.getsid(run.pid("foreign")) != os.getsid(0) and run.alive("foreign")
    # the check only looks: what leaked is still there
    assert run.alive("leaky") and (bindspace / f"leaky@{binder}.sock").exists()


def test_fail_errors_the_leaking_test_at_teardown(leak_run):
    run = leak_run("--tractor-leak-check=fail",
                   tests=("test_clean", "test_leaks_orphan", "test_child_exits_in_time"))
    assert run.out.returncode == 1, run.text
    assert "3 passed, 1 error" in run.text, run.text
    errors = re.findall(r"_+ ERROR at teardown of (\S+) _+", run.text)
    assert errors == ["test_leaks_orphan"], run.text
    assert (f"tractor-diag: test_inner.py::test_leaks_orphan left 1 thing behind: "
            f"orphaned actor leaky (pid {run.pid('leaky')})") in run.text
    assert "TractorLeakWarning" not in run.text


@pytest.mark.parametrize("args", [("--tractor-leak-check=off",), ()], ids=["off", "default"])
def test_off_says_nothing(leak_run, args):
    run = leak_run(*args, tests=("test_leaks_orphan", "test_leaks_socket",
                                 "test_leaves_child_actor"))
    assert run.out.returncode == 0, run.text
    assert "3 passed" in run.text and "warning" not in run.text, run.text
    assert "tractor-diag" not in run.text and "Tractor" not in run.text, run.text
    assert run.alive("leaky") and run.alive("lingering")


def test_reap_at_end_takes_only_what_the_session_left(leak_run, bindspace, uds_socket):
    """The leaked orphan, the child actor and the stale socket go; an
    actor-looking orphan and a stale socket from before the session, an
    orphaned actor of another session, a non-actor orphan and a non-actor
    child stay untouched."""
    elder = lh.start_orphan(leak_run.pid_file, "elder", lh.actor_argv("elder"))
    old_socket = uds_socket(name="old", live=False).path
    run = leak_run("--tractor-leak-check=warn", "--tractor-reap-at-end",
                   tests=("test_leaks_orphan", "test_leaks_socket", "test_leaves_child_actor",
                          "test_foreign_orphan_appears", "test_leaks_non_actor_orphan",
                          "test_leaves_non_actor_child"))
    assert run.out.returncode == 0, run.text
    assert "6 passed" in run.text, run.text
    leaky, lingering, binder = run.pid("leaky"), run.pid("lingering"), run.pid("binder")
    summary = run.reap_summary()
    # the exit status shows only when the exit was seen before init reaped it
    assert sorted(ln.split("; exit status")[0] for ln in summary) == sorted([
        f"pid {leaky} leaky (orphaned actor): exited after SIGINT",
        f"pid {lingering} lingering (descendant of {run.pid('pytest')}): exited after SIGINT",
        f"unlinked {bindspace}/leaky@{binder}.sock (binder {binder} is gone)",
    ]), run.text
    assert not run.alive("leaky") and not run.alive("lingering")
    assert not (bindspace / f"leaky@{binder}.sock").exists()
    assert run.alive("elder") and run.pid("elder") == elder
    assert run.alive("plain-orphan") and run.alive("plain-child") and run.alive("foreign")
    assert old_socket.exists()
    named = summary_pids(summary)
    for label in ("elder", "foreign", "plain-orphan", "plain-child"):
        assert run.pid(label) not in named, (label, summary)


def test_reap_at_end_alone_finds_session_orphans(leak_run):
    """Without the leak check, session-end reaping still finds the orphan
    made during the session (and the child actor) and says nothing else."""
    run = leak_run("--tractor-reap-at-end", tests=("test_leaks_orphan", "test_leaves_child_actor"))
    assert run.out.returncode == 0 and "2 passed" in run.text, run.text
    assert "TractorLeakWarning" not in run.text
    summary = run.reap_summary()
    assert [ln.split(" (")[0] for ln in sorted(summary)] == sorted(
        [f"pid {run.pid('leaky')} leaky", f"pid {run.pid('lingering')} lingering"]), run.text
    assert not run.alive("leaky") and not run.alive("lingering")


def test_clean_session_reports_nothing_left(leak_run):
    run = leak_run("--tractor-leak-check=fail", "--tractor-reap-at-end",
                   tests=("test_clean", "test_child_exits_in_time"))
    assert run.out.returncode == 0 and "2 passed" in run.text, run.text
    assert run.reap_summary() == ["nothing left behind"], run.text
    assert "tractor-diag: test_inner" not in run.text


def test_bad_mode_is_a_usage_error(tmp_path):
    (tmp_path / "test_plain.py").write_text("def test_ok():\n    pass\n")

    def pytest_run(*args):
        return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                              cwd=tmp_path, capture_output=True, text=True, timeout=120)

    ini = pytest_run("-q", "-o", "tractor_leak_check=loud", "test_plain.py")
    assert ini.returncode == 4, ini.stdout + ini.stderr
    assert "tractor_leak_check: 'loud' is not one of off, warn, fail" in ini.stderr
    assert "Traceback" not in ini.stderr
    flag = pytest_run("-q", "--tractor-leak-check=loud", "test_plain.py")
    assert flag.returncode == 4 and "invalid choice: 'loud'" in flag.stderr, flag.stderr
    helped = pytest_run("--help")
    assert "--tractor-leak-check={off,warn,fail}" in helped.stdout
    assert "--tractor-reap-at-end" in helped.stdout
    assert "tractor_leak_check" in helped.stdout



def test_warnings_and_reap_summary_escape_what_processes_chose(leak_run):
    run = leak_run("-o", "tractor_leak_check=warn", "--tractor-reap-at-end",
                   tests=("test_leaks_hostile_orphan",))
    assert run.out.returncode == 0, run.text
    raw = sorted({hex(ord(c)) for c in run.text
                  if (ord(c) < 0x20 and c != "\n") or 0x7F <= ord(c) <= 0x9F})
    assert not raw, (raw, run.text)
    assert not any(ln.startswith("FORGED") for ln in run.text.splitlines()), run.text
    shown = "ev\\x1b[2J\\x9b2J\\nFORGED"
    assert f"orphaned actor {shown} (pid {run.pid('hostile')})" in run.warnings()[
        "test_leaks_hostile_orphan"], run.text
    assert any(f"pid {run.pid('hostile')} {shown}" in ln for ln in run.reap_summary()), run.text
