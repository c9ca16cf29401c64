"""Trio task trees from outside: ask with SIGUSR1, read what gets appended.

Who is asked. SIGUSR1 means whatever a program makes it mean (a "graceful
restart", a log rotation); its default action kills. So a process is
signalled only when ``SigCgt`` shows a handler (read again right before the
signal, with the start time that proves the pid was not reused) AND it is
either a recognised tractor actor, or it announced a tractor-diag dumper
(`tractor_diag.taskdump`'s ARMED line, first in its dump file, names its
pid, start time and PID namespace; the file must be a regular file owned by
the process's user), or the caller named it explicitly.

Where the tree appears: in the announced dump file, or where tractor's own
stackscope handler writes (``/tmp/tractor-stackscope-<pid>.log``, the pid
as the process itself sees it). Both are watched: a runtime with stackscope
enabled replaces our handler with its own. A process in another mount
namespace is read through ``/proc/<pid>/root``. We note each file's size,
signal, and collect what appears after that offset:

- a tractor-diag taskdump block (``===== tractor-diag taskdump BEGIN ...``)
  is complete at its END line;
- anything else (tractor's own stackscope text has no delimiters) is
  complete once the file stops growing for a short quiet period; one that
  shows no task below trio's main nursery (stackscope on Python 3.13) is
  flagged ``empty``, with the fix;

both bounded in time.

Side effects: tractor's own handler relays SIGUSR1 to its sub-actors with
``Popen.send_signal``, which polls and so reaps a child that already exited.
Callers take their process snapshot before any request, and a request to
such a handler carries a ``note`` saying so.
"""
from __future__ import annotations

import os
import re
import signal
import stat
import time

import msgspec

from . import procfs
from .model import Proc, replace
from .stackmodel import Pending, TaskFrame, TaskInfo, TaskTree

STACKSCOPE_PATH = "/tmp/tractor-stackscope-{pid}.log"
#: kept for callers that read tractor's own dump file by pid
DUMP_PATH = STACKSCOPE_PATH

# An undelimited dump is done when the file has not grown for this long.
QUIET = 0.25
_POLL = 0.01
_MAX_READ = 4 << 20  # never slurp more than this from one dump file

NO_HANDLER = "no SIGUSR1 handler (no task dumper armed): not signalled"
NOT_ASKED = ("not a tractor actor and no tractor-diag dumper announced: not "
             "signalled (its SIGUSR1 handler may do anything; --tasks-from PID "
             "asks it anyway)")
EMPTY_STACKSCOPE = (
    "tractor's stackscope dump shows no task below trio's main nursery "
    "(stackscope cannot see inside nurseries on this Python): the tree is "
    "unknown, not idle. For full task trees run the program under "
    "'tractor-diag run -- CMD' (or 'dash -- CMD'), or call "
    "tractor_diag.taskdump.arm() in it"
)


def dump_path(pid: int) -> str:
    """Where tractor's own stackscope handler of ``pid`` writes."""
    return STACKSCOPE_PATH.format(pid=pid)


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


_HEAD = 256  # the dumper's header line fits; so does any dump's first line


def _head(path: str) -> bytes:
    """The first bytes of ``path`` (b"" when missing or unreadable)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return b""
    try:
        return os.pread(fd, _HEAD, 0)
    except OSError:
        return b""
    finally:
        os.close(fd)


class _Target(msgspec.Struct):
    nspid: int  # the pid as the process sees it
    uids: set[int]
    start: int  # clock ticks after boot
    pidns: int
    root: str  # "" or /proc/<pid>/root when its /tmp is not ours
    children: list[int]
    zombies: list[int]


def _target(pid: int) -> _Target | None:
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            status = f.read().decode("utf-8", "replace")
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
        start = int(raw[raw.rindex(b")") + 2:].split()[19])
        pidns = os.stat(f"/proc/{pid}/ns/pid").st_ino
    except (OSError, ValueError, IndexError):
        return None
    fields = dict(ln.split(":", 1) for ln in status.splitlines() if ":" in ln)
    nspids = fields.get("NSpid", str(pid)).split()
    uids = {int(u) for u in fields.get("Uid", "").split()}
    root = ""
    try:
        theirs = os.stat(f"/proc/{pid}/root/tmp")
        ours = os.stat("/tmp")
        if (theirs.st_dev, theirs.st_ino) != (ours.st_dev, ours.st_ino):
            root = f"/proc/{pid}/root"
    except OSError:
        pass
    children: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                children += [int(c) for c in f.read().split()]
    except (OSError, ValueError):
        pass
    zombies = []
    for child in children:
        try:
            with open(f"/proc/{child}/stat", "rb") as f:
                raw = f.read()
            if raw[raw.rindex(b")") + 2:].split()[0] in (b"Z", b"X"):
                zombies.append(child)
        except (OSError, ValueError):
            pass
    return _Target(nspid=int(nspids[-1]), uids=uids, start=start, pidns=pidns,
                   root=root, children=children, zombies=zombies)


_ANNOUNCE_NAME = re.compile(r"/tractor-diag-taskdump-\d+-\d+\.log(?:\.1)?$")
_MAPS_LINE = re.compile(
    r"^(?P<range>[0-9a-f]+-[0-9a-f]+) \S+ \S+ (?P<major>[0-9a-f]+):(?P<minor>[0-9a-f]+)"
    r" (?P<inode>\d+) +(?P<path>/.*?)(?P<deleted> \(deleted\))?$")


def announced_path(pid: int, target: _Target | None = None) -> str | None:
    """The file ``pid``'s tractor-diag dumper writes to, if it announced one,
    else None.

    Announced means: the process maps a taskdump announcement (a regular
    file of its user whose first line is an ARMED line for its PID
    namespace). The dumper keeps it mapped, so this holds for the process
    that armed and for its children forked without exec (they inherited the
    handler with the mapping), and not for a program exec'd from either,
    though it has the same pid and start time. A file lying in /tmp proves
    nothing.
    """
    from . import taskdump

    target = target or _target(pid)
    if target is None:
        return None
    try:
        with open(f"/proc/{pid}/maps", "rb") as f:
            maps = f.read(4 << 20).decode("utf-8", "surrogateescape")
    except OSError:
        return None
    seen: set[tuple[int, int, int]] = set()
    for line in maps.splitlines():
        if "tractor-diag-taskdump-" not in line:
            continue
        m = _MAPS_LINE.match(line)
        if m is None or not _ANNOUNCE_NAME.search(m["path"]):
            continue
        key = (int(m["major"], 16), int(m["minor"], 16), int(m["inode"]))
        if key in seen:
            continue
        seen.add(key)
        # The mapped file itself: by its name when it still has that name
        # (checked against the mapping's device and inode), else through
        # map_files (root only).
        candidates = [] if m["deleted"] else [target.root + m["path"]]
        candidates.append(f"/proc/{pid}/map_files/{m['range']}")
        for path in candidates:
            first = _read_announcement(path, key, target.uids)
            if first is None:
                continue
            a = taskdump.ARMED_RE.match(first)
            if a is None or int(a["pidns"]) != target.pidns:
                break
            if a["dumps"] != "-":
                return target.root + a["dumps"].replace("{pid}", str(target.nspid))
            # Its own file, or (a forked child) the one it will create at
            # its first dump.
            return target.root + taskdump.default_dump_path(target.nspid, target.pidns)
    return None


def _read_announcement(path: str, key: tuple[int, int, int], uids: set[int]) -> str | None:
    """The first line of ``path`` when it is the regular file ``key``
    (major, minor, inode) of one of ``uids``; never through a symlink of
    ours (map_files entries are the kernel's own links)."""
    nofollow = 0 if "/map_files/" in path else os.O_NOFOLLOW
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | nofollow)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if (not stat.S_ISREG(st.st_mode) or st.st_uid not in uids
                or (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino) != key):
            return None
        return os.pread(fd, 4096, 0).split(b"\n", 1)[0].decode("utf-8", "replace")
    except OSError:
        return None
    finally:
        os.close(fd)


def request(proc: Proc, *, explicit: bool = False) -> Pending | TaskTree:
    """Signal ``proc`` for a task tree if it handles SIGUSR1 and is an
    actor, announced a dumper, or is ``explicit``ly named."""
    from .errors import Unsupported
    from .pinning import Pin, PinError

    # Most processes handle no SIGUSR1: their stat says so in one read,
    # without the pin's (a "no" signals nobody, so it needs no pin). A
    # zombie leader's mask is read through a live thread, below.
    st = procfs.read_stat(proc.pid)
    if st is None or st.start_ticks != procfs.ticks_of(proc.create_time):
        return TaskTree(status="gone", reason="process gone (or its pid was reused)")
    if st.state not in ("Z", "X", "x") and st.sigcatch is not None \
            and not st.sigcatch >> (signal.SIGUSR1 - 1) & 1:
        return TaskTree(status="no-handler", reason=NO_HANDLER)
    # Pinned first: every check below is of this process, and the signal
    # reaches it or nobody (never whoever gets the pid after it).
    try:
        pin = Pin.open(proc.pid, start_time=proc.create_time)
    except Unsupported as exc:
        return TaskTree(status="error", reason=f"not signalled: {exc}")
    except PinError:
        return TaskTree(status="gone", reason="process gone (or its pid was reused)")
    with pin:
        return _request(pin, proc, explicit)


def _request(pin, proc: Proc, explicit: bool) -> Pending | TaskTree:
    from .pinning import PinError, same_cmdline

    fresh = procfs.read_quick(proc.pid)  # proc.actor has the full recognition
    if fresh is None or pin.exited():
        return TaskTree(status="gone", reason="process gone (or its pid was reused)")
    handles = fresh.handles_signal(signal.SIGUSR1)
    if handles is None:
        return TaskTree(status="unknown", reason="SigCgt not readable: not signalled "
                        "(SIGUSR1 would kill a process without a handler)")
    if not handles:
        return TaskTree(status="no-handler", reason=NO_HANDLER)
    target = _target(proc.pid)
    if target is None:
        return TaskTree(status="gone", reason="process gone before the request")
    ours = announced_path(proc.pid, target)
    # The snapshot's recognition (through parent and children) holds while
    # the command line is the one it judged: a process that exec'd (same
    # pid, same start time) is judged by what it says about itself now.
    actor = fresh.actor is not None or (
        proc.actor is not None and same_cmdline(fresh.cmdline, proc.cmdline))
    if ours is None and not actor and not explicit:
        return TaskTree(status="not-asked", reason=NOT_ASKED)
    paths = [p for p in (ours, target.root + dump_path(target.nspid)) if p]
    note = None
    if ours is None and target.children:
        note = ("asked through a handler that may be tractor's own, which relays "
                "SIGUSR1 to the sub-actors and reaps any that already exited")
        if target.zombies:
            note += (" (zombie child " + ", ".join(map(str, target.zombies))
                     + " may be gone after this; it was recorded before the signal)")
    offsets = [_size(p) for p in paths]
    heads = [_head(p) if off else b"" for p, off in zip(paths, offsets)]
    mark = _mark(proc.pid, target)
    try:
        sent = pin.send_main_thread(signal.SIGUSR1)
    except PinError as exc:
        mark.end()
        return TaskTree(status="error", path=paths[0], reason=f"not signalled: {exc}")
    if not sent:
        mark.end()
        return TaskTree(status="gone", reason="process gone before the request", path=paths[0])
    _in_flight.setdefault(proc.pid, []).append(mark)
    return Pending(pid=proc.pid, path=paths[0], offset=offsets[0], sent_at=time.monotonic(),
                   paths=paths, offsets=offsets, note=note, owners=sorted(target.uids),
                   heads=heads)


# the `captures` marks of requests not collected yet, by the pid signalled
_in_flight: dict[int, list] = {}


def _mark(pid: int, target: _Target):
    """Mark the process we signal, and every process below it: tractor's
    handler relays the signal to its sub-actors, whose handlers run too."""
    from . import captures

    pids = [pid, *target.children]
    if target.children:
        found = procfs.subtrees([pid])
        if found is not None:
            pids = found[0]
    return captures.begin(pids)


def _read_from(path: str, offset: int, owners: list[int] | None = None,
               head: bytes = b"") -> str:
    """What ``path`` holds after ``offset``; nothing unless it is a regular
    file (never through a symlink, never a FIFO) owned by one of ``owners``
    (the dump file names in /tmp are predictable: anyone could plant one).
    ``head``: the file's first bytes when ``offset`` was taken; other first
    bytes now mean it was emptied and written anew: read it all."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return ""
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (owners and st.st_uid not in owners):
            return ""
        if st.st_size < offset or (offset and head and os.pread(fd, len(head), 0) != head):
            offset = 0  # truncated or replaced since we looked: read it all
        os.lseek(fd, offset, os.SEEK_SET)
        chunks = []
        total = 0
        while total < _MAX_READ and (chunk := os.read(fd, 1 << 16)):
            chunks.append(chunk)
            total += len(chunk)
        return b"".join(chunks).decode("utf-8", "replace")
    finally:
        os.close(fd)


def _taskdump():
    from . import taskdump

    return taskdump


class _File:
    def __init__(self, path: str, offset: int, head: bytes = b""):
        self.path = path
        self.offset = offset
        self.head = head
        self.size = offset
        self.grew_at: float | None = None
        self.text = ""


class _Watch:
    def __init__(self, req: Pending):
        self.req = req
        paths = req.paths or [req.path]
        offsets = req.offsets or [req.offset]
        heads = req.heads or [b""] * len(paths)
        self.files = [_File(p, o, h) for p, o, h in zip(paths, offsets, heads)]
        self.done = False
        self.complete = False
        self.format: str | None = None
        self.chosen: _File = self.files[0]

    def poll(self, now: float) -> None:
        for f in self.files:
            size = _size(f.path)
            if size != f.size:
                f.size = size
                f.grew_at = now
                f.text = _read_from(f.path, f.offset, self.req.owners, f.head)
        td = _taskdump()
        for f in self.files:
            begin = td.BEGIN_RE.search(f.text) if f.text else None
            if begin is not None and int(begin["pid"]) in self._pids():
                self.chosen = f
                self.format = "tractor-diag"
                for end in td.END_RE.finditer(f.text, begin.end()):
                    if end["id"] == begin["id"]:
                        self.done = self.complete = True
                        return
                return  # a block in progress: wait for its END line
        for f in self.files:
            if f.text:
                self.chosen = f
                self.format = "undelimited"
                if f.grew_at is not None and now - f.grew_at >= QUIET:
                    self.done = True
                return

    def _pids(self) -> set[int]:
        # The block carries the pid as the process sees it (its namespace).
        pids = {self.req.pid}
        for f in self.files:
            m = re.search(r"-(\d+)\.log$", f.path)
            if m:
                pids.add(int(m[1]))
        return pids


def collect(pending: list[Pending], until: float) -> dict[int, TaskTree]:
    """Wait (until the monotonic time ``until``) for every request's dump."""
    watches = [_Watch(p) for p in pending]
    # Most dumps land within a few ms of the request: poll fast at first,
    # then back off.
    delay = 0.001
    while True:
        now = time.monotonic()
        for w in watches:
            if not w.done:
                w.poll(now)
        if all(w.done for w in watches) or now >= until:
            break
        time.sleep(min(delay, max(0.0, until - now)))
        delay = min(_POLL, delay * 2)
    out: dict[int, TaskTree] = {}
    end = time.monotonic()
    for w in watches:
        for mark in _in_flight.pop(w.req.pid, ()):
            mark.end()
        tree = _result(w, end)
        tree.note = w.req.note
        out[w.req.pid] = tree
    return out


_STACKSCOPE_TASK_RE = re.compile(r"<Task '((?:[^'\\]|\\.)*)' at 0x[0-9a-f]+>")
# The tasks trio itself runs: a dump holding only these shows nothing of
# the program.
_TRIO_OWN_TASKS = {"<init>", "<TrioToken.run_sync_soon task>"}


def stackscope_is_empty(text: str) -> bool:
    """True for a stackscope dump that shows no task below trio's main
    nursery (what tractor's handler writes on Python 3.13), or none at all."""
    names = set(_STACKSCOPE_TASK_RE.findall(text))
    return "stackscope" in text and names <= _TRIO_OWN_TASKS


def _result(w: _Watch, now: float) -> TaskTree:
    elapsed = now - w.req.sent_at
    f = w.chosen
    path = f.path
    if not f.text:
        gone = not os.path.exists(f"/proc/{w.req.pid}")
        where = " or ".join(x.path for x in w.files)
        return TaskTree(
            status="gone" if gone else "timeout", path=path, elapsed=elapsed,
            reason="process gone before it wrote a task tree" if gone else
            f"SIGUSR1 sent, nothing appended to {where} within {elapsed:.1f}s "
            "(main thread stuck in a C call, or the handler writes elsewhere)",
        )
    if w.format == "tractor-diag":
        blocks = _taskdump().parse_dumps(f.text)
        pids = w._pids()
        block = next((b for b in blocks if b.pid in pids), None)
        body = block.body if block is not None else f.text
        complete = bool(block and block.complete)
        return TaskTree(
            status="collected", text=body, format="tractor-diag",
            complete=complete, tasks=parse_task_lines(body), path=path,
            elapsed=elapsed, actor=dump_actor(body),
            reason=None if complete else "the dump was still being written "
            f"when the {elapsed:.1f}s bound ran out",
        )
    text = f.text.rstrip("\n")
    if stackscope_is_empty(text):
        return TaskTree(status="collected", text=text, format="undelimited",
                        complete=w.done, path=path, elapsed=elapsed, empty=True,
                        reason=EMPTY_STACKSCOPE)
    return TaskTree(status="collected", text=text,
                    format="undelimited", complete=w.done, path=path,
                    elapsed=elapsed,
                    reason=None if w.done else "the file was still growing when the bound ran out")


# ---------------------------------------------------------------------------
# reading a taskdump body back into tasks
# ---------------------------------------------------------------------------

_ACTOR_RE = re.compile(
    r"^actor: name=(?P<name>'(?:[^'\\\n]|\\.)*'|\"(?:[^\"\\\n]|\\.)*\") ", re.M)


def dump_actor(body: str) -> str | None:
    """The actor name a taskdump body's header gives (``actor: name=...``),
    before its trio section; else ``None``."""
    head = body.split("\ntrio run:", 1)[0]
    m = _ACTOR_RE.search(head)
    if m is None:
        return None
    import ast

    try:
        name = ast.literal_eval(m["name"])
    except (ValueError, SyntaxError):
        return None
    return name if isinstance(name, str) and name else None


_TASK_RE = re.compile(r"^(?P<pad> *)task '(?P<name>.*?)' \[(?P<tags>[^\]]*)\]")
_AT_RE = re.compile(r"^ *at (?P<file>.+?):(?P<line>\d+) in (?P<func>\S+)")
_NURSERY_RE = re.compile(r"^(?P<pad> *)nursery \d+/\d+ of .*?(?:\[(?P<flags>[^\]]*)\])?$")
_PEER_RE = re.compile(r"^ *peer: (?:pid=(?P<pid>\d+)|addr=(?P<addr>\S+))$")


def parse_task_lines(body: str) -> list[TaskInfo]:
    """The trio section of a taskdump body -> tasks in tree order.

    Only the lines between ``trio run: active`` and ``other threads:`` are
    the tree; the thread stacks after it use ``at`` lines too.
    """
    lines = body.splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.startswith("trio run: active")), None)
    if start is None:
        return []
    tasks: list[TaskInfo] = []
    stack: list[tuple[int, TaskInfo]] = []  # (indent, task) of open ancestors
    cancelled: list[int] = []  # indents of open nurseries whose cancel was called
    for ln in lines[start + 1:]:
        if ln.startswith("other threads:"):
            break
        if m := _TASK_RE.match(ln):
            indent = len(m["pad"])
            while stack and stack[-1][0] >= indent:
                stack.pop()
            while cancelled and cancelled[-1] >= indent:
                cancelled.pop()
            if stack:
                stack[-1][1].has_children = True
            tags = [t.strip() for t in m["tags"].split(",")]
            state = next((t for t in tags if t != "root"), "")
            task = TaskInfo(name=m["name"], state=state, depth=len(stack),
                            cancelling=bool(cancelled))
            tasks.append(task)
            stack.append((indent, task))
        elif (m := _AT_RE.match(ln)) and stack:
            stack[-1][1].frames.append(
                TaskFrame(filename=m["file"], line=int(m["line"]), name=m["func"]))
        elif (m := _PEER_RE.match(ln)) and stack and stack[-1][1].frames:
            frames = stack[-1][1].frames
            frames[-1] = replace(
                frames[-1], peer_pid=int(m["pid"]) if m["pid"] else None, peer_addr=m["addr"])
        elif m := _NURSERY_RE.match(ln):
            indent = len(m["pad"])
            flags = [f.strip() for f in (m["flags"] or "").split(",") if f.strip()]
            owner = [t for ind, t in stack if ind < indent]
            if owner:
                owner[-1].scope_flags.extend(flags)
            while cancelled and cancelled[-1] >= indent:
                cancelled.pop()
            if "cancel called" in flags:
                cancelled.append(indent)
    return tasks
