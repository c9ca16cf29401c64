"""Launch and supervise the program under inspection, in trio.

The dashboard's launch mode (``tractor-diag dash -- CMD ARGS...``) starts the
command itself so that it can watch the tree from its first process and
clean it up afterwards:

- stdin is ``/dev/null`` and the child starts in a session of its own: it
  can never read from, or take signals meant for, the dashboard's terminal;
- stdout and stderr are pipes drained concurrently as bytes arrive and
  relayed line by line. A line longer than ``max_line`` is relayed in pieces,
  so a child writing megabytes without a newline never fills the pipe (which
  would block it) and never grows an unbounded buffer here;
- the exit code is reported as soon as ``wait()`` returns, and so is the exit
  code of every orphan of the tree the dashboard adopts as a subreaper;
- stopping sends SIGINT to the whole tree (its process group, every
  descendant and every adopted orphan, which is what Ctrl-C at a terminal
  would reach), waits a bounded grace, then SIGKILLs whatever is left.

Why a subreaper: when a mid-level actor dies, its children re-parent to the
nearest subreaper, otherwise to init, and vanish from a tree walk that starts
at the launched root. With ``PR_SET_CHILD_SUBREAPER`` set on the dashboard
they re-parent to *us* instead: still visible (the sampler classifies them as
orphans when our pid is in its ``subreapers``), still killable on quit, and
reaped by us when they exit (a subreaper that never waits would collect
zombies).
"""
from __future__ import annotations

import codecs
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable

from . import procfs
from .trees import children_map, descendants

PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37

# Output relayed as (stream name, lines); lines carry no trailing newline.
OnOutput = Callable[[str, list[str]], None]
OnExit = Callable[[int, int], None]  # (pid, exit code; -N for signal N)


def set_child_subreaper(on: bool = True) -> bool:
    """Make this process adopt orphaned descendants (Linux); True if set."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def is_child_subreaper() -> bool:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        flag = ctypes.c_int(0)
        if libc.prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(flag), 0, 0, 0) != 0:
            return False
        return bool(flag.value)
    except (OSError, AttributeError):
        return False


class LineSplitter:
    """Turns a byte stream into lines, never holding more than ``max_line``.

    Decoding is incremental (a UTF-8 character split across two reads stays
    whole); a line that grows past ``max_line`` characters is emitted in
    pieces as it arrives, the last piece when its newline comes.
    """

    def __init__(self, max_line: int = 4096):
        self.max_line = max_line
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._partial = ""

    def feed(self, data: bytes) -> list[str]:
        text = self._partial + self._decoder.decode(data)
        lines = text.split("\n")
        self._partial = lines.pop()
        out: list[str] = []
        for line in lines:
            out.extend(self._pieces(line.rstrip("\r")))
        while len(self._partial) >= self.max_line:
            out.append(self._partial[: self.max_line])
            self._partial = self._partial[self.max_line:]
        return out

    def flush(self) -> list[str]:
        rest = self._partial + self._decoder.decode(b"", final=True)
        self._partial = ""
        return self._pieces(rest) if rest else []

    def _pieces(self, line: str) -> list[str]:
        if len(line) <= self.max_line:
            return [line]
        return [line[i:i + self.max_line] for i in range(0, len(line), self.max_line)]


def _our_children() -> list[int]:
    """Children of this process, from ``/proc/self/task/*/children``."""
    kids: list[int] = []
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return kids
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/children", "rb") as f:
                kids.extend(int(p) for p in f.read().split())
        except (OSError, ValueError):
            continue
    return kids


def _stat_fields(pid: int) -> tuple[str, int, int] | None:
    """-> (state letter, parent pid, process group) of ``pid``, or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2:].split()
    try:
        return fields[0].decode(), int(fields[1]), int(fields[2])
    except (IndexError, ValueError):
        return None


class Supervisor:
    """One launched command and everything it spawns.

    Usage, inside trio::

        sup = Supervisor(["python", "app.py"], on_output=..., on_exit=...)
        pid = await nursery.start(sup.run)
        ...
        nursery.cancel_scope.cancel()   # run() then stops the whole tree

    ``run`` returns (or is cancelled) only after the tree is gone: its
    cleanup is shielded and bounded by ``grace`` + a short SIGKILL wait.
    """

    def __init__(
        self,
        argv: list[str],
        *,
        on_output: OnOutput | None = None,
        on_exit: OnExit | None = None,
        grace: float = 3.0,
        max_line: int = 4096,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        arm_taskdump: bool = True,
    ):
        if not argv:
            raise ValueError("nothing to launch")
        self.argv = list(argv)
        self.on_output = on_output
        self.on_exit = on_exit
        self.grace = grace
        self.max_line = max_line
        if arm_taskdump:
            # Every Python process of the launched tree arms the task dumper
            # at start-up (an env var and a start-up hook; no code change).
            from .taskdump import startup_env

            env = startup_env(env)
        self.env = env
        self.cwd = cwd
        self.pid: int | None = None
        self.pgid: int | None = None
        self.returncode: int | None = None
        self.started_at: float | None = None
        # Exit codes of the launched child and of adopted orphans we reaped.
        self.exit_codes: dict[int, int] = {}
        # Everything ever seen inside the launched tree, (pid, create time):
        # lets us recognise an adopted orphan after its parent is gone even
        # if it left the process group.
        self._members: dict[int, float] = {}
        self._stopping = False
        self.killed: set[int] = set()  # pids that needed SIGKILL on stop
        self._drain_scopes: list = []
        self._open_drains = 0

    # -- running ------------------------------------------------------------

    async def run(self, *, task_status=None) -> int | None:
        import trio

        if task_status is None:
            task_status = trio.TASK_STATUS_IGNORED
        proc = await trio.lowlevel.open_process(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            env=self.env,
            cwd=self.cwd,
        )
        self.pid = proc.pid
        self.pgid = proc.pid  # a new session leads its own process group
        self.started_at = time.time()
        self._members[proc.pid] = 0.0
        # The drains outlive a cancellation of run(): while the tree is
        # being stopped it keeps writing (last words, tracebacks), and a
        # closed pipe would kill it with EPIPE instead of our signals.
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._drain, proc.stdout, "stdout")
                nursery.start_soon(self._drain, proc.stderr, "stderr")
                nursery.start_soon(self._reap_adopted_loop)
                task_status.started(proc.pid)
                try:
                    self._exited(proc.pid, await proc.wait())
                    # The pipes stay open while descendants hold them: keep
                    # relaying their output until we are cancelled.
                    await trio.sleep_forever()
                finally:
                    with trio.CancelScope(shield=True):
                        await self.stop()
                        if self.returncode is None:
                            with trio.move_on_after(1.0):
                                self._exited(proc.pid, await proc.wait())
                        # Whatever still holds the pipes now escaped us:
                        # give the drains a moment to read what was written.
                        with trio.move_on_after(0.5):
                            while self._open_drains:
                                await trio.sleep(0.02)
                        for cs in self._drain_scopes:
                            cs.cancel()
        finally:
            with trio.CancelScope(shield=True):
                if self.returncode is None and proc.returncode is None:
                    proc.kill()
                    with trio.move_on_after(1.0):
                        self._exited(proc.pid, await proc.wait())
        return self.returncode

    def _exited(self, pid: int, code: int) -> None:
        if pid in self.exit_codes:
            return
        self.exit_codes[pid] = code
        if pid == self.pid:
            self.returncode = code
        if self.on_exit is not None:
            self.on_exit(pid, code)

    async def _drain(self, stream, name: str) -> None:
        import trio

        splitter = LineSplitter(self.max_line)
        self._open_drains += 1
        try:
            with trio.CancelScope(shield=True) as scope:
                self._drain_scopes.append(scope)
                while True:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        break
                    lines = splitter.feed(chunk)
                    if lines and self.on_output is not None:
                        self.on_output(name, lines)
        except (trio.ClosedResourceError, trio.BrokenResourceError, OSError):
            pass
        finally:
            self._open_drains -= 1
            rest = splitter.flush()
            if rest and self.on_output is not None:
                self.on_output(name, rest)
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async def _reap_adopted_loop(self) -> None:
        import trio

        while True:
            await trio.sleep(0.5)
            await trio.to_thread.run_sync(self.reap_adopted)

    # -- the tree -------------------------------------------------------------

    def note_members(self, pids: Iterable[tuple[int, float]]) -> None:
        """Remember processes seen inside the launched tree (from the
        sampler's snapshots), so they are still ours once orphaned."""
        for pid, ctime in pids:
            self._members.setdefault(pid, ctime)

    @property
    def seen_pids(self) -> set[int]:
        """Every pid ever seen in the launched tree (for after-the-fact
        clean-up of what they left behind, e.g. socket files)."""
        return set(self._members)

    def _is_member(self, pid: int, pgid: int | None, ctime: float | None) -> bool:
        if pgid is not None and pgid == self.pgid:
            return True
        known = self._members.get(pid)
        if known is None:
            return False
        # A pid seen before with another start time was reused: not ours.
        return known == 0.0 or ctime is None or abs(known - ctime) < 0.05

    def reap_adopted(self) -> list[tuple[int, int]]:
        """Wait for orphans of the tree that were re-parented to us and have
        exited; -> [(pid, exit code)]. Never touches the launched child
        (trio waits on it) nor any other child of ours."""
        reaped: list[tuple[int, int]] = []
        me = os.getpid()
        # Our children as the kernel lists them per thread, plus every
        # member we know of: an adopted orphan hangs off one of our threads,
        # and may move to another as threads come and go mid-read.
        for pid in set(_our_children()) | set(self._members):
            if pid == self.pid:
                continue
            fields = _stat_fields(pid)
            if fields is None or fields[0] not in ("Z", "X") or fields[1] != me:
                continue
            if not self._is_member(pid, fields[2], None):
                continue
            try:
                got, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                continue
            if got == pid:
                code = os.waitstatus_to_exitcode(status)
                reaped.append((pid, code))
                self._exited(pid, code)
        return reaped

    def tree(self) -> dict[int, str]:
        """Live members of the launched tree now: {pid: state letter}.

        The launched child and its descendants, every process in its process
        group, and adopted orphans we had seen in the tree, with their
        descendants too.
        """
        if self.pid is None:
            return {}
        procs = procfs.scan(detail_actors=False)
        kids = children_map(procs)
        tops = [self.pid]
        for pid, proc in procs.items():
            if pid == self.pid or pid == os.getpid():
                continue
            pgid = None
            if proc.ppid == os.getpid() or pid in self._members:
                fields = _stat_fields(pid)
                pgid = fields[2] if fields else None
            if self._is_member(pid, pgid, proc.create_time):
                tops.append(pid)
        out: dict[int, str] = {}
        for pid in descendants(kids, tops):
            proc = procs.get(pid)
            if proc is not None and pid != os.getpid():
                out[pid] = proc.state
        return out

    def _alive(self) -> dict[int, str]:
        return {p: s for p, s in self.tree().items() if s not in ("Z", "X")}

    def signal_tree(self, signum: int) -> list[int]:
        """Send ``signum`` to the process group and every live member;
        -> the members that were alive when signalled."""
        alive = list(self._alive())
        if self.pgid is not None:
            try:
                os.killpg(self.pgid, signum)
            except (ProcessLookupError, PermissionError):
                pass
        for pid in alive:
            try:
                os.kill(pid, signum)
            except (ProcessLookupError, PermissionError):
                pass
        return alive

    async def stop(self, grace: float | None = None) -> list[int]:
        """SIGINT the whole tree, wait up to ``grace`` seconds, SIGKILL the
        survivors; -> pids that needed SIGKILL. Safe to call twice."""
        import trio

        if self.pid is None:
            return []
        self._stopping = True
        grace = self.grace if grace is None else grace
        run = trio.to_thread.run_sync
        # Everyone in the tree now stays ours even once re-parented to init
        # by a parent dying first (when we are no subreaper).
        procs = await run(procfs.scan, None)
        members = await run(self.tree)
        self.note_members((pid, procs[pid].create_time) for pid in members if pid in procs)
        await run(self.signal_tree, signal.SIGINT)
        alive = await self._wait_gone(grace)
        killed: list[int] = []
        if alive:
            killed = await run(self.signal_tree, signal.SIGKILL)
            self.killed.update(killed)
            await self._wait_gone(2.0)
        elif self.pgid is not None:
            # Group members we could not enumerate (re-parented to init when
            # we are no subreaper) get no second chance either.
            try:
                os.killpg(self.pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        # SIGKILLed orphans turn into zombies a moment later: collect them.
        with trio.move_on_after(1.0):
            while await run(self._adopted_left):
                await run(self.reap_adopted)
                await trio.sleep(0.02)
        return killed

    def _adopted_left(self) -> list[int]:
        me = os.getpid()
        out = []
        for pid in set(_our_children()) | set(self._members):
            fields = _stat_fields(pid)
            if fields is not None and fields[1] == me and pid != self.pid \
                    and self._is_member(pid, fields[2], None):
                out.append(pid)
        return out

    async def _wait_gone(self, timeout: float) -> dict[int, str]:
        import trio

        deadline = trio.current_time() + timeout
        alive = await trio.to_thread.run_sync(self._alive)
        while alive and trio.current_time() < deadline:
            await trio.sleep(0.05)
            await trio.to_thread.run_sync(self.reap_adopted)
            alive = await trio.to_thread.run_sync(self._alive)
        return alive

    def kill_now(self) -> None:
        """Synchronous last resort (e.g. the app died before trio could
        clean up): SIGKILL whatever is left of the tree."""
        if self.pid is not None:
            self.signal_tree(signal.SIGKILL)
