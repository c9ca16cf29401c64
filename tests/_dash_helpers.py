"""Shared helpers for the dashboard tests (tests/test_dash*.py)."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time

from _proc import stat_fields

def ns_scenario(script, tmp_path, *args: str, timeout: float) -> dict:
    """Run a pid-reuse scenario ``script`` as pid 1 of a private PID
    namespace (it drives the real dashboard there, with the current tractor
    runtime's python for its look-alikes) and return the JSON it prints
    last. Skips without root, unshare or that runtime."""
    import pytest
    from trees.harness import runtime_missing_reason, runtime_python

    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare for a private pid namespace")
    python = runtime_python("main")  # has setproctitle
    if python is None:
        pytest.skip(runtime_missing_reason("main"))
    ran = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child",
         sys.executable, str(script), str(tmp_path), str(python), *args],
        capture_output=True, text=True, timeout=timeout)
    assert ran.returncode == 0, ran.stderr[-3000:]
    return json.loads(ran.stdout.splitlines()[-1])


DEMO_TREE = [sys.executable, "-m", "tractor_diag.demo_tree", "--no-runaway"]
DEMO_ACTORS = {"gateway", "db_pool", "cache", "supervisor", "stubborn",
               "hot_loop", "flaky_parent"}


def run(coro, timeout: float = 90.0):
    """Run an async test body on asyncio (Textual's loop), bounded."""
    async def bounded():
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


async def until(pred, timeout: float = 15.0, interval: float = 0.05, pilot=None, what: str = ""):
    """Wait (on the app's loop) until ``pred()`` is true; fail on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or pred}")
        if pilot is not None:
            await pilot.pause(interval)
        else:
            await asyncio.sleep(interval)


async def wait_for_pids(app, pilot, pids, timeout: float = 30.0):
    """Wait until the tree pane shows every one of ``pids``."""
    pids = set(pids)
    await until(lambda: pids <= set(app.proc_tree.keys), timeout, pilot=pilot,
                what=f"tree to show {sorted(pids)}")


async def key_result(app, pilot, pid: int, key: str | None, section: str, timeout: float,
                     what: str = ""):
    """Select ``pid``, press ``key`` (None: it was pressed already) and wait
    until the key's job has put its result for ``pid`` under ``section`` of
    the detail pane. -> (title, body)."""
    if key is not None:
        app.proc_tree.select_pid(pid)
        await pilot.press(key)
    await until(lambda: section in app._extras.get(pid, {}), timeout, pilot=pilot,
                what=what or section)
    return app._extras[pid][section]


def alive(pid: int) -> bool:
    """Exists and is not a zombie."""
    rest = stat_fields(pid)
    return rest is not None and rest[0] not in (b"Z", b"X")


def start_of(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks (None when gone)."""
    rest = stat_fields(pid)
    return None if rest is None else int(rest[19])


def pin_all(pids) -> dict[int, int]:
    """{pid: start ticks} of those of ``pids`` alive now: what a test may
    later kill (its own processes, recorded while they were surely its own)."""
    out = {}
    for pid in pids:
        start = start_of(pid)
        if start is not None and alive(pid):
            out[pid] = start
    return out


def alive_pinned(pinned: dict[int, int]) -> list[int]:
    """Those of the recorded processes that still run (same pid, same start)."""
    return sorted(p for p, start in pinned.items() if alive(p) and start_of(p) == start)


def kill_pinned(pinned: dict[int, int]) -> list[int]:
    """Last-resort teardown: SIGKILL what a test recorded, through a pidfd
    opened first and checked against the recorded start time, so a pid
    reused since reaches nobody. -> the pids killed."""
    from _leaks_helpers import kill_pinned as kill_one

    return [pid for pid, start in pinned.items() if kill_one(pid, start)]


def descendants_of(pid: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                raw = f.read()
        except OSError:
            continue
        ppid = int(raw[raw.rfind(b")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(name))
    out: list[int] = []
    stack = list(kids.get(pid, ()))
    while stack:
        p = stack.pop()
        out.append(p)
        stack.extend(kids.get(p, ()))
    return out
