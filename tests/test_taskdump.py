"""tractor_diag.taskdump: SIGUSR1 trio task-tree dumps, on real processes.

The integration tests start ``tests/taskdump_progs/nested_tree.py`` with the
current interpreter, signal it like the out-of-process collector does
(check ``SigCgt``, note the dump file's size, send SIGUSR1, read what gets
appended) and check the dump against the program's own source lines.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tractor_diag import taskdump

HERE = Path(__file__).resolve().parent
PROG = HERE / "taskdump_progs" / "nested_tree.py"
REPO = HERE.parent

#: (task name, tag of the line it is blocked on, function holding that line)
BLOCKED_AT = [
    ("__main__.main", "main", "main"),
    ("supervisor", "supervisor", "supervisor"),
    ("sleeper", "sleep_forever", "sleeper"),
    ("event_waiter", "event_wait", "event_waiter"),
    ("agen_consumer", "agen_for", "agen_consumer"),
    ("agen_consumer", "agen_sleep", "ticks"),
    ("lock_holder", "lock_holder", "lock_holder"),
    ("lock_waiter", "lock_waiter", "lock_waiter"),
    ("channel_reader", "channel_reader", "channel_reader"),
    ("starter", "starter", "starter"),
    ("never_started", "never_started", "never_started"),
    ("worker_pool", "worker_pool", "worker_pool"),
    ("proc_supervisor", "proc_supervisor", "proc_supervisor"),
    ("subproc_waiter", "run_process", "subproc_waiter"),
    ("service", "service", "service"),
]

#: child task -> the task whose nursery holds it
PARENT_OF = {
    "__main__.main": "<init>",
    "supervisor": "__main__.main",
    "sleeper": "supervisor",
    "event_waiter": "supervisor",
    "agen_consumer": "supervisor",
    "lock_holder": "supervisor",
    "lock_waiter": "supervisor",
    "channel_reader": "supervisor",
    "starter": "supervisor",
    "worker_pool": "supervisor",
    "never_started": "starter",  # inside starter's nursery.start()
    "proc_supervisor": "worker_pool",
    "service": "worker_pool",
    "subproc_waiter": "proc_supervisor",
}
USER_TASKS = sorted(PARENT_OF)


def line_of(tag: str) -> int:
    """Line number of the ``# LINE:<tag>`` comment in the test program."""
    for number, text in enumerate(PROG.read_text().splitlines(), 1):
        if text.rstrip().endswith(f"# LINE:{tag}"):
            return number
    raise LookupError(tag)


def frame_ref(tag: str, func: str) -> str:
    return f"{PROG}:{line_of(tag)} in {func}"


# ---------------------------------------------------------------------------
# parsing the tree text (the layout taskdump documents: 2 spaces per level)
# ---------------------------------------------------------------------------

TASK_LINE = re.compile(r"^(?P<pad> *)task '(?P<name>[^']*)' \[(?P<tags>[^\]]*)\]")


class Task:
    def __init__(self, name: str, depth: int, tags: str, line: str):
        self.name, self.depth, self.tags, self.line = name, depth, tags, line
        self.frames: list[str] = []
        self.parent: Task | None = None
        self.nursery_depth = 0  # nurseries between this task and the root


def parse_tree(body: str) -> dict[str, Task]:
    tasks: dict[str, Task] = {}
    stack: list[Task] = []
    current: Task | None = None
    for line in body.splitlines():
        m = TASK_LINE.match(line)
        if m:
            depth = len(m["pad"])
            task = Task(m["name"], depth, m["tags"], line)
            while stack and stack[-1].depth >= depth:
                stack.pop()
            if stack:
                task.parent = stack[-1]
                task.nursery_depth = stack[-1].nursery_depth + 1
                assert depth == stack[-1].depth + 4, line
            assert task.name not in tasks, f"task shown twice: {line}"
            tasks[task.name] = task
            stack.append(task)
            current = task
        elif current is not None and line.startswith(" " * (current.depth + 2) + "at "):
            current.frames.append(line.strip()[3:])
        elif line.strip().startswith("nursery "):
            current = None
    return tasks


# ---------------------------------------------------------------------------
# a real program under test
# ---------------------------------------------------------------------------


class Prog:
    """``nested_tree.py MODE`` in its own session, with line-wise stdout."""

    def __init__(self, mode: str, *args: str, python: str = sys.executable):
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        env["PYTHONUNBUFFERED"] = "1"
        self.proc = subprocess.Popen(
            [python, str(PROG), mode, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,  # its own process group: teardown gets `sleep 600` too
        )
        self.pid = self.proc.pid
        self.dump_path = Path(taskdump.default_dump_path(self.pid))
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.stderr_chunks: list[str] = []
        threading.Thread(target=self._pump_stdout, daemon=True).start()
        threading.Thread(target=self._pump_stderr, daemon=True).start()

    def _pump_stdout(self) -> None:
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def _pump_stderr(self) -> None:
        for line in self.proc.stderr:
            self.stderr_chunks.append(line)

    def expect(self, wanted: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {wanted!r} on stdout within {timeout}s; stderr:\n{self.stderr}")
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"program exited before {wanted!r}; stderr:\n{self.stderr}")
            if line == wanted:
                return

    @property
    def stderr(self) -> str:
        return "".join(self.stderr_chunks)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_asleep(self, timeout: float = 10.0) -> None:
        """Until the main thread sleeps in the kernel (state S) for a while.

        After a sync program prints its marker line it still has to get into
        the blocking call the test wants to see in the stack.
        """
        deadline = time.monotonic() + timeout
        streak = 0
        while streak < 5:
            assert time.monotonic() < deadline, "main thread never went to sleep"
            stat = Path(f"/proc/{self.pid}/stat").read_text()
            streak = streak + 1 if stat.rsplit(")", 1)[1].split()[0] == "S" else 0
            time.sleep(0.02)

    def catches(self, signum: int) -> bool:
        """Bit ``signum - 1`` of SigCgt: never signal a process without a handler."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        sigcgt = int(re.search(r"^SigCgt:\s*([0-9a-f]+)$", status, re.M)[1], 16)
        return bool(sigcgt >> (signum - 1) & 1)

    def children(self) -> list[str]:
        out = []
        for task_dir in Path(f"/proc/{self.pid}/task").iterdir():
            for child in (task_dir / "children").read_text().split():
                out.append(Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip())
        return out

    def request_dump(self, path: Path | None = None, timeout: float = 10.0) -> taskdump.DumpBlock:
        """What the collector does: offset, SIGUSR1, read the appended block."""
        path = path or self.dump_path
        assert self.catches(signal.SIGUSR1), "SIGUSR1 handler not installed"
        offset = path.stat().st_size if path.exists() else 0
        os.kill(self.pid, signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if path.exists():
                with open(path, "rb") as f:
                    f.seek(offset)
                    blocks = taskdump.parse_dumps(f.read().decode())
                if blocks and blocks[0].complete:
                    assert len(blocks) == 1, "one signal, one dump"
                    return blocks[0]
            time.sleep(0.02)
        raise AssertionError(f"no complete dump appended to {path} within {timeout}s; stderr:\n{self.stderr}")

    def close(self) -> None:
        """SIGINT the process group, bounded grace, then SIGKILL it."""
        for signum, grace in ((signal.SIGINT, 3.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.pid, signum)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                continue
            if signum == signal.SIGINT:
                # the leader is gone; make sure nothing else of its group is left
                try:
                    os.killpg(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            break
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                stream.close()
            except Exception:
                pass
        self.dump_path.unlink(missing_ok=True)


@pytest.fixture
def start_prog():
    progs: list[Prog] = []

    def start(mode: str, *args: str, python: str = sys.executable) -> Prog:
        prog = Prog(mode, *args, python=python)
        progs.append(prog)
        return prog

    yield start
    for prog in progs:
        prog.close()


def assert_full_tree(block: taskdump.DumpBlock) -> dict[str, Task]:
    body = block.body
    assert "trio run: active on thread 'MainThread'" in body
    tasks = parse_tree(body)
    missing = [name for name in USER_TASKS if name not in tasks]
    assert not missing, f"tasks missing from the dump: {missing}\n{body}"
    assert "<init>" in tasks and "root" in tasks["<init>"].tags
    for child, parent in PARENT_OF.items():
        assert tasks[child].parent is not None and tasks[child].parent.name == parent, tasks[child].line
    for name, tag, func in BLOCKED_AT:
        assert frame_ref(tag, func) in "\n".join(tasks[name].frames), (
            f"{name}: expected frame {frame_ref(tag, func)}; got:\n" + "\n".join(tasks[name].frames)
        )
    # the blocking primitives themselves are visible below the user frames
    assert any("trio/_timeouts.py" in f and "sleep_forever" in f for f in tasks["sleeper"].frames)
    assert any("trio/_sync.py" in f and "Event.wait" in f for f in tasks["event_waiter"].frames)
    assert any("trio/_subprocess.py" in f for f in tasks["subproc_waiter"].frames)
    assert "inside nursery.start()" in tasks["never_started"].line
    # <init> -> main -> supervisor -> worker_pool -> proc_supervisor -> subproc_waiter
    assert tasks["subproc_waiter"].nursery_depth == 5
    return tasks


# ---------------------------------------------------------------------------
# integration: real processes, real signals
# ---------------------------------------------------------------------------


def test_sigusr1_dumps_full_tree_and_process_survives(start_prog):
    prog = start_prog("tree")
    prog.expect("READY")
    assert any(c.startswith("sleep 600") for c in prog.children()), prog.children()

    first = prog.request_dump()
    assert first.pid == prog.pid and first.seq == 1
    assert_full_tree(first)
    assert "reason: signal SIGUSR1" in first.body
    assert f"process: pid={prog.pid} " in first.body
    time.sleep(0.2)
    assert prog.alive()
    assert any(c.startswith("sleep 600") for c in prog.children())

    before = prog.dump_path.read_text()
    second = prog.request_dump()
    assert second.seq == 2 and second.dump_id != first.dump_id
    assert_full_tree(second)
    after = prog.dump_path.read_text()
    assert after.startswith(before), "the first dump must be left intact"
    blocks = taskdump.parse_dumps(after)
    assert [(b.seq, b.complete) for b in blocks] == [(1, True), (2, True)]
    assert after.count("===== tractor-diag taskdump BEGIN ") == 2
    assert after.count("===== tractor-diag taskdump END ") == 2
    assert prog.alive()


def test_signal_before_trio_run_then_during(start_prog):
    prog = start_prog("prerun")
    prog.expect("PRERUN")
    prog.wait_asleep()
    block = prog.request_dump()
    assert "no trio run active" in block.body
    assert "Python stack of thread 'MainThread'" in block.body
    assert frame_ref("prerun_stdin", "cli") in block.body
    time.sleep(0.2)
    assert prog.alive()

    # the same handler keeps working once trio.run starts
    prog.proc.stdin.write("go\n")
    prog.proc.stdin.flush()
    prog.expect("READY")
    assert_full_tree(prog.request_dump())
    assert prog.alive()


def test_signal_after_trio_run(start_prog):
    prog = start_prog("postrun")
    prog.expect("POSTRUN")
    prog.wait_asleep()
    block = prog.request_dump()
    assert "no trio run active" in block.body
    assert frame_ref("postrun_stdin", "wait_stdin_forever") in block.body
    time.sleep(0.2)
    assert prog.alive()


@pytest.mark.parametrize(
    "mode, tag, func",
    [("busy-sleep", "busy_sleep", "hog_sleep"), ("busy-spin", "busy_spin", "hog_spin")],
)
def test_signal_while_a_task_hogs_the_loop(start_prog, mode, tag, func):
    prog = start_prog(mode)
    prog.expect("READY")
    prog.expect("HOGGING")
    if mode == "busy-sleep":
        prog.wait_asleep()
    else:
        time.sleep(0.3)  # spinning starts right after the print
    block = prog.request_dump()
    tasks = parse_tree(block.body)
    hog = tasks["hog"]
    assert "running" in hog.tags, hog.line
    # the hog's live synchronous stack, down to the line it is stuck on
    assert frame_ref(tag, func) in hog.frames[-1], hog.frames
    assert any("in hog |" in f for f in hog.frames)
    assert f"interrupted at: {frame_ref(tag, func)}" in block.body
    for name in ("sleeper", "event_waiter", "subproc_waiter"):
        assert "waiting" in tasks[name].tags
    time.sleep(0.2)
    assert prog.alive()
    assert prog.request_dump().seq == 2


def test_trio_in_a_non_main_thread_is_documented_not_dumped(start_prog):
    # Signals run on the main thread; a trio run on another thread cannot be
    # walked from there. The dump says so and shows every thread's stack.
    prog = start_prog("thread")
    prog.expect("READY")
    prog.wait_asleep()
    block = prog.request_dump()
    assert "no trio run active" in block.body
    assert frame_ref("thread_join", "run_in_thread") in block.body
    assert "thread 'trio-thread'" in block.body
    trio_thread = block.body.split("thread 'trio-thread'", 1)[1]
    assert "trio/_core/_run.py" in trio_thread
    assert prog.alive()


def released_python() -> Path:
    venv = Path(os.environ.get("TRACTOR_DIAG_TRACTOR_VENV", REPO / ".venv-tractor"))
    return venv / "bin" / "python"


@pytest.mark.released
@pytest.mark.skipif(not released_python().exists(), reason="no released-tractor venv (./dev test creates it)")
def test_full_tree_on_the_released_runtimes_old_trio(start_prog):
    """tractor 0.1.0a5 runs on trio 0.21, which has no Task.iter_await_frames()."""
    prog = start_prog("tree", python=str(released_python()))
    prog.expect("READY")
    block = prog.request_dump()
    assert "trio=0.21." in block.body
    assert_full_tree(block)
    assert prog.alive()


def test_custom_path_and_stderr(start_prog, tmp_path):
    target = tmp_path / "dump-{pid}.log"
    prog = start_prog("tree", "--path", str(target), "--stderr")
    prog.expect("READY")
    path = tmp_path / f"dump-{prog.pid}.log"
    block = prog.request_dump(path)
    assert_full_tree(block)
    # custom path given: the default file only announces where dumps go
    announce = prog.dump_path.read_text()
    assert taskdump.ARMED_RE.match(announce.splitlines()[0])["dumps"] == str(target)
    assert not taskdump.parse_dumps(announce)
    deadline = time.monotonic() + 5
    while block.dump_id not in prog.stderr and time.monotonic() < deadline:
        time.sleep(0.02)
    stderr_blocks = taskdump.parse_dumps(prog.stderr)
    assert [b.dump_id for b in stderr_blocks] == [block.dump_id]
    assert stderr_blocks[0].body == block.body


# ---------------------------------------------------------------------------
# in-process: API behaviour, formatting, failure handling
# ---------------------------------------------------------------------------


@pytest.fixture
def armed(tmp_path):
    """arm() into a tmp file; always disarmed afterwards."""
    disarms = []
    path = tmp_path / "dump.log"

    def arm(**kwargs):
        kwargs.setdefault("path", path)
        disarm = taskdump.arm(**kwargs)
        disarms.append(disarm)
        return Path(kwargs["path"])

    yield arm
    for disarm in reversed(disarms):
        disarm()


def test_import_does_not_import_trio_or_stackscope():
    code = (
        "import sys, tractor_diag\n"
        "before = set(sys.modules)\n"
        "import tractor_diag.taskdump\n"
        "new = sorted(set(sys.modules) - before)\n"
        "heavy = [m for m in new if m.split('.')[0] in ('trio', 'stackscope', 'outcome', 'sniffio')]\n"
        "assert not heavy, heavy\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_arm_and_disarm_restore_previous_handler(armed):
    seen = []

    def previous(signum, frame):
        seen.append(signum)

    old = signal.signal(signal.SIGUSR1, previous)
    try:
        disarm = taskdump.arm(path=os.devnull)
        assert signal.getsignal(signal.SIGUSR1) is not previous
        disarm()
        disarm()  # idempotent
        assert signal.getsignal(signal.SIGUSR1) is previous
        signal.raise_signal(signal.SIGUSR1)
        assert seen == [signal.SIGUSR1]
    finally:
        signal.signal(signal.SIGUSR1, old)


def test_arm_off_the_main_thread_raises():
    errors = []

    def run():
        try:
            taskdump.arm(path=os.devnull)
        except RuntimeError as exc:
            errors.append(exc)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert errors and "main thread" in str(errors[0])


def test_outside_trio_in_process(armed):
    path = armed()
    signal.raise_signal(signal.SIGUSR1)
    (block,) = taskdump.parse_dumps(path.read_text())
    assert block.complete and block.pid == os.getpid()
    assert "no trio run active" in block.body
    assert "test_outside_trio_in_process" in block.body


@pytest.mark.timeout(30)
def test_format_task_tree_and_signal_inside_trio(armed):
    trio = pytest.importorskip("trio")
    path = armed()
    out = {}

    async def child():
        await trio.sleep_forever()

    async def main():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(child, name="the-child")
            await trio.testing.wait_all_tasks_blocked()
            out["tree"] = taskdump.format_task_tree()  # tree-call
            signal.raise_signal(signal.SIGUSR1)  # signal-call
            nursery.cancel_scope.cancel()

    import trio.testing

    trio.run(main)
    src = Path(__file__).read_text().splitlines()
    tree_line = next(i for i, t in enumerate(src, 1) if t.rstrip().endswith("# tree-call"))
    signal_line = next(i for i, t in enumerate(src, 1) if t.rstrip().endswith("# signal-call"))

    tasks = parse_tree(out["tree"])
    me = next(t for t in tasks.values() if t.name.endswith("main"))
    assert "running" in me.tags
    assert me.frames[-1].startswith(f"{__file__}:{tree_line} in ")
    assert tasks["the-child"].parent is me
    assert "waiting" in tasks["the-child"].tags

    (block,) = taskdump.parse_dumps(path.read_text())
    tasks = parse_tree(block.body)
    me = next(t for t in tasks.values() if t.name.endswith("main"))
    assert me.frames[-1].startswith(f"{__file__}:{signal_line} in ")
    assert "the-child" in tasks

    with pytest.raises(RuntimeError):
        taskdump.format_task_tree()


@pytest.mark.timeout(30)
def test_cancel_state_and_unstarted_tasks_are_shown():
    """What a stuck cancel cascade looks like: cancel called, a shielded child still there."""
    trio = pytest.importorskip("trio")
    import trio.testing

    out = {}
    release = None

    async def stubborn():
        with trio.CancelScope(shield=True):
            await release.wait()

    async def cascade(task_status=trio.TASK_STATUS_IGNORED):
        async with trio.open_nursery() as inner:
            inner.start_soon(stubborn, name="stubborn")
            task_status.started(inner)

    async def main():
        nonlocal release
        release = trio.Event()
        async with trio.open_nursery() as outer:
            outer.cancel_scope.deadline = trio.current_time() + 100
            inner = await outer.start(cascade, name="cascade")
            await trio.testing.wait_all_tasks_blocked()
            inner.cancel_scope.cancel()
            await trio.testing.wait_all_tasks_blocked()
            inner.start_soon(trio.sleep_forever, name="fresh")  # has not run yet
            out["tree"] = taskdump.format_task_tree()
            outer.cancel_scope.shield = True
            out["shielded"] = taskdump.format_task_tree()
            outer.cancel_scope.shield = False
            outer.cancel_scope.cancel()
            out["after"] = taskdump.format_task_tree()
            release.set()

    trio.run(main)
    tree = out["tree"]
    assert re.search(r"nursery 1/1 of '[^']*main' \(1 task\) \[deadline in \d+\.\d{3}s\]", tree), tree
    assert "nursery 1/1 of 'cascade' (2 tasks) [cancel called]" in tree, tree
    tasks = parse_tree(tree)
    assert tasks["stubborn"].parent is tasks["cascade"]
    assert "not started" in tasks["fresh"].tags
    assert "waiting" in tasks["stubborn"].tags
    assert any(".stubborn | await release.wait()" in f for f in tasks["stubborn"].frames), tasks["stubborn"].frames
    assert re.search(r"nursery 1/1 of '[^']*main' \(1 task\) \[shielded, deadline in", out["shielded"])
    assert re.search(r"nursery 1/1 of '[^']*main' \(1 task\) \[cancel called, deadline in", out["after"])


@pytest.mark.timeout(30)
def test_task_names_are_always_single_quoted_one_line():
    trio = pytest.importorskip("trio")
    import trio.testing

    out = {}

    async def main():
        async with trio.open_nursery() as nursery:
            for name in ("it's", 'say "hi"', "two\nlines"):
                nursery.start_soon(trio.sleep_forever, name=name)
            await trio.testing.wait_all_tasks_blocked()
            out["tree"] = taskdump.format_task_tree()
            nursery.cancel_scope.cancel()

    trio.run(main)
    tree = out["tree"]
    assert "task 'it\\'s' [waiting]" in tree
    assert "task 'say \"hi\"' [waiting]" in tree
    assert "task 'two\\nlines' [waiting]" in tree
    assert all(not ln.startswith("lines") for ln in tree.splitlines())


@pytest.mark.timeout(30)
def test_errors_in_the_handler_are_written_not_raised(armed, monkeypatch):
    trio = pytest.importorskip("trio")
    path = armed()

    def broken(self, root):
        raise ZeroDivisionError("walk exploded")

    monkeypatch.setattr(taskdump._TreeWalker, "walk", broken)

    async def main():
        signal.raise_signal(signal.SIGUSR1)
        await trio.sleep(0)

    trio.run(main)
    (block,) = taskdump.parse_dumps(path.read_text())
    assert block.complete
    assert "!!! taskdump error" in block.body
    assert "ZeroDivisionError: walk exploded" in block.body
    assert "other threads:" in block.body  # later sections still written


def test_unwritable_path_falls_back_to_stderr(armed, tmp_path, capfd):
    armed(path=tmp_path / "no-such-dir" / "dump.log")
    signal.raise_signal(signal.SIGUSR1)
    err = capfd.readouterr().err
    assert "cannot append to" in err
    assert len(taskdump.parse_dumps(err)) == 1


def test_signal_during_a_dump_is_queued_not_interleaved(armed, monkeypatch):
    path = armed()
    original = taskdump._header_section
    fired = []

    def header_that_gets_interrupted(reason, frame):
        if not fired:
            fired.append(True)
            signal.raise_signal(signal.SIGUSR1)  # arrives mid-dump
        return original(reason, frame)

    monkeypatch.setattr(taskdump, "_header_section", header_that_gets_interrupted)
    signal.raise_signal(signal.SIGUSR1)
    text = path.read_text()
    blocks = taskdump.parse_dumps(text)
    assert [(b.seq > 0, b.complete) for b in blocks] == [(True, True), (True, True)]
    assert "arrived during the previous dump" in blocks[1].body
    # strictly sequential: BEGIN, END, BEGIN, END
    marks = re.findall(r"^===== tractor-diag taskdump (BEGIN|END) ", text, re.M)
    assert marks == ["BEGIN", "END", "BEGIN", "END"]


def test_write_dump_and_format_dump(tmp_path):
    path = tmp_path / "d.log"
    text = taskdump.write_dump(path, reason="unit test")
    assert path.read_text() == text
    (block,) = taskdump.parse_dumps(text)
    assert "reason: unit test" in block.body
    assert "interrupted at: " + __file__ in block.body
    assert taskdump.BEGIN_RE.search(taskdump.format_dump())


def test_parse_dumps_ignores_foreign_text_and_flags_incomplete():
    a = "a" * 32
    b = "b" * 32
    text = (
        "stackscope output from tractor's own handler\n"
        f"===== tractor-diag taskdump BEGIN pid=7 seq=1 id={a} time=2026-01-01T00:00:00.000000Z =====\n"
        "body one\n"
        f"===== tractor-diag taskdump END pid=7 seq=1 id={a} =====\n"
        "more foreign text\n"
        f"===== tractor-diag taskdump BEGIN pid=7 seq=2 id={b} time=2026-01-01T00:00:01.000000Z =====\n"
        "partial\n"
    )
    first, second = taskdump.parse_dumps(text)
    assert first == taskdump.DumpBlock(7, 1, a, "2026-01-01T00:00:00.000000Z", "body one", True)
    assert second.seq == 2 and not second.complete and second.body == "partial"


def test_default_dump_path():
    ns = os.stat("/proc/self/ns/pid").st_ino
    assert taskdump.default_dump_path(42) == f"/tmp/tractor-diag-taskdump-{ns}-42.log"
    assert taskdump.default_dump_path(42, 7) == "/tmp/tractor-diag-taskdump-7-42.log"
    assert taskdump.default_dump_path() == f"/tmp/tractor-diag-taskdump-{ns}-{os.getpid()}.log"


def test_the_actor_line_names_the_actor_and_only_from_the_header():
    from tractor_diag.tasks import dump_actor

    head = "reason: signal SIGUSR1\nprocess: pid=5 ppid=1 python=3.13.0 trio=0.35.0\n"
    tree = "trio run: active on thread 'MainThread' tasks=1 nurseries=0\n"
    assert dump_actor(head + "actor: name='leaf_0_0' uuid='u1'\n" + tree) == "leaf_0_0"
    assert dump_actor(head + "actor: name=\"it's\\n\" uuid='u1'\n" + tree) == "it's\n"
    assert dump_actor(head + tree) is None  # not a tractor actor
    # text a task printed further down is not the header's
    assert dump_actor(head + tree + "actor: name='forged' uuid='x'\n") is None
    assert dump_actor(head + "actor: name=__import__('os') uuid='x'\n" + tree) is None
