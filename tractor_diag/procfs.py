"""One pass over ``/proc``: every process read once, into `Proc` records.

``stat`` and ``cmdline`` are read for every process (they are what finds the
roots, the actors and the tree links; ``stat`` also carries the caught-signal
mask and the kernel-thread flag). Detail is read only for processes that matter: the given roots, their
descendants and any actor. Detail comes in two sizes:

- ``wchan``, always (it is what tells *idle in the event loop* from
  *blocked*);
- with ``full=True`` also ``status`` (real uid, context switches) and
  ``cgroup``. Those two files cost as much again as the whole base pass, so
  a one-shot ``ptree`` leaves them out and the sampler, ``--json`` and
  `read_proc` ask for them.

Without ``status``, ``Proc.uid`` is the owner of ``/proc/<pid>``: the
effective uid, or root for a non-dumpable process (one that changed its
credentials). Anything that acts on ownership reads ``status`` itself.

``/proc`` lists pids in ascending order and a child almost always has a
higher pid than its parent, so "is my parent in the tree?" is answered
during the same pass; a tree member that precedes its parent (pid
wrap-around) gets its detail read once afterwards.

Files are opened relative to a directory fd (``openat``), which avoids
re-resolving ``/proc/<pid>`` for each file.

A thread-group leader that exited while its other threads run (the main
thread called ``pthread_exit``) is a zombie in its own ``stat`` but a live
process: its state, ``cmdline`` and detail are read through a live thread
and ``Proc.leader_exited`` is set.

Processes vanish at any moment: a process whose ``stat`` cannot be read is
simply not in the result; a detail file that cannot be read leaves its field
``None``.
"""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable
from typing import NamedTuple

from .actors import parse_actor, split_cmdline
from .model import Proc

HAVE_PROCFS = sys.platform.startswith("linux") and os.path.isdir("/proc/self")

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_O_DIR = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
_BOOT_TIME: float | None = None
# The kernel's own mark of a kernel thread (``flags`` in stat). Not pid 2 or
# its children: that holds only in the initial PID namespace, and in a
# container's pid 2 is an ordinary process (kernel threads are not visible).
_PF_KTHREAD = 0x00200000

# Marks a process whose whole subtree gets detail: (pid, argv, comm) -> bool.
RootTest = Callable[[int, list[str], str], bool]


def boot_time() -> float:
    global _BOOT_TIME
    if _BOOT_TIME is None:
        try:
            with open("/proc/stat", "rb") as f:
                for line in f:
                    if line.startswith(b"btime "):
                        _BOOT_TIME = float(line.split()[1])
                        break
        except OSError:
            pass
        if _BOOT_TIME is None:
            import psutil

            _BOOT_TIME = psutil.boot_time()
    return _BOOT_TIME


def _read(name: str, dfd: int) -> bytes:
    fd = os.open(name, os.O_RDONLY, dir_fd=dfd)
    try:
        data = os.read(fd, 65536)
        if len(data) == 65536:  # a very long cmdline: read the rest
            chunks = [data]
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
            data = b"".join(chunks)
        return data
    finally:
        os.close(fd)


class Stat(NamedTuple):
    """The fields of ``/proc/<pid>/stat`` this package uses."""

    ppid: int
    state: str
    comm: str
    utime: float  # seconds
    stime: float
    threads: int
    create_time: float  # seconds since the epoch (boot time + start ticks)
    rss: int  # bytes
    exit_code: int | None  # zombies only: as in `subprocess`, -N for signal N
    sigcatch: int | None  # the same mask as SigCgt in status (first 64 signals)
    start_ticks: int  # clock ticks after boot: the exact start time
    kthread: bool  # PF_KTHREAD in the flags: a kernel thread, whatever its pid


def parse_stat(raw: bytes, btime: float | None = None) -> Stat | None:
    """The one parser of a ``/proc/<pid>/stat`` line (``None`` if malformed).

    The comm may hold spaces and parentheses: fields are split after the
    *last* ``)``."""
    if btime is None:
        btime = boot_time()
    lpar = raw.find(b"(")
    rpar = raw.rfind(b")")
    if lpar < 0 or rpar < 0:
        return None
    comm = raw[lpar + 1:rpar].decode("utf-8", "replace")
    f = raw[rpar + 2:].split()
    if len(f) < 22:
        return None
    exit_code = None
    if len(f) > 49 and f[0] in (b"Z", b"X"):
        status = int(f[49])  # a waitpid() status
        exit_code = -(status & 0x7F) if status & 0x7F else status >> 8 & 0xFF
    ticks = int(f[19])
    return Stat(
        int(f[1]),
        f[0].decode(),
        comm,
        int(f[11]) / _CLK_TCK,
        int(f[12]) / _CLK_TCK,
        int(f[17]),
        btime + ticks / _CLK_TCK,
        int(f[21]) * _PAGE,
        exit_code,
        int(f[31]) if len(f) > 31 else None,
        ticks,
        bool(int(f[6]) & _PF_KTHREAD),
    )


def _parse_stat(pid: int, raw: bytes, btime: float) -> Stat | None:
    return parse_stat(raw, btime)


def read_stat(pid: int, task: int | None = None) -> Stat | None:
    """``/proc/<pid>/stat`` (or one thread's, ``task``), or ``None`` when
    the process is gone or the file is unreadable."""
    path = f"/proc/{pid}/stat" if task is None else f"/proc/{pid}/task/{task}/stat"
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError:
        return None
    try:
        return parse_stat(raw)
    except ValueError:
        return None


def ticks_of(create_time: float) -> int:
    """A `Proc.create_time` back to the clock ticks it was computed from."""
    return round((create_time - boot_time()) * _CLK_TCK)


class Known(NamedTuple):
    """What a pass learnt of one process that does not change tick to tick."""

    start_ticks: int
    comm: str
    uid: int
    argv: list[str]
    actor: object  # ActorInfo | None, as `parse_actor` gave it
    volatile: bool  # its title may still change: read cmdline again


class ProcCache:
    """What a repeated scan (the sampler's) need not read again.

    Per (pid, start time): ``cmdline``, the owner and the actor parse are
    read once and again only when the title can change (a new ``comm``: an
    exec; or a booting child, see `_volatile`). The full detail (``status``,
    ``schedstat``, ``cgroup``) is read again only for a process that used
    CPU or is runnable since it was last read: a process that did not run
    has the same context switches and run time, and its ``cgroup`` and uid
    are read once.

    ``stat`` (and ``wchan``) stay open between passes and are read again
    with one ``pread`` each: a known process costs one system call a tick,
    not five (open the directory, open, read, close twice). An open
    ``/proc/<pid>`` file stays bound to the process it was opened for: once
    that process is reaped it reads ESRCH, never a newcomer with its pid.
    Unchanged ``stat`` bytes are not parsed again.

    A process whose ``stat`` reads byte for byte as on the last pass, whose
    title is final and which is asleep (not running, in disk wait or a
    zombie) is not read further: the pass takes a copy of the record it made
    of it then (``made``: before recognition, which completes each pass's
    copy afresh), with its wait channel read again every `IDLE_EVERY` passes
    (one ``pread``). For a process with one thread whose parent's record
    is a copy too, its ``schedstat`` (read before its ``stat``) stands in
    for the ``stat``: the number of times it was put on a CPU unchanged, it
    did not run at all, so nothing its ``stat`` or wait channel say changed
    (its parent did not exit either: no new ppid); its ``stat`` is read
    every `IDLE_EVERY` passes all the same (a resident size the kernel
    reclaimed, a ``comm`` another process wrote). A copy, not the record itself: recognition and the
    sampler complete and judge each pass's records, and an earlier
    snapshot's must stay as they were.

    With ``watch`` set (the pids the caller shows, as the sampler sets it),
    a process outside it whose title is final and whose ``/proc`` entry has
    the same inode (a reused pid gets a new one) is not read at all but
    every `IDLE_EVERY` passes: nothing of it is shown, and what could make
    it matter (an exec, a title) is seen then. An actor among them is read
    at once when its parent leaves ``/proc``: adopted, it is a stray to show.
    """

    def __init__(self) -> None:
        self.known: dict[int, Known] = {}
        # pid -> (start ticks, CPU seconds then, the detail fields read)
        self.detail: dict[int, tuple[int, float, tuple]] = {}
        self.stat_fds: dict[int, int] = {}
        self.wchan_fds: dict[int, int] = {}
        self.stats: dict[int, tuple[bytes, Stat]] = {}  # the last stat read, parsed
        # pid -> (the stat read, the record made of it, with detail, full
        # detail, schedstat as read before that stat or None)
        self.made: dict[int, tuple[bytes, Proc, bool, bool, bytes | None]] = {}
        self.sched_fds: dict[int, int] = {}  # schedstat, kept open (see `_schedstat`)
        self.wchans: dict[int, tuple[str, int]] = {}  # pid -> (wchan, the pass it was read)
        self._seen: set[int] = set()
        self._last_seen: set[int] = set()
        self.fd_budget = _fd_budget()
        self.watch: set[int] | None = None
        self.idle: dict[int, tuple[int, Proc]] = {}  # pid -> (inode, the Proc read)
        self.passes = 0
        self._listed: dict[str, int] | None = None  # the last listing of /proc
        self._listed_tasks: tuple[bytes, bytes] | None = None  # `_tasks` then
        self._listed_pass = 0
        self._stills = 0  # calls to `still`: whose stat is read in turn
        self._count_fds: list[int] | None = None  # /proc/stat, /proc/loadavg

    def begin(self) -> None:
        self._last_seen, self._seen = self._seen, set()
        self.passes += 1

    def end(self) -> None:
        """Forget processes the last whole pass did not see: those the pass
        before saw, and every `SWEEP_EVERY` passes whatever a table still
        holds (a process that vanished between a read and the end of its
        turn)."""
        if self.passes % SWEEP_EVERY:
            gone = self._last_seen - self._seen
        else:
            gone = set().union(self.known, self.detail, self.stats, self.idle, self.wchans,
                               self.made, self.stat_fds, self.wchan_fds,
                               self.sched_fds) - self._seen
        for pid in gone:
            for table in (self.known, self.detail, self.stats, self.idle, self.wchans, self.made):
                table.pop(pid, None)
            for fds in (self.stat_fds, self.wchan_fds, self.sched_fds):
                fd = fds.pop(pid, None)
                if fd is not None:
                    _close(fd)

    def still(self, shown: dict[int, Proc], matters: Callable[[int, int], bool]) -> bool:
        """Nothing the last pass read of ``shown`` (pid -> its record then)
        can have changed, and no process that matters came or went on the
        box since. Each shown process's ``schedstat`` reads as it did before
        the ``stat`` behind its record (one thread: it was not put on a CPU
        since), else its ``stat`` as then (asleep, stopped or a zombie: not
        on a CPU nor in disk wait, whose wait channel may move with the
        same ``stat``): one ``pread`` each, through the files kept open;
        each one's ``stat`` in turn every `IDLE_EVERY` calls all the same
        (what changes without the process running: a resident size the
        kernel reclaimed, a ``comm`` written from outside).
        When a task was created or released on the box (`_tasks`), ``/proc``
        is listed again: a new process ``matters(pid, ppid)`` says may
        change what is shown (one joining a shown tree, an adopted one)
        and one gone that was the parent of an actor not shown (adopted
        now, a stray to show) need a whole pass."""
        made_of, sched_fds, stat_fds, stats = self.made, self.sched_fds, self.stat_fds, self.stats
        turn = self._stills
        self._stills += 1
        try:
            for pid, proc in shown.items():
                made = made_of.get(pid)
                if (made is not None and made[4] is not None and proc.num_threads == 1
                        and (pid + turn) % IDLE_EVERY):
                    fd = sched_fds.get(pid)
                    if fd is None or os.pread(fd, 128, 0) != made[4]:
                        return False
                    continue
                fd, had = stat_fds.get(pid), stats.get(pid)
                if (fd is None or had is None or proc.state in _BUSY or proc.leader_exited
                        or _pread(fd) != had[0]):
                    return False
        except OSError:  # one of them is gone
            return False
        tasks = self._tasks()
        if tasks is None or self._listed is None:
            return False
        if tasks == self._listed_tasks:
            return True
        old = self._listed
        self._listed, self._listed_tasks = _list_proc(), tasks
        went = old.keys() - self._listed.keys()
        if went:
            parents = {str(p.ppid) for _, p in self.idle.values() if p.actor is not None}
            parents.update(str(m[1].ppid) for m in made_of.values() if m[1].actor is not None)
            if not parents.isdisjoint(went):
                return False
        for name, inode in self._listed.items():
            if old.get(name) != inode:  # new, or a pid reused
                st = read_stat(int(name))
                if st is not None and matters(int(name), st.ppid):
                    return False
        return True

    def listing(self) -> dict[str, int]:
        """The pids in ``/proc`` with their inodes. Listed again only when a
        process or thread was created or released on the box since the
        last listing (`_tasks`), and every `IDLE_EVERY` passes: with no
        new process there is none to find and no pid reused, and with none
        gone no actor was adopted because its parent left."""
        tasks = self._tasks()
        if (self._listed is None or tasks is None or tasks != self._listed_tasks
                or self.passes - self._listed_pass >= IDLE_EVERY):
            self._listed = _list_proc()
            self._listed_tasks, self._listed_pass = tasks, self.passes
        return self._listed

    def _tasks(self) -> tuple[bytes, bytes] | None:
        """How many processes and threads were ever created on the box
        (``processes`` in ``/proc/stat``: every fork and clone, whatever the
        PID namespace, and unmoved by a write to ``ns_last_pid``) and how
        many exist (``/proc/loadavg``), as read: with neither moved, no task
        was created or released. ``None`` when they cannot be read."""
        if self._count_fds is None:
            fds: list[int] = []
            try:
                for name in ("/proc/stat", "/proc/loadavg"):
                    fds.append(os.open(name, os.O_RDONLY))
            except OSError:
                for fd in fds:
                    _close(fd)
                fds = []
            self._count_fds = fds
        if not self._count_fds:
            return None
        try:
            stat, loadavg = (_pread(fd) for fd in self._count_fds)
        except OSError:
            return None
        i = stat.find(b"\nprocesses ")
        if i < 0:
            return None
        return stat[i:stat.find(b"\n", i + 1)], loadavg.split(b" ")[3]

    def keep(self, fds: dict[int, int], pid: int, fd: int) -> bool:
        """Keep ``fd`` open for ``pid`` while the budget allows."""
        if len(self.stat_fds) + len(self.wchan_fds) + len(self.sched_fds) >= self.fd_budget:
            return False
        old = fds.get(pid)
        if old is not None:
            _close(old)
        fds[pid] = fd
        return True

    def drop(self, pid: int) -> None:
        """``pid``'s open files read ESRCH: that process is gone."""
        for fds in (self.stat_fds, self.wchan_fds, self.sched_fds):
            fd = fds.pop(pid, None)
            if fd is not None:
                _close(fd)
        self.stats.pop(pid, None)
        self.made.pop(pid, None)
        self.idle.pop(pid, None)
        self.wchans.pop(pid, None)

    def close(self) -> None:
        for fds in (self.stat_fds, self.wchan_fds, self.sched_fds):
            for fd in fds.values():
                _close(fd)
            fds.clear()
        for fd in self._count_fds or ():
            _close(fd)
        self._count_fds = None

    def __del__(self) -> None:
        self.close()


#: A process nobody is shown is read again every this many passes (see `ProcCache`).
IDLE_EVERY = 5
#: A repeated pass looks through all it keeps for processes gone every this many passes.
SWEEP_EVERY = 30
#: How old the socket tables a repeated scan recognises registry holders by may be, in seconds.
TABLES_MAX_AGE = 5.0


def _list_proc() -> dict[str, int]:
    """The pids in ``/proc``, each with its entry's inode (a reused pid
    gets a new one)."""
    with os.scandir("/proc") as it:
        return {e.name: e.inode() for e in it if e.name.isdigit()}


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _fd_budget() -> int:
    """How many /proc files a cache may keep open: half of what the soft
    limit leaves after a margin for everything else the process opens."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):
        return 0
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 16
    return max(0, min(1 << 15, (soft - 256) // 2))


def _pread(fd: int) -> bytes:
    data = os.pread(fd, 4096, 0)
    if len(data) == 4096:  # a stat line is far shorter: never seen, but whole
        chunks = [data]
        while chunk := os.pread(fd, 4096, 4096 * len(chunks)):
            chunks.append(chunk)
        data = b"".join(chunks)
    return data


# A title is set with ``setproctitle``, which sets ``comm`` too: a title
# that changes shows as a new ``comm`` in ``stat`` (the pass reads it again
# then, as after an exec). Read again every pass besides: a young process
# (a forked child may exec into an actor or set its title any moment now,
# and an exec into a program of the same name keeps ``comm``), and a
# forked child that still shows its parent's title (``role="booting"``) or
# says it was forked (``forked_from``): its own title may truncate to the
# same 15 bytes of ``comm`` as its parent's. A launch command line
# (``tractor._child``, the fork server's, multiprocessing's) is not read
# again for itself: the released runtime keeps it for life, the current one
# sets a title over it.


def _volatile(argv: list[str], actor: object, age: float) -> bool:
    if age < 3.0:
        return True
    return actor is not None and (getattr(actor, "role", None) == "booting"
                                  or getattr(actor, "forked_from", None) is not None)


def status_field(status: bytes, key: bytes) -> bytes | None:
    """The raw value of one ``/proc/<pid>/status`` line (``None`` when absent)."""
    # Four lookups by find() instead of splitting ~55 lines: this parse was
    # the single largest cost of a detailed pass.
    i = status.find(b"\n" + key + b":")
    if i < 0:
        return None
    i += len(key) + 2
    j = status.find(b"\n", i)
    return status[i:] if j < 0 else status[i:j]


def _read_wchan(proc: Proc, dfd, cache: ProcCache | None = None) -> None:
    """``dfd``: the process's /proc dir fd, or a callable that opens it."""
    try:
        # a leader-exited process is read through a live thread's dir, not its pid's files
        fd = cache.wchan_fds.get(proc.pid) if cache is not None and not proc.leader_exited else None
        if fd is not None:
            raw = os.pread(fd, 256, 0)
        else:
            fd = os.open("wchan", os.O_RDONLY, dir_fd=dfd if isinstance(dfd, int) else dfd())
            try:
                raw = os.read(fd, 256)
            finally:
                if (cache is None or proc.leader_exited
                        or not cache.keep(cache.wchan_fds, proc.pid, fd)):
                    os.close(fd)
        wchan = raw.decode("ascii", "replace").strip()
        proc.wchan = "" if wchan == "0" else wchan
    except OSError:
        pass


def _read_full(proc: Proc, dfd: int) -> None:
    try:
        status = _read("status", dfd)
    except OSError:
        status = b""
    try:
        if (val := status_field(status, b"Uid")) is not None:
            proc.uid = int(val.split()[0])
        if (val := status_field(status, b"SigCgt")) is not None:
            proc.sig_caught = int(val.strip(), 16)
        if (val := status_field(status, b"voluntary_ctxt_switches")) is not None:
            proc.vol_ctx = int(val)
        if (val := status_field(status, b"nonvoluntary_ctxt_switches")) is not None:
            proc.invol_ctx = int(val)
    except ValueError:
        pass
    try:
        raw = _read("schedstat", dfd)
        proc.sched_at = time.monotonic()
        run, wait = raw.split()[:2]
        proc.sched_run, proc.sched_wait = int(run), int(wait)
    except (OSError, ValueError):
        pass
    try:
        # cgroup v2 has one line ``0::/path``; v1 many: keep the v2/first path.
        text = _read("cgroup", dfd).decode("utf-8", "replace")
        lines = [ln for ln in text.splitlines() if ln]
        v2 = [ln for ln in lines if ln.startswith("0::")]
        pick = (v2 or lines or [""])[0]
        proc.cgroup = pick.split(":", 2)[-1] or None
    except OSError:
        pass


# States in which a process's stat may stay the same while what the detail
# files say changes (on a CPU or queued for one, in disk wait, dead).
_AWAKE = frozenset("RDZXx")
# ... and while its wait channel or run times move (`ProcCache.still`).
_BUSY = frozenset("RD")

_FULL_FIELDS = ("uid", "sig_caught", "vol_ctx", "invol_ctx", "sched_run", "sched_wait", "cgroup")


def _read_detail(proc: Proc, dfd, full: bool, cache: ProcCache | None = None,
                 start_ticks: int = 0, still: bool = False) -> None:
    """``dfd``: the process's /proc dir fd, or a callable that opens it
    (a known process's dir is opened only when a file must be opened).
    ``still``: its ``stat`` reads byte for byte as on the last pass (no CPU
    time, no fault, the same state): its wait channel is the one read then,
    read again every `IDLE_EVERY` passes all the same."""
    if cache is not None and proc.state == "R":
        proc.wchan = ""  # on a CPU: no wait channel to read
    elif (still and cache is not None and not proc.leader_exited
          and (seen := cache.wchans.get(proc.pid)) is not None
          and cache.passes - seen[1] < IDLE_EVERY):
        proc.wchan = seen[0]
    else:
        _read_wchan(proc, dfd, cache)
        if cache is not None and proc.wchan is not None:
            cache.wchans[proc.pid] = (proc.wchan, cache.passes)
    if not full:
        return
    if cache is None:
        _read_full(proc, dfd)
        return
    cpu = proc.utime + proc.stime
    had = cache.detail.get(proc.pid)
    if had is not None and had[0] == start_ticks and had[1] == cpu and proc.state not in "RDZXx":
        # did not run since: the same switches and run time as then
        for name, value in zip(_FULL_FIELDS, had[2]):
            setattr(proc, name, value)
        return
    try:
        _read_full(proc, dfd if isinstance(dfd, int) else dfd())
    except OSError:
        return  # gone
    cache.detail[proc.pid] = (start_ticks, cpu, tuple(getattr(proc, n) for n in _FULL_FIELDS))


def read_quick(pid: int) -> Proc | None:
    """One process's stat, cmdline and wchan, for a re-check of a process
    already known (is it still the same one, its state, its signal mask):
    no status or cgroup, and no recognition through its parent and children,
    which `read_proc` adds (several times the cost)."""
    return scan(_every, only=[pid], full=False, recognise=False).get(pid)


def _every(pid: int, argv: list[str], comm: str) -> bool:
    return True


def read_proc(pid: int, detail: bool = True) -> Proc | None:
    """One process (with full detail unless ``detail=False``), or ``None``
    when it is gone (or unreadable)."""
    test = (lambda p, argv, comm: True) if detail else None
    return scan(test, only=[pid], detail_actors=detail, full=detail).get(pid)


def scan(
    is_root: RootTest | None = None,
    *,
    only: Iterable[int] | None = None,
    detail_actors: bool = True,
    full: bool = False,
    recognise: bool = True,
    cache: ProcCache | None = None,
    children: dict[int, list[int]] | None = None,
) -> dict[int, Proc]:
    """Read every process (or just ``only``) once.

    ``is_root`` marks processes whose whole subtree gets detail; actors get
    detail too when ``detail_actors``. ``full`` adds status and cgroup to
    the detail (see the module docstring). ``recognise``: complete actor
    recognition across processes (`recognise.recognise`); for ``only``
    their parents and children are read too, so one process is recognised
    exactly as in a whole scan. ``cache`` (a whole scan repeated, as the
    sampler does): skip what did not change since the last pass.
    ``children``: the children of (some of) ``only`` already read from the
    kernel's lists (`subtrees`), so recognition does not read them again.
    """
    if not HAVE_PROCFS:
        return _scan_psutil(is_root, only)
    if only is not None:
        only = list(only)
    if only is not None:
        cache = None
    procs = _scan(is_root, only, detail_actors, full, cache)
    if recognise:
        _recognise(procs, only, is_root, detail_actors, full, cache, children or {})
    return procs


def _recognise(procs: dict[int, Proc], only: list[int] | None, is_root: RootTest | None,
               detail_actors: bool, full: bool, cache: ProcCache | None = None,
               known: dict[int, list[int]] | None = None) -> None:
    from .recognise import recognise

    children_of = None
    every = procs
    if only is not None:
        known = known or {}

        def children_of(pid: int) -> list[int]:
            got = known.get(pid)
            return got if got is not None else _read_children(pid)

        # The evidence of a process's kin: its parent and grandparent (an
        # mp_forkserver actor's sidecar and root) and its children.
        kin: set[int] = set()
        for p in procs.values():
            kin.add(p.ppid)
            kin.update(children_of(p.pid))
        kin -= set(procs)
        extra = _scan(None, sorted(kin), False, False)
        for p in list(extra.values()):
            if p.ppid not in procs and p.ppid not in extra:
                extra.update(_scan(None, [p.ppid], False, False))
        every = {**extra, **procs}

    new = recognise(every, children_of=children_of,
                    tables_max_age=TABLES_MAX_AGE if cache is not None else 0.0)
    if detail_actors or is_root is not None:
        fill_detail(procs, [p for p in new if p in procs], full=full, cache=cache)


def subtrees(roots: Iterable[int]) -> tuple[list[int], list[int], dict[int, list[int]]] | None:
    """(the given processes and all their descendants, the roots' parents,
    each member's children), from the kernel's own children lists (no pass
    over every process): roots first, then breadth-first. ``None`` when that cannot answer
    exactly: a root that is not a thread-group leader (a whole pass does not
    list threads), or a kernel without ``/proc/<pid>/task/<tid>/children``."""
    me = os.getpid()
    if not os.path.exists(f"/proc/{me}/task/{me}/children"):
        return None
    out: list[int] = []
    parents: list[int] = []
    kids: dict[int, list[int]] = {}
    seen: set[int] = set()
    for pid in roots:
        try:
            with open(f"/proc/{pid}/status", "rb") as f:
                status = f.read()
        except OSError:
            continue  # gone: a whole pass would not list it either
        tgid, ppid = status_field(status, b"Tgid"), status_field(status, b"PPid")
        if tgid is None or ppid is None or int(tgid) != pid:
            return None
        parents.append(int(ppid))
        if pid not in seen:
            seen.add(pid)
            out.append(pid)
    i = 0
    while i < len(out):
        kids[out[i]] = _read_children(out[i])
        for child in kids[out[i]]:
            if child not in seen:
                seen.add(child)
                out.append(child)
        i += 1
    return out, [p for p in parents if p not in seen], kids


def _read_children(pid: int) -> list[int]:
    """Children of every thread of ``pid`` (the kernel's own list)."""
    out: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                out.extend(int(c) for c in f.read().split())
        except (OSError, ValueError):
            continue
    return out


def _scan(is_root: RootTest | None, only: list[int] | None, detail_actors: bool,
          full: bool, cache: ProcCache | None = None) -> dict[int, Proc]:
    btime = boot_time()
    now = time.time()
    if cache is not None:
        cache.begin()
    inodes: dict[str, int] = {}
    if only is None and cache is not None:
        inodes = cache.listing()
        names: Iterable[str] = inodes
    elif only is None:
        names = (n for n in os.listdir("/proc") if n.isdigit())
    else:
        names = [str(p) for p in only]
    procs: dict[int, Proc] = {}
    detailed: set[int] = set()
    want: set[int] = set()
    late = False  # a process listed before its parent (pids wrapped)
    watch = cache.watch if cache is not None and only is None else None
    stat_fds = cache.stat_fds if cache is not None else None
    made_of = cache.made if cache is not None else {}
    seen = cache._seen if cache is not None else set()
    copied: set[int] = set()  # this pass's records that are copies (see `ProcCache`)
    for name in names:
        pid = int(name)
        if watch is not None and pid not in watch:
            idle = cache.idle.get(pid)
            if (idle is not None and idle[0] == inodes[name]
                    and (pid + cache.passes) % IDLE_EVERY
                    and idle[1].ppid not in want
                    # an actor whose parent is gone is a stray to show now
                    and (idle[1].actor is None or str(idle[1].ppid) in inodes)
                    and not (is_root is not None and is_root(pid, idle[1].cmdline, idle[1].comm))):
                procs[pid] = idle[1]
                cache._seen.add(pid)
                late = late or idle[1].ppid > pid
                continue
        raw = sched = None
        made = made_of.get(pid)
        # schedstat: read before the stat (a run in between shows in the
        # stat read), where it can stand in for the stat now or must be had
        # for the next pass
        if (made is not None and made[1].num_threads == 1 and (watch is None or pid in watch)
                and (made[4] is None
                     or (made[1].ppid in copied and (pid + cache.passes) % IDLE_EVERY))):
            sched = _schedstat(cache, pid)
            if sched is not None and sched == made[4]:
                again = _unchanged(made, pid, want, is_root, detail_actors, full, cache, ran=False)
                if again is not None:
                    procs[pid] = again
                    seen.add(pid)
                    copied.add(pid)
                    late = late or again.ppid > pid
                    continue
        kept = stat_fds.get(pid) if stat_fds is not None else None
        if kept is not None:
            try:
                raw = _pread(kept)
            except OSError:
                cache.drop(pid)  # reaped: whoever has the pid now is new
            else:
                if made is not None and made[0] == raw:
                    again = _unchanged(made, pid, want, is_root, detail_actors, full, cache)
                    if again is not None:
                        if sched is not None and sched != made[4]:
                            made_of[pid] = (*made[:4], sched)
                        procs[pid] = again
                        seen.add(pid)
                        copied.add(pid)
                        late = late or again.ppid > pid
                        continue
        # The directory is opened only when a file other than a kept
        # ``stat`` must be read (see `ProcCache`).
        dfd: int | None = None

        def opendir() -> int:
            nonlocal dfd
            if dfd is None:
                dfd = os.open("/proc/" + name, _O_DIR)
            return dfd

        try:
            try:
                if raw is None:
                    fd = os.open("stat", os.O_RDONLY, dir_fd=opendir())
                    try:
                        raw = os.read(fd, 4096)
                    finally:
                        if cache is None or not cache.keep(cache.stat_fds, pid, fd):
                            os.close(fd)
                had = cache.stats.get(pid) if cache is not None else None
                still = had is not None and had[0] == raw
                if still:
                    st = had[1]
                else:
                    st = _parse_stat(pid, raw, btime)
                    if st is None:
                        continue
                    if cache is not None:
                        cache.stats[pid] = (raw, st)
                known = cache.known.get(pid) if cache is not None else None
                if known is not None and (known.start_ticks != st.start_ticks
                                          or known.comm != st.comm or known.volatile
                                          or st.state in ("Z", "X", "x")):
                    known = None  # a new process, an exec, or a title still to come
                uid = known.uid if known is not None else os.fstat(opendir()).st_uid
                leader_exited = False
                if st.state == "Z" and st.threads > 1:
                    live = _live_thread(opendir())
                    if live is not None:
                        # the main thread exited, the others run: read the
                        # process through one of them (cmdline, detail)
                        os.close(dfd)
                        dfd, thread = live
                        st = st._replace(state=thread.state, rss=thread.rss, exit_code=None)
                        leader_exited = True
                        known = None
                if known is not None:
                    argv, actor = known.argv, known.actor
                else:
                    argv = split_cmdline(_read("cmdline", opendir()))
                    actor = parse_actor(argv, st.comm, pid, st.ppid)
                    if cache is not None and st.state not in ("Z", "X", "x"):
                        cache.known[pid] = Known(
                            st.start_ticks, st.comm, uid, argv, actor,
                            _volatile(argv, actor, now - st.create_time))
            except (OSError, ValueError):
                continue  # gone between listdir and here
            ppid, state, comm, ut, stt, nthr, ctime, rss, exit_code, sigcgt, ticks, kthread = st
            if cache is not None:
                cache._seen.add(pid)
            proc = Proc(
                pid=pid, ppid=ppid, uid=uid, state=state, comm=comm,
                cmdline=argv, create_time=ctime, utime=ut, stime=stt,
                rss=rss, num_threads=nthr, exit_code=exit_code,
                sig_caught=sigcgt, actor=actor,
                leader_exited=leader_exited, kthread=kthread,
            )
            procs[pid] = proc
            late = late or ppid > pid
            if (inodes and not leader_exited
                    and (had_known := cache.known.get(pid)) is not None
                    and not had_known.volatile and had_known.start_ticks == ticks):
                cache.idle[pid] = (inodes[name], proc)
            if (
                ppid in want
                or (is_root is not None and is_root(pid, argv, comm))
                or (detail_actors and proc.actor is not None)
            ):
                want.add(pid)
                # a leader-exited process reads its detail through the live thread
                _read_detail(proc, dfd if leader_exited else opendir if dfd is None else dfd,
                             full, cache, ticks, still)
                detailed.add(pid)
            if cache is not None:
                _remember_made(cache, pid, raw, proc, ticks, pid in detailed, full, leader_exited,
                               sched)
        finally:
            if dfd is not None:
                os.close(dfd)
    if cache is not None and only is None:
        cache.end()
    if is_root is not None and late:
        _fill_late_detail(procs, want, detailed, full, cache)
    return procs


def _schedstat(cache: ProcCache, pid: int) -> bytes | None:
    """``pid``'s ``schedstat`` (its main thread's time on a CPU, in a run
    queue, and how many times it was put on a CPU), through a file kept
    open; ``None`` when it cannot be read."""
    fd = cache.sched_fds.get(pid)
    if fd is not None:
        try:
            return os.pread(fd, 128, 0)
        except OSError:  # reaped: the file stays bound to that process
            _close(cache.sched_fds.pop(pid))
            return None
    try:
        fd = os.open(f"/proc/{pid}/schedstat", os.O_RDONLY)
    except OSError:
        return None
    if cache.keep(cache.sched_fds, pid, fd):
        try:
            return os.pread(fd, 128, 0)
        except OSError:
            _close(cache.sched_fds.pop(pid))
            return None
    try:
        return os.read(fd, 128)
    except OSError:
        return None
    finally:
        os.close(fd)


def _unchanged(made: tuple[bytes, Proc, bool, bool, bytes | None], pid: int, want: set[int],
               is_root: RootTest | None, detail_actors: bool, full: bool,
               cache: ProcCache, ran: bool = True) -> Proc | None:
    """A copy of the record made of ``pid`` on an earlier pass, its ``stat``
    unchanged since, or (``ran=False``) its ``schedstat`` (see `ProcCache`);
    ``None`` when it must be read again: it needs detail it was not read
    with, or its wait channel changed (read again every `IDLE_EVERY` passes
    unless it did not run at all)."""
    proc, detailed, made_full = made[1:4]
    if (proc.ppid in want or (is_root is not None and is_root(pid, proc.cmdline, proc.comm))
            or (detail_actors and proc.actor is not None)):
        if not detailed or (full and not made_full):
            return None
        seen = cache.wchans.get(pid)
        if ran and (seen is None or cache.passes - seen[1] >= IDLE_EVERY):
            fd = cache.wchan_fds.get(pid)
            if fd is None:
                return None
            try:
                raw = os.pread(fd, 256, 0)
            except OSError:
                return None
            wchan = raw.decode("ascii", "replace").strip()
            if ("" if wchan == "0" else wchan) != proc.wchan:
                return None
            cache.wchans[pid] = (proc.wchan, cache.passes)
        want.add(pid)
    return proc.__copy__()


def _remember_made(cache: ProcCache, pid: int, raw: bytes, proc: Proc, start_ticks: int,
                   detailed: bool, full: bool, leader_exited: bool,
                   sched: bytes | None = None) -> None:
    """Keep a copy of this pass's record of ``pid`` for `_unchanged`: only
    of a process asleep with its title final (what a copy may stand for
    while its ``stat`` stays the same)."""
    known = cache.known.get(pid)
    if (leader_exited or proc.state in _AWAKE or known is None or known.volatile
            or known.start_ticks != start_ticks):
        cache.made.pop(pid, None)
        return
    cache.made[pid] = (raw, proc.__copy__(), detailed, full, sched)


def _live_thread(dfd: int) -> tuple[int, Stat] | None:
    """For a zombie thread-group leader (``dfd``: its /proc dir): a thread
    that still runs, as (its task dir fd, its stat), or ``None``."""
    try:
        tfd = os.open("task", _O_DIR, dir_fd=dfd)
    except OSError:
        return None
    try:
        for tid in sorted(os.listdir(tfd), key=int):
            try:
                thread_dfd = os.open(tid, _O_DIR, dir_fd=tfd)
            except OSError:
                continue
            try:
                st = parse_stat(_read("stat", thread_dfd))
            except (OSError, ValueError):
                st = None
            if st is not None and st.state not in ("Z", "X", "x"):
                return thread_dfd, st
            os.close(thread_dfd)
    except OSError:
        pass
    finally:
        os.close(tfd)
    return None


def _fill_late_detail(procs: dict[int, Proc], want: set[int], detailed: set[int],
                      full: bool, cache: ProcCache | None = None) -> None:
    """Detail for tree members listed before their parent (pid wrap)."""
    children: dict[int, list[int]] = {}
    for proc in procs.values():
        children.setdefault(proc.ppid, []).append(proc.pid)
    stack = list(want)
    seen = set(stack)
    missing: list[int] = []
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in seen:
                seen.add(child)
                stack.append(child)
                if child not in detailed:
                    missing.append(child)
    fill_detail(procs, missing, full=full, cache=cache)


def fill_detail(procs: dict[int, Proc], pids: Iterable[int], *, full: bool = True,
                cache: ProcCache | None = None) -> None:
    """Read the detail files of ``pids`` that were scanned without them
    (``full``: status and cgroup too)."""
    if not HAVE_PROCFS:
        return
    for pid in pids:
        proc = procs.get(pid)
        if proc is None:
            continue
        need_wchan = proc.wchan is None
        need_full = full and proc.vol_ctx is None
        if not (need_wchan or need_full):
            continue
        try:
            dfd = os.open(f"/proc/{pid}", _O_DIR)
        except OSError:
            continue
        if proc.leader_exited:
            live = _live_thread(dfd)
            os.close(dfd)
            if live is None:
                continue
            dfd = live[0]
        try:
            if cache is not None:
                saved = proc.wchan
                _read_detail(proc, dfd, need_full, cache, ticks_of(proc.create_time))
                if not need_wchan:
                    proc.wchan = saved
            else:
                if need_wchan:
                    _read_wchan(proc, dfd)
                if need_full:
                    _read_full(proc, dfd)
        finally:
            os.close(dfd)


def _scan_psutil(is_root: RootTest | None, only: Iterable[int] | None) -> dict[int, Proc]:
    """Where there is no /proc (macOS): what psutil can tell."""
    import psutil

    attrs = ["pid", "ppid", "uids", "status", "name", "cmdline", "create_time",
             "cpu_times", "memory_info", "num_threads", "num_ctx_switches"]
    letters = {"running": "R", "sleeping": "S", "disk-sleep": "D", "stopped": "T",
               "tracing-stop": "t", "zombie": "Z", "dead": "X", "idle": "I"}
    procs: dict[int, Proc] = {}
    wanted = set(only) if only is not None else None
    for p in psutil.process_iter(attrs):
        info = p.info
        if wanted is not None and info["pid"] not in wanted:
            continue
        argv = info.get("cmdline") or []
        cpu = info.get("cpu_times")
        mem = info.get("memory_info")
        ctx = info.get("num_ctx_switches")
        uids = info.get("uids")
        comm = info.get("name") or ""
        procs[info["pid"]] = Proc(
            pid=info["pid"], ppid=info.get("ppid") or 0,
            uid=uids.real if uids else -1,
            state=letters.get(info.get("status") or "", "S"), comm=comm,
            cmdline=list(argv), create_time=info.get("create_time") or 0.0,
            utime=cpu.user if cpu else 0.0, stime=cpu.system if cpu else 0.0,
            rss=mem.rss if mem else 0, num_threads=info.get("num_threads") or 0,
            vol_ctx=ctx.voluntary if ctx else None,
            invol_ctx=ctx.involuntary if ctx else None,
            actor=parse_actor(list(argv), comm),
        )
    return procs
