"""The pytest integration, exercised the way a user meets it: a real pytest
run (in a subprocess) of a small test file whose test hangs on a real tree."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import _leaks_helpers as lh
from tractor_diag.pytest_plugin import capture_bundle
from tractor_diag.pyspy import PY_SPY_ENV

REPO = Path(__file__).resolve().parent.parent
CURRENT = REPO / "tests" / "trees" / "current_tree.py"

# The inner test file: starts a one-leaf current-runtime tree (the leaf is
# stuck in time.sleep inside a task) and hangs on it in various ways.
INNER = textwrap.dedent("""
    import os, signal, subprocess, sys, time
    import trio
    from tractor_diag.pytest_plugin import afk_alarm_w_trace, fail_after_w_trace

    CURRENT = {current!r}

    def start_tree():
        p = subprocess.Popen([sys.executable, CURRENT, '--depth', '1', '--breadth', '1',
                              '--hang', 'sleep'], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE)
        assert p.stdout.readline().strip() == b'READY'
        return p

    def stop_tree(p):
        # (pid, parent seen): each killed through a pidfd, only while it
        # still has that parent (the root is our child, not yet waited for)
        pids, todo = [], [(p.pid, None)]
        while todo:
            pid, parent = todo.pop()
            pids.append((pid, parent))
            try:
                for tid in os.listdir(f'/proc/{{pid}}/task'):
                    with open(f'/proc/{{pid}}/task/{{tid}}/children') as f:
                        todo += [(int(c), pid) for c in f.read().split()]
            except OSError:
                pass
        for pid, parent in pids:
            try:
                fd = os.pidfd_open(pid)
            except OSError:
                continue
            try:
                with open(f'/proc/{{pid}}/stat', 'rb') as f:
                    st = f.read()
                if parent is None or int(st[st.rindex(b')') + 2:].split()[1]) == parent:
                    signal.pidfd_send_signal(fd, signal.SIGKILL)
            except (OSError, ValueError):
                pass
            finally:
                os.close(fd)
        p.wait(10)

    def test_async_hang():
        tree = start_tree()
        try:
            async def main():
                async with fail_after_w_trace(0.5, capture_timeout={capture_timeout}):
                    await trio.sleep_forever()
            trio.run(main)
        finally:
            stop_tree(tree)

    def test_sync_hang():
        tree = start_tree()
        try:
            with afk_alarm_w_trace(0.5, capture_timeout={capture_timeout}):
                time.sleep(60)  # LINE:sync-hang
        finally:
            stop_tree(tree)

    def test_factory(fail_after_w_trace_factory):
        async def main():
            async with fail_after_w_trace_factory(0.3):
                await trio.sleep_forever()
        trio.run(main)

    def test_in_time():
        async def main():
            async with fail_after_w_trace(30):
                await trio.sleep(0.01)
        trio.run(main)
""")


def run_inner(tmp_path: Path, *selection: str, capture_timeout: float = 20,
              env: dict | None = None) -> tuple[subprocess.CompletedProcess, float, Path]:
    test_file = tmp_path / "test_inner.py"
    test_file.write_text(INNER.format(current=str(CURRENT), capture_timeout=capture_timeout))
    bundles = tmp_path / "bundles"
    run_env = dict(os.environ, **(env or {}))
    run_env.pop("PYTEST_CURRENT_TEST", None)
    run_env.pop("PYTEST_ADDOPTS", None)
    start = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
         "--hung-dump-dir", str(bundles), *[f"test_inner.py::{s}" for s in selection]],
        cwd=tmp_path, capture_output=True, text=True, env=run_env, timeout=120,
    )
    return out, time.monotonic() - start, bundles


def bundle_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir()) if root.exists() else []


def summary_section(output: str) -> list[str]:
    tail = output.split("tractor-diag hung-dump bundles", 1)[1]
    return [ln for ln in tail.splitlines()[1:] if ln.startswith("test_inner.py::")]


def failed_with_bundle(out: subprocess.CompletedProcess, bundles: Path, test: str,
                       error: str) -> Path:
    """The inner run failed with ``error`` naming one bundle, which the
    terminal summary lists; returns the bundle."""
    text = out.stdout + out.stderr
    assert out.returncode == 1, text
    assert error in text and "hung-dump bundle: " in text, text
    (path,) = bundle_dirs(bundles)
    assert summary_section(out.stdout) == [f"test_inner.py::{test}: {path}"]
    return path


@pytest.fixture
def wedged_py_spy(tmp_path):
    """A py-spy stand-in that never returns and whose child escapes the
    process group (setsid) while holding the pipes; the escaped children are
    killed at teardown."""
    marker = tmp_path / "escaped.pids"
    stand_in = tmp_path / "wedged-py-spy"
    stand_in.write_text(f"#!/bin/sh\nsetsid sleep 600 &\necho $! >> {marker}\nwait\n")
    stand_in.chmod(0o755)
    since = lh.boot_ticks_now()
    yield stand_in
    for pid in marker.read_text().split() if marker.exists() else ():
        lh.kill_if(int(pid), not_before=since, argv=["sleep", "600"])


def test_fail_after_w_trace_writes_a_complete_bundle(tmp_path, xdg_runtime_dir):
    out, took, bundles = run_inner(tmp_path, "test_async_hang")
    path = failed_with_bundle(out, bundles, "test_async_hang", "TooSlowError")
    assert "still running after 0.5s; hung-dump bundle: " in out.stdout
    meta = json.loads((path / "meta.json").read_text())
    assert meta["label"] == "test_inner.py::test_async_hang"
    for name in meta["files"]:
        assert (path / name).is_file(), name
    # the test's own tree: pytest itself, the tree's root and its leaf
    assert len(meta["pids"]) >= 3
    summary = (path / "summary.md").read_text()
    verdict = next(ln for ln in summary.splitlines() if "**sync-blocked**: leaf_0 (" in ln)
    assert verdict.startswith("1. ") and "is blocked in time.sleep at current_tree.py:" in verdict
    row = next(ln for ln in summary.splitlines()
               if ln.startswith("| ") and " leaf_0 | live/blocked |" in ln)
    assert "in Actor.hang" in row and "[running]" in row
    assert took < 60


def test_wedged_py_spy_cannot_wedge_the_test(tmp_path, xdg_runtime_dir, wedged_py_spy):
    """With a py-spy that never returns the test still fails promptly, with
    a bundle that says why the stacks are missing."""
    out, took, bundles = run_inner(tmp_path, "test_async_hang", capture_timeout=4,
                                   env={PY_SPY_ENV: str(wedged_py_spy)})
    path = failed_with_bundle(out, bundles, "test_async_hang", "TooSlowError")
    assert took < 40, f"the inner run took {took:.1f}s"
    meta = json.loads((path / "meta.json").read_text())
    stacks = [m for m in meta["missing"] if m["what"] == "python stack"]
    assert stacks and all(m["why"].startswith("timeout:") for m in stacks)


def test_capture_keeps_to_a_short_bound(tmp_path, monkeypatch, spawn, wedged_py_spy):
    """The bound reaches every dump: with a wedged py-spy and 0.3 s the
    caller gets a complete bundle back within the bound, and each missing
    stack says the time ran out."""
    proc = spawn([sys.executable, "-c", "import time; print('READY', flush=True); time.sleep(600)"])
    monkeypatch.setenv(PY_SPY_ENV, str(wedged_py_spy))
    start = time.monotonic()
    taken = capture_bundle("short", out_dir=str(tmp_path / "b"), timeout=0.3, root=proc.root)
    # the wedged py-spy would never return: any small multiple of the bound
    # proves it reached the dump (0.5 s failed at load 10+ on 2 cores)
    assert time.monotonic() - start < 2.0
    assert taken.error is None and Path(taken.path).is_dir()
    meta = json.loads((Path(taken.path) / "meta.json").read_text())
    (missing,) = [m for m in meta["missing"] if m["what"] == "python stack"]
    assert missing["pid"] == proc.root and missing["why"].startswith("timeout:")


def test_afk_alarm_w_trace_interrupts_a_sync_hang(tmp_path, xdg_runtime_dir):
    out, took, bundles = run_inner(tmp_path, "test_sync_hang")
    path = failed_with_bundle(out, bundles, "test_sync_hang", "AfkAlarmTimeout")
    summary = (path / "summary.md").read_text()
    # pytest's own main thread: the user frame is the test's time.sleep line
    line_no = INNER.splitlines().index(
        next(ln for ln in INNER.splitlines() if "LINE:sync-hang" in ln)) + 1
    me = next(ln for ln in summary.splitlines() if "pytest" in ln and ln.startswith("| "))
    assert f"test_inner.py:{line_no} in test_sync_hang" in me
    assert took < 60


def test_factory_labels_with_node_id_and_passing_tests_take_nothing(tmp_path, xdg_runtime_dir):
    out, _, bundles = run_inner(tmp_path, "test_factory", "test_in_time")
    text = out.stdout + out.stderr
    assert out.returncode == 1 and "1 failed, 1 passed" in text, text
    (path,) = bundle_dirs(bundles)
    assert json.loads((path / "meta.json").read_text())["label"] == "test_inner.py::test_factory"
    assert "test_inner.py-test_factory" in path.name


def test_plugin_is_inert_unless_used(tmp_path):
    code = ("import sys, tractor_diag.pytest_plugin; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('trio', 'msgspec', 'psutil', 'platformdirs') or m.startswith('tractor_diag.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    # the plugin's own modules, one per job, and nothing else
    assert out.stdout.strip() == ("['tractor_diag.pytest_guards', 'tractor_diag.pytest_leaks', "
                                  "'tractor_diag.pytest_plugin', 'tractor_diag.pytest_reap']")
    # a run that never uses it: loaded through the entry point, says nothing
    (tmp_path / "test_plain.py").write_text("def test_ok():\n    pass\n")
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                          "test_plain.py"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "hung-dump" not in run.stdout
    helped = subprocess.run([sys.executable, "-m", "pytest", "--help"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert "--hung-dump-dir" in helped.stdout
