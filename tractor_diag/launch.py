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
- stopping sends SIGINT to every member of the tree (every descendant,
  every adopted orphan, every member of its cgroup), each pinned by a pidfd
  first, waits a bounded grace, then SIGKILLs whatever is left (with
  ``cgroup.kill`` when the tree runs in a cgroup of its own).

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
import secrets
import signal
import subprocess
import time
from collections.abc import Callable, Iterable

from . import procfs
from .model import Proc
from .trees import children_map, descendants

# Every launched program gets this variable, with a value of its own: a
# process of the tree that escaped everything else (no cgroup, no
# subreaper) can still be named on quit, unless it cleared its environment
# or overwrote it with a process title.
ENV_MARK = "TRACTOR_DIAG_LAUNCH"

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


def status_code(returncode: int) -> int:
    """A child's exit status as a shell reports it: N, or 128+N for signal N."""
    return 128 - returncode if returncode < 0 else returncode


class Supervisor:
    """One launched command and everything it spawns.

    Usage, inside trio::

        sup = Supervisor(["python", "app.py"], on_output=..., on_exit=...)
        pid = await nursery.start(sup.run)
        ...
        nursery.cancel_scope.cancel()   # run() then stops the whole tree

    ``run`` returns (or is cancelled) only after the tree is gone: its
    cleanup is shielded and bounded by ``grace`` + a short SIGKILL wait.

    Who belongs to the tree, and how it is signalled:

    - the launched child, pinned by a pidfd taken at spawn time, before
      anything could wait for it: once it has been reaped, nothing sent
      "to the child" can reach whoever gets its pid next. Its process group
      is never signalled as a group (``killpg`` of a group with nothing of
      ours left would hit a stranger that got the number);
    - its descendants, and orphans of the tree re-parented to us (we are a
      child subreaper in the dashboard): a child of ours in another session
      than ours, started after the launch (we start nothing else in a
      session of its own);
    - every process the sampler saw inside the tree, by pid *and* start
      time, so a pid reused since is not ours;
    - with a cgroup (`tractor_diag.cgroup`), every member of it: a
      ``setsid`` double-forked daemon escapes all of the above, not that.

    Each member is pinned (`pinning.Pin`: pidfd, then start time and parent
    re-checked) before each signal; after the grace, ``cgroup.kill`` takes
    the whole cgroup at once.
    """

    def __init__(
        self,
        argv: list[str],
        *,
        on_output: OnOutput | None = None,
        on_exit: OnExit | None = None,
        on_start: Callable[[int], None] | None = None,
        grace: float = 3.0,
        max_line: int = 4096,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        arm_taskdump: bool = True,
        cgroup: bool | None = None,
    ):
        if not argv:
            raise ValueError("nothing to launch")
        from .cgroup import disabled_by_env

        self.argv = list(argv)
        self.on_output = on_output
        self.on_exit = on_exit
        self.on_start = on_start
        self.grace = grace
        self.max_line = max_line
        if arm_taskdump:
            # Every Python process of the launched tree arms the task dumper
            # at start-up (an env var and a start-up hook; no code change).
            from .taskdump import startup_env

            env = startup_env(env)
        self.mark = f"{os.getpid()}.{secrets.token_hex(8)}"
        self.env = dict(os.environ if env is None else env, **{ENV_MARK: self.mark})
        self.cwd = cwd
        # None: a cgroup where the machine allows it, unless the environment
        # says otherwise (TRACTOR_DIAG_NO_CGROUP)
        self.want_cgroup = (not disabled_by_env()) if cgroup is None else cgroup
        self.cgroup = None  # LaunchCgroup while the tree runs in one
        self.cgroup_path: str | None = None
        self.cgroup_unavailable: str | None = None  # why not, when one was wanted
        self.cgroup_left: str | None = None  # a cgroup that could not be removed
        self.pid: int | None = None
        self.returncode: int | None = None
        self.started_at: float | None = None
        # Exit codes of the launched child and of adopted orphans we reaped.
        self.exit_codes: dict[int, int] = {}
        # Everything seen inside the launched tree: pid -> start time in
        # clock ticks. A pid seen with another start time was reused.
        self._members: dict[int, int] = {}
        self._pin = None  # the launched child's Pin, from spawn time
        self._start_ticks: int | None = None
        self._children_before: set[int] = set()
        self._sid: int = os.getsid(0)
        self._stopping = False
        self.killed: set[int] = set()  # pids that needed SIGKILL on stop
        # (pid, title) of members still alive after the last SIGKILL
        self.survivors: list[tuple[int, str]] = []
        self._drain_scopes: list = []
        self._open_drains = 0

    @property
    def containment(self) -> str:
        """How the tree is held: ``cgroup`` or ``process tree``."""
        return "cgroup" if self.cgroup_path else "process tree"

    # -- running ------------------------------------------------------------

    async def _spawn(self, preexec):
        import trio

        return await trio.lowlevel.open_process(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            env=self.env,
            cwd=self.cwd,
            preexec_fn=preexec,
        )

    async def run(self, *, task_status=None) -> int | None:
        import trio

        from .cgroup import LaunchCgroup, Unavailable
        from .errors import Unsupported
        from .pinning import Pin, PinError

        if task_status is None:
            task_status = trio.TASK_STATUS_IGNORED
        self._children_before = set(_our_children())
        self._sid = os.getsid(0)
        if self.want_cgroup:
            try:
                self.cgroup = LaunchCgroup.create()
            except Unavailable as exc:
                self.cgroup_unavailable = str(exc)
        try:
            try:
                proc = await self._spawn(self.cgroup.join_in_child if self.cgroup else None)
            except subprocess.SubprocessError:
                if self.cgroup is None:
                    raise
                # the child could not move itself into the cgroup
                self.cgroup_unavailable = f"cannot move a process into {self.cgroup.path}"
                self.cgroup.remove()
                self.cgroup = None
                proc = await self._spawn(None)
        except BaseException:
            if self.cgroup is not None:
                self.cgroup.remove()
                self.cgroup = None
            raise
        if self.cgroup is not None:
            self.cgroup.done_joining()
            self.cgroup_path = self.cgroup.path
        self.pid = proc.pid
        try:
            # before anything can wait for it: the pid is still its own
            self._pin = Pin.of_child(proc.pid)
            self._start_ticks = self._pin.start_ticks
        except (PinError, Unsupported, OSError):
            # no pidfds: nothing will be signalled (the cgroup still works)
            self._pin = None
        if self._start_ticks is not None:
            self._members[proc.pid] = self._start_ticks
        self.started_at = time.time()
        if self.on_start is not None:
            self.on_start(proc.pid)
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
                    if self._pin is not None:
                        self._send_child(signal.SIGKILL)
                    with trio.move_on_after(1.0):
                        self._exited(proc.pid, await proc.wait())
                await trio.to_thread.run_sync(self._remove_cgroup)
                if self._pin is not None:
                    self._pin.close()
        return self.returncode

    def _remove_cgroup(self) -> None:
        cg = self.cgroup
        if cg is None:
            return
        if cg.populated():
            cg.kill()
        if cg.remove(wait=1.0):
            self.cgroup = None
        else:
            self.cgroup_left = cg.path

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

    def is_launched_child(self, pid: int, create_time: float) -> bool:
        """Is (pid, start time) the launched child (not a successor of its
        pid)?"""
        return (pid == self.pid and self._start_ticks is not None
                and procfs.ticks_of(create_time) == self._start_ticks)

    def note_members(self, pids: Iterable[tuple[int, float]]) -> None:
        """Remember processes seen inside the launched tree (pid, start
        time), so they are still ours once orphaned."""
        for pid, ctime in pids:
            self._members.setdefault(pid, procfs.ticks_of(ctime))

    @property
    def seen_pids(self) -> set[int]:
        """Every pid ever seen in the launched tree (for after-the-fact
        clean-up of what they left behind, e.g. socket files)."""
        return set(self._members)

    def _adopted(self, pid: int, ticks: int) -> bool:
        """A child of ours (checked by the caller) that came from the tree:
        started after the launch, in another session than ours, and not a
        child we had before launching."""
        if pid == self.pid or pid in self._children_before:
            return False
        if self._start_ticks is None or ticks < self._start_ticks:
            return False
        if self.cgroup is not None:
            # every orphan of the tree is a member; our own other children
            # (py-spy dumps, each in a session of its own) are not
            return self.cgroup.holds(pid)
        from .pyspy import HELPERS

        if pid in HELPERS:
            return False
        try:
            return os.getsid(pid) != self._sid
        except OSError:
            return False

    def _ours(self, pid: int, ppid: int, ticks: int) -> bool:
        if self._members.get(pid) == ticks:
            return True
        return ppid == os.getpid() and self._adopted(pid, ticks)

    def _scan(self) -> tuple[dict[int, Proc], set[int]]:
        """Members alive or not, from one /proc pass: ({pid: Proc}, pids that
        are members only through the cgroup)."""
        if self.pid is None:
            return {}, set()
        me = os.getpid()
        procs = procfs.scan(detail_actors=False)
        tops = []
        for pid, proc in procs.items():
            if pid != me and self._ours(pid, proc.ppid, procfs.ticks_of(proc.create_time)):
                tops.append(pid)
        kids = children_map(procs)
        found = set(descendants(kids, tops))
        cg_only: set[int] = set()
        if self.cgroup is not None:
            cg_tops = [p for p in self.cgroup.pids() if p in procs and p not in found]
            cg_only = set(descendants(kids, cg_tops)) - found
            found |= cg_only
        found.discard(me)
        return {pid: procs[pid] for pid in found if pid in procs}, cg_only

    def tree(self) -> dict[int, str]:
        """Members of the launched tree now: {pid: state letter}."""
        return {pid: p.state for pid, p in self._scan()[0].items()}

    def _alive(self) -> dict[int, str]:
        return {p: s for p, s in self.tree().items() if s not in ("Z", "X")}

    def _send_child(self, signum: int) -> bool:
        from .pinning import PinError

        try:
            return self._pin is not None and self._pin.send(signum)
        except (PinError, ValueError):
            return False

    def _send(self, proc: Proc, signum: int, in_cgroup: bool) -> bool:
        """Pin ``proc`` as it was scanned, then signal it; -> sent."""
        from .errors import Unsupported
        from .pinning import Pin, PinError

        if proc.pid == self.pid and self.is_launched_child(proc.pid, proc.create_time):
            return self._send_child(signum)
        try:
            pin = Pin.open(proc.pid, start_time=proc.create_time, ppid=proc.ppid)
        except (PinError, Unsupported):
            return False
        with pin:
            if in_cgroup and not (self.cgroup is not None and self.cgroup.holds(proc.pid)):
                return False
            try:
                return pin.send(signum)
            except PinError:
                return False

    def signal_tree(self, signum: int) -> list[int]:
        """Send ``signum`` to every live member, each pinned first;
        -> the pids it was sent to."""
        members, cg_only = self._scan()
        sent = []
        for pid, proc in sorted(members.items()):
            if proc.state in ("Z", "X"):
                continue
            if self._send(proc, signum, pid in cg_only):
                sent.append(pid)
        return sent

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
        members = (await run(self._scan))[0]
        self.note_members((pid, p.create_time) for pid, p in members.items())
        await run(self.signal_tree, signal.SIGINT)
        alive = await self._wait_gone(grace)
        killed: list[int] = []
        if alive or (self.cgroup is not None and await run(self.cgroup.populated)):
            if self.cgroup is not None:
                await run(self.cgroup.kill)
            sent = await run(self.signal_tree, signal.SIGKILL)
            killed = sorted(set(alive) | set(sent))
            self.killed.update(killed)
            alive = await self._wait_gone(2.0)
        # SIGKILLed orphans turn into zombies a moment later: collect them.
        with trio.move_on_after(1.0):
            while await run(self._adopted_left):
                await run(self.reap_adopted)
                await trio.sleep(0.02)
        self.survivors = await run(self._describe, alive)
        return killed

    def _describe(self, alive: dict[int, str]) -> list[tuple[int, str]]:
        out = []
        pids = set(alive) | self._marked()
        if self.cgroup is not None:
            pids |= set(self.cgroup.pids())
        for pid in sorted(pids):
            proc = procfs.read_proc(pid, detail=False)
            if proc is not None and proc.state not in ("Z", "X"):
                out.append((pid, proc.title))
        return out

    def _marked(self) -> set[int]:
        """Processes carrying this launch's `ENV_MARK` (named, never
        signalled: the mark proves nothing a stranger could not copy)."""
        me = os.getpid()
        needle = f"{ENV_MARK}={self.mark}".encode()
        uid = os.geteuid()
        out: set[int] = set()
        try:
            names = os.listdir("/proc")
        except OSError:
            return out
        for name in names:
            if not name.isdigit() or int(name) == me:
                continue
            try:
                if uid and os.stat(f"/proc/{name}").st_uid != uid:
                    continue
                with open(f"/proc/{name}/environ", "rb") as f:
                    env = f.read()
            except OSError:
                continue
            if needle in env.split(b"\0"):
                out.add(int(name))
        return out

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
            st = procfs.read_stat(pid)
            if st is None or st.state not in ("Z", "X") or st.ppid != me:
                continue
            if not self._ours(pid, st.ppid, st.start_ticks):
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

    def _adopted_left(self) -> list[int]:
        me = os.getpid()
        out = []
        for pid in set(_our_children()) | set(self._members):
            if pid == self.pid:
                continue
            st = procfs.read_stat(pid)
            if st is not None and st.ppid == me and self._ours(pid, st.ppid, st.start_ticks):
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
        if self.pid is None:
            return
        if self.cgroup is not None:
            self.cgroup.kill()
        self.signal_tree(signal.SIGKILL)
        self._send_child(signal.SIGKILL)
        self._remove_cgroup()
