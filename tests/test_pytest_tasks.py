"""The test's own trio task tree in hung-dump bundles, and a bundle before
pytest-timeout ends a hung test: real inner pytest runs in a subprocess."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

INNER = textwrap.dedent("""
    import os, subprocess, sys, time
    import pytest
    import trio
    from tractor_diag.pytest_plugin import afk_alarm_w_trace, fail_after_w_trace

    async def stuck_helper():
        await trio.sleep_forever()

    def test_bare_async_hang():
        async def main():
            async with trio.open_nursery() as n:
                n.start_soon(stuck_helper)
                async with fail_after_w_trace(0.5):
                    await trio.sleep_forever()  # LINE:bare-hang
        trio.run(main)

    def test_trio_wedged_in_sync_code():
        async def wedged():
            time.sleep(60)  # LINE:wedged
        async def main():
            async with trio.open_nursery() as n:
                n.start_soon(stuck_helper)
                n.start_soon(wedged)
        with afk_alarm_w_trace(1.0):
            trio.run(main)

    CHILD = '''
    import os, trio
    async def child_waits():
        await trio.sleep_forever()
    async def main():
        async with trio.open_nursery() as n:
            n.start_soon(child_waits)
            print("UP", flush=True)
            await trio.sleep_forever()
    trio.run(main)
    '''

    @pytest.mark.timeout(6)
    def test_hangs_until_pytest_timeout():
        child = subprocess.Popen([sys.executable, '-c', CHILD], stdout=subprocess.PIPE)
        try:
            assert child.stdout.readline().strip() == b'UP'
            with open(os.environ['CHILD_PID_FILE'], 'w') as f:
                f.write(str(child.pid))
            async def main():
                async with trio.open_nursery() as n:
                    n.start_soon(stuck_helper)
                    await trio.sleep_forever()  # LINE:timeout-hang
            trio.run(main)
        finally:
            child.kill()
            child.wait()
""")


def line_of(tag: str) -> int:
    return next(i for i, ln in enumerate(INNER.splitlines(), 1) if f"LINE:{tag}" in ln)


def run_inner(tmp_path: Path, test: str, *args: str, ini: str | None = None):
    (tmp_path / "test_inner.py").write_text(INNER)
    if ini is not None:
        (tmp_path / "pytest.ini").write_text(ini)
    bundles = tmp_path / "bundles"
    env = dict(os.environ, CHILD_PID_FILE=str(tmp_path / "child.pid"))
    env.pop("PYTEST_CURRENT_TEST", None)
    env.pop("PYTEST_ADDOPTS", None)
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-s",
         "--hung-dump-dir", str(bundles), *args, f"test_inner.py::{test}"],
        cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120,
    )
    text = out.stdout + out.stderr
    paths = sorted(bundles.iterdir()) if bundles.exists() else []
    _remove_dump_files(paths, tmp_path)
    assert out.returncode == 1, text
    assert len(paths) == 1, text
    return paths[0], text


def _remove_dump_files(bundles: list[Path], tmp_path: Path) -> None:
    """The inner run's task-dump files (pytest's and its child's hold dumps,
    so they outlive them by design): ours to remove."""
    ns = os.stat("/proc/self/ns/pid").st_ino
    pids = [json.loads((b / "meta.json").read_text())["roots"][0] for b in bundles]
    child = tmp_path / "child.pid"
    if child.exists():
        pids.append(int(child.read_text()))
    for pid in pids:
        for suffix in ("", ".1"):
            Path(f"/tmp/tractor-diag-taskdump-{ns}-{pid}.log{suffix}").unlink(missing_ok=True)


def says(summary: str, pid: int, why: str) -> bool:
    """The summary names ``pid`` as stuck for the reason the guard gave."""
    return re.search(rf"\((pid )?{pid}\)(:| reported: caller:) {re.escape(why)}",
                     summary) is not None


def pytest_pid(bundle: Path) -> int:
    meta = json.loads((bundle / "meta.json").read_text())
    return meta["roots"][0]


def test_fail_after_w_trace_bundle_holds_the_tests_own_task_tree(tmp_path, xdg_runtime_dir):
    bundle, _ = run_inner(tmp_path, "test_bare_async_hang")
    pid = pytest_pid(bundle)
    summary = (bundle / "summary.md").read_text()
    # the bare sleep_forever used to read "0 look stuck"
    assert json.loads((bundle / "meta.json").read_text())["stuck"] == [pid], summary
    assert says(summary, pid, "fail_after_w_trace(0.5s) ran out in task"), summary
    tasks = (bundle / "tasks" / f"{pid}.txt").read_text()
    assert "stuck_helper" in tasks
    assert f"test_inner.py:{line_of('bare-hang')} in test_bare_async_hang.<locals>.main" in tasks
    assert "[observer]" in tasks  # the watchdog that wrote it, not a task holding the loop
    assert "[running]" not in tasks


def test_afk_alarm_w_trace_shows_the_task_wedging_the_loop(tmp_path, xdg_runtime_dir):
    bundle, _ = run_inner(tmp_path, "test_trio_wedged_in_sync_code")
    pid = pytest_pid(bundle)
    tasks = (bundle / "tasks" / f"{pid}.txt").read_text()
    running = [ln for ln in tasks.splitlines() if "[running]" in ln]
    assert len(running) == 1 and "wedged" in running[0], tasks
    assert f"test_inner.py:{line_of('wedged')} in" in tasks
    summary = (bundle / "summary.md").read_text()
    assert says(summary, pid, "afk_alarm_w_trace(1.0s) went off"), summary


def _check_timeout_bundle(bundle: Path, tmp_path: Path, text: str) -> None:
    assert "Timeout" in text  # pytest-timeout still ended the test
    meta = json.loads((bundle / "meta.json").read_text())
    assert meta["label"].startswith("timeout-test_inner.py::test_hangs_until_pytest_timeout")
    pid = pytest_pid(bundle)
    summary = (bundle / "summary.md").read_text()
    assert says(summary, pid, "pytest-timeout (6s) about to end"), summary
    tasks = (bundle / "tasks" / f"{pid}.txt").read_text()
    assert "stuck_helper" in tasks
    assert f"test_inner.py:{line_of('timeout-hang')} in" in tasks
    # a Python process the test started is armed too (no change to it)
    child = int((tmp_path / "child.pid").read_text())
    assert "child_waits" in (bundle / "tasks" / f"{child}.txt").read_text()


def test_dump_on_timeout_option(tmp_path, xdg_runtime_dir):
    start = time.monotonic()
    bundle, text = run_inner(tmp_path, "test_hangs_until_pytest_timeout",
                             "--tractor-dump-on-timeout")
    _check_timeout_bundle(bundle, tmp_path, text)
    assert time.monotonic() - start < 60


def test_dump_on_timeout_ini_key(tmp_path, xdg_runtime_dir):
    bundle, text = run_inner(tmp_path, "test_hangs_until_pytest_timeout",
                             ini="[pytest]\ntractor_dump_on_timeout = true\n")
    _check_timeout_bundle(bundle, tmp_path, text)
