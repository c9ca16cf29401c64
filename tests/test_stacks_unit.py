"""Pure parts of stacks/tasks/snapshot: py-spy JSON and error parsing, task
dump parsing (of real dumps made here), "where is it stuck" heuristics,
bounded runs, dump-file collection."""
from __future__ import annotations

import os
import sys
import threading
import time

import trio

from tractor_diag import taskdump
from tractor_diag.render import Style
from tractor_diag.render.stacks import render_proc
from tractor_diag.diagnosis.where import (
    await_point, await_text, focus_thread, is_internal, short_path, trio_focus, whereabouts,
)
from tractor_diag.stackmodel import (
    Frame, KernelSide, ProcStacks, PyStack, TaskInfo, TaskTree, Thread,
)
from tractor_diag.pyspy import classify_py_spy_error, parse_py_spy_json, run_bounded
from tractor_diag.tasks import Pending, collect, parse_task_lines

# Shaped like `py-spy dump --json` 0.4 output (frames innermost first).
SPY_JSON = b"""[
 {"pid": 4242, "thread_id": 1, "thread_name": "worker", "os_thread_id": 4250,
  "active": true, "owns_gil": true,
  "frames": [
   {"name": "spin", "filename": "/app/job.py", "module": null,
    "short_filename": "job.py", "line": 7, "locals": null,
    "is_entry": false, "is_shim_entry": false},
   {"name": "Thread.run", "filename": "/usr/lib/python3.11/threading.py",
    "module": null, "short_filename": "threading.py", "line": 982,
    "locals": [{"name": "self", "addr": 1, "arg": true, "repr": "<Thread>"}],
    "is_entry": true, "is_shim_entry": false}]},
 {"pid": 4242, "thread_id": 2, "thread_name": null, "os_thread_id": 4242,
  "active": false, "owns_gil": false,
  "frames": [
   {"name": "epoll_wait", "filename": "/usr/lib/libc.so.6",
    "module": "/usr/lib/libc.so.6", "short_filename": "libc.so.6", "line": 0,
    "locals": null, "is_entry": true, "is_shim_entry": true},
   {"name": "get_events", "filename": "/v/lib/python3.11/site-packages/trio/_core/_io_epoll.py",
    "module": null, "short_filename": "trio/_core/_io_epoll.py", "line": 243,
    "locals": null, "is_entry": false, "is_shim_entry": false},
   {"name": "<module>", "filename": "/app/main.py", "module": null,
    "short_filename": "main.py", "line": 3, "locals": null,
    "is_entry": true, "is_shim_entry": false}]}
]"""


def test_parse_py_spy_json():
    main, worker = parse_py_spy_json(SPY_JSON)
    # the main thread first, named even when py-spy could not name it
    assert main.name == "MainThread" and main.os_thread_id == 4242
    assert [f.name for f in main.frames] == ["<module>", "get_events", "epoll_wait"]
    assert main.frames[-1].native and not main.frames[0].native
    assert main.frames[1].short == "trio/_core/_io_epoll.py"
    assert worker.name == "worker" and worker.active and worker.owns_gil
    assert worker.frames[0].locals[0].repr == "<Thread>" and worker.frames[-1].locals is None


def test_focus_thread_prefers_a_busy_user_thread():
    main, worker = parse_py_spy_json(SPY_JSON)
    py = PyStack(status="ok", threads=[main, worker])
    assert focus_thread(py) is worker
    capture = Thread(thread_id=3, os_thread_id=5, name="tractor-diag-stacks_0", active=True,
                     owns_gil=False, frames=worker.frames)
    assert focus_thread(PyStack(status="ok", threads=[main, capture])) is main


def test_classify_py_spy_errors():
    me = os.getpid()
    status, reason = classify_py_spy_error(
        me, "Permission Denied: Try running again with elevated permissions by going 'sudo env \"PATH=$PATH\" !!'")
    assert status == "permission" and f"pid {me}" in reason
    status, reason = classify_py_spy_error(me, "Error: Unsupported version of Python: 3.99.0\n")
    assert status == "unsupported" and "unsupported Python 3.99.0" in reason
    status, _ = classify_py_spy_error(me, "Error: Failed to find python version from target process")
    assert status == "not-python"
    status, reason = classify_py_spy_error(999_999_999, "Error: Failed to get process executable name.")
    assert status == "gone"
    status, reason = classify_py_spy_error(me, "Error: something new\n\nStack backtrace:\n 0: x")
    assert status == "failed" and reason == "py-spy failed: something new"


def test_internal_frames():
    assert is_internal("/v/lib/python3.13/site-packages/trio/_core/_run.py")
    assert is_internal("/root/.pyenv/versions/3.11.7/lib/python3.11/threading.py")
    assert is_internal("<frozen runpy>")
    assert not is_internal("/v/lib/python3.11/site-packages/myapp/actor.py")
    assert not is_internal("/home/me/proj/tests/test_hang.py")
    assert short_path("/v/lib/python3.11/site-packages/trio/_sync.py") == "trio/_sync.py"
    assert short_path("/home/me/x.py") == "x.py"


def test_await_point():
    frames = [Frame(name="main", filename="/app/main.py", line=3),
              Frame(name="run", filename="/v/lib/python3.11/site-packages/trio/_core/_run.py", line=1),
              Frame(name="hang", filename="/app/actor.py", line=9),
              Frame(name="Process.wait", filename="/v/site-packages/trio/_subprocess.py", line=2),
              Frame(name="_real_async_yield", filename="/v/site-packages/trio/_core/_traps.py", line=71)]
    user, callee = await_point(frames)
    assert (user.name, callee.name) == ("hang", "Process.wait")
    assert await_text(frames) == "actor.py:9 in hang > Process.wait"
    user, inner = await_point(frames[3:])
    assert user is None and inner.name == "Process.wait"  # trap plumbing skipped
    assert await_point([]) == (None, None)


def _real_dump() -> str:
    """A real taskdump block of a trio run in this shape:

    main: nursery{ stuck_holder: nursery[cancel called]{ stubborn (shielded) },
                   sleeper, dumper (running) }
    """
    out: list[str] = []

    async def stubborn(ready, release):
        with trio.CancelScope(shield=True):
            ready.set()
            await release.wait()

    async def stuck_holder(ready, release):
        async with trio.open_nursery() as n:
            n.start_soon(stubborn, ready, release)
            await ready.wait()
            n.cancel_scope.cancel()

    async def sleeper():
        await trio.sleep_forever()

    async def dumper(ready, release, done):
        await ready.wait()
        await trio.sleep(0.01)
        out.append(taskdump.format_dump("unit test"))
        release.set()
        done.cancel()

    async def main():
        ready, release = trio.Event(), trio.Event()
        async with trio.open_nursery() as n:
            n.start_soon(stuck_holder, ready, release)
            n.start_soon(sleeper)
            n.start_soon(dumper, ready, release, n.cancel_scope)

    trio.run(main)
    (block,) = taskdump.parse_dumps(out[0])
    return block.body


def test_parse_task_lines_of_a_real_dump():
    tasks = parse_task_lines(_real_dump())
    by_name = {t.name.rsplit(".", 1)[-1]: t for t in tasks}
    assert tasks[0].depth == 0 and tasks[0].has_children  # trio's <init>
    for name in ("stuck_holder", "sleeper", "dumper", "stubborn"):
        assert name in by_name, sorted(by_name)
    assert by_name["dumper"].state == "running"
    assert by_name["sleeper"].state == "waiting" and not by_name["sleeper"].cancelling
    assert by_name["stubborn"].cancelling and "cancel called" in by_name["stuck_holder"].scope_flags
    assert by_name["stubborn"].depth == by_name["stuck_holder"].depth + 1
    assert by_name["sleeper"].frames[-1].name.endswith("_real_async_yield") or \
        by_name["sleeper"].frames[-1].name == "sleep_forever"
    assert any(f.name.endswith("sleeper") for f in by_name["sleeper"].frames)
    # the thread section after the tree is not mistaken for tasks
    assert all(not t.name.startswith("thread") for t in tasks)

    task, n = trio_focus(TaskTree(status="collected", tasks=tasks, format="tractor-diag"))
    assert task is by_name["dumper"] and n == len(tasks)


def _proc(pid, ppid, *, state="idle", bucket="live", tasks=None, actor=None):
    return ProcStacks(
        pid=pid, ppid=ppid, title=f"p{pid}", actor=actor, bucket=bucket, state=state,
        depth=0, kernel=KernelSide(state="S", wchan="do_epoll_wait"),
        python=PyStack(status="ok"),
        tasks=tasks or TaskTree(status="no-handler"),
    )


def test_render_says_why_pieces_are_missing():
    p = _proc(9, 1, actor="leaf")
    p.python = PyStack(status="timeout", reason="py-spy did not answer within 5.0s (killed)")
    p.kernel = KernelSide(state="S", wchan=None, stack_reason="not readable: needs root")
    text = render_proc(p, whereabouts(p), Style(False))
    assert "\x1b[" not in text
    assert "python: timeout: py-spy did not answer within 5.0s (killed)" in text
    assert "kernel: (not readable: needs root)" in text
    assert "trio tasks: no-handler" in text


def test_run_bounded():
    ran = run_bounded([sys.executable, "-c", "print('hi')"], 10)
    assert ran.returncode == 0 and ran.stdout == b"hi\n"
    start = time.monotonic()
    ran = run_bounded(["sh", "-c", "sleep 30 & wait"], 0.3)
    assert ran.returncode is None and time.monotonic() - start < 2


def test_collect_waits_for_the_end_line(tmp_path):
    path = tmp_path / "dump.log"
    path.write_text("old text\n")
    block = taskdump.format_dump("test").replace(f"pid={os.getpid()}", "pid=4242")
    head, tail = block[: len(block) // 2], block[len(block) // 2:]
    pending = Pending(pid=4242, path=str(path), offset=path.stat().st_size,
                      sent_at=time.monotonic())

    def writer():
        with open(path, "a") as f:
            f.write(head)
            f.flush()
            time.sleep(0.4)  # longer than the quiet period: must not cut here
            f.write(tail)

    t = threading.Thread(target=writer)
    t.start()
    got = collect([pending], until=time.monotonic() + 5)[4242]
    t.join()
    assert got.status == "collected" and got.complete and got.format == "tractor-diag"
    assert "old text" not in got.text and got.text.startswith("reason: test")


def test_collect_times_out_and_rereads_a_replaced_file(tmp_path):
    path = tmp_path / "dump.log"
    path.write_text("x" * 100)
    silent = Pending(pid=os.getpid(), path=str(path), offset=100, sent_at=time.monotonic())
    got = collect([silent], until=time.monotonic() + 0.2)[os.getpid()]
    assert got.status == "timeout" and "nothing appended" in got.reason
    # replaced by a shorter file after we noted the offset: read from the start
    path.write_text("fresh tree\n")
    got = collect([Pending(pid=os.getpid(), path=str(path), offset=100,
                           sent_at=time.monotonic())], until=time.monotonic() + 2)[os.getpid()]
    assert got.status == "collected" and got.text == "fresh tree" and got.format == "undelimited"
