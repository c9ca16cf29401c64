"""The values every verb computes and every face renders.

All of them are `msgspec.Struct`s so they cross every boundary (CLI
``--json``, the dashboard, snapshot bundles, the pytest plugin) as plain,
JSON-round-trippable data. Nothing here reads the system.
"""
from __future__ import annotations

from typing import Literal

import msgspec

try:
    # msgspec.structs.replace and msgspec.json.Encoder themselves, from the C
    # core: importing msgspec.structs or msgspec.json runs msgspec's whole
    # __init__ (inspect, the JSON-schema code, msgpack, toml, yaml: ~2.5 ms
    # of a start-up that needs only the core; see cli.import_msgspec_lean)
    from msgspec._core import JSONEncoder as _JSONEncoder
    from msgspec._core import replace
except ImportError:  # a msgspec laid out otherwise
    from msgspec.json import Encoder as _JSONEncoder
    from msgspec.structs import replace  # noqa: F401 - the data layer's, for every layer

# The records a sampler makes every tick (`ActorInfo`, `Proc`, `Entry`,
# `Snapshot`, `Event`) are not tracked by the cycle collector (``gc=False``):
# they hold no cycle, and a dashboard's history keeps tens of thousands of
# them, which every full collection would walk.

# Most severe first: renderers sort by this order.
BUCKETS: tuple[str, ...] = ("zombie", "orphan", "stray", "live")
Bucket = Literal["zombie", "orphan", "stray", "live"]

# "exited" only appears in sampler events and for zombies (they have exited,
# the parent has not reaped them).
STATES: tuple[str, ...] = (
    "runaway", "blocked", "stopped", "running", "idle", "exited",
)
State = Literal["running", "idle", "blocked", "stopped", "runaway", "exited"]

Generation = Literal["released", "current"]


class TCPAddr(msgspec.Struct, frozen=True, tag="tcp"):
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


class UDSAddr(msgspec.Struct, frozen=True, tag="uds"):
    dir: str
    name: str  # the socket file name, e.g. ``root@1234.sock``

    @property
    def path(self) -> str:
        return f"{self.dir.rstrip('/')}/{self.name}"

    def __str__(self) -> str:
        return self.path


Addr = TCPAddr | UDSAddr


# What a recognised tractor process is. ``booting``: a forked child still
# carrying its parent's title (or one that died booting); ``forkserver``:
# the multiprocessing fork-server sidecar of ``mp_forkserver``, not an actor
# itself but part of the tree; ``hosted``: an actor living as a
# sub-interpreter inside another process (``subint``).
Role = Literal["subactor", "root", "booting", "forkserver", "hosted"]
# How far the evidence goes: ``certain`` names the actor outright (its own
# title, ``tractor._child --uid``, a socket it holds); ``likely`` follows
# from tractor-specific traces without naming it (a spawn module's command
# line, a fork thread's name, its parent's title, a tractor parent).
Sure = Literal["certain", "likely"]
# The evidence, most telling first: see `actors` and `recognise`.
How = Literal[
    "title", "child-argv", "comm", "parent-title", "mp-forkserver",
    "mp-spawn", "fork-thread", "bindspace", "registry", "parent-of-actors",
    "subint-thread", "mp-name", "child-uid", "taskdump",
]
ParentBy = Literal["sentinel-pipe", "sidecar-parent"]
Backend = Literal["trio", "mp_spawn", "mp_forkserver", "main_thread_forkserver", "subint"]


class ActorInfo(msgspec.Struct, frozen=True, gc=False):
    """What the command line, title, threads and sockets say about a tractor
    process, and how sure that is."""

    name: str  # "" when nothing visible names it (e.g. mp_spawn over TCP)
    generation: Generation
    uuid: str | None = None
    parent_addr: Addr | None = None
    loglevel: str | None = None
    asyncio: bool = False
    # Only the 15-byte kernel ``comm`` was left to read the name from (a
    # zombie's cmdline is empty), so the name may be cut short.
    name_truncated: bool = False
    how: How = "title"
    sure: Sure = "certain"
    role: Role = "subactor"
    backend: Backend | None = None  # the spawn method, when the evidence says
    # ``booting``: the pid whose title it still carries (its parent).
    forked_from: int | None = None
    # The actor that spawned it when that is not its OS parent (an
    # ``mp_forkserver`` actor's OS parent is the fork-server sidecar), and
    # the evidence: ``sentinel-pipe`` (it holds the read end of a pipe whose
    # write end only that actor holds: multiprocessing's parent sentinel),
    # ``sidecar-parent`` (only the sidecar's parent was left to say it: the
    # root, right for the root's own children).
    logical_parent: int | None = None
    parent_by: ParentBy | None = None
    thread: str | None = None  # ``hosted``: the driver thread's name


_ONE_LINE = {c: f"\\x{c:02x}" for c in range(32)} | {10: "\\n", 9: "\\t", 13: "\\r"}
# Python's options that take their value as the next argument.
_VALUE_OPTIONS = frozenset({"-X", "-W", "-Q"})


def _base(arg: str) -> str:
    """A path's last part (``/x/bin/python3`` -> ``python3``); other words whole."""
    return arg.rstrip("/").rsplit("/", 1)[-1] if "/" in arg and not arg.startswith("-") else arg


def _cut(text: str, width: int) -> str:
    text = text.split("\n", 1)[0].strip()
    return text if len(text) <= width else text[:width - 1] + "…"


class Proc(msgspec.Struct, gc=False):
    """One process as read from ``/proc`` in a single pass."""

    pid: int
    ppid: int
    uid: int
    state: str  # the kernel's one-letter state: R S D Z X T t I ...
    comm: str
    cmdline: list[str]
    create_time: float  # seconds since the epoch
    utime: float  # seconds of CPU in user mode
    stime: float
    rss: int  # bytes
    num_threads: int
    # Zombies only. As in `subprocess`: the exit status, or -N when killed by
    # signal N.
    exit_code: int | None = None
    # Detail fields: read only for processes inside the watched trees and for
    # actors, so a pass stays cheap on a busy box.
    wchan: str | None = None
    cgroup: str | None = None
    vol_ctx: int | None = None
    invol_ctx: int | None = None
    # /proc/<pid>/schedstat of the main thread: nanoseconds on a CPU, and
    # waiting in a run queue (full detail only).
    sched_run: int | None = None
    sched_wait: int | None = None
    # When schedstat was read (monotonic): the runaway window is the time
    # between two reads of this process, not between two snapshots' stamps
    # (a pass stalled after reading it would stretch the window).
    sched_at: float | None = None
    sig_caught: int | None = None  # SigCgt bitmask
    actor: ActorInfo | None = None
    # The main thread exited while other threads run: the process is live
    # (``state`` is a live thread's), only its leader is a zombie.
    leader_exited: bool = False
    # A kernel thread (PF_KTHREAD): never signalled, no Python to dump. The
    # flag, not a pid: pid 2 is kthreadd only in the initial PID namespace.
    kthread: bool = False
    # Further actors living in this process (``subint``: one per
    # sub-interpreter); `actor` is then the host.
    hosted: list[ActorInfo] = []

    @property
    def cpu_time(self) -> float:
        return self.utime + self.stime

    @property
    def title(self) -> str:
        """What a person calls this process: actor name, else its command."""
        if self.actor is not None and self.actor.name:
            return self.actor.name
        if self.cmdline:
            # One line whatever the argv holds (``python -c 'multi\nline'``).
            return " ".join(self.cmdline).translate(_ONE_LINE)
        return f"[{self.comm}]"

    @property
    def short_title(self) -> str:
        """`title` with argv[0] cut to its base name: a venv's
        ``/long/path/bin/python`` would push the words that matter out of
        any clipped column."""
        if (self.actor is not None and self.actor.name) or not self.cmdline:
            return self.title
        return self.command_line(short=True)

    @property
    def brief(self) -> str:
        """What a person calls a process in a sentence: the actor's name,
        else its program and the first argument that says what it runs
        (``python helpers.py``, ``python -m tractor._child``, ``sleep
        600``, ``python -c 'from multipr…'``), paths cut to their base
        names. A whole command line cut at a width shows the venv's path
        and loses the script."""
        if (self.actor is not None and self.actor.name) or not self.cmdline:
            return self.title
        argv = self.cmdline
        words = [_base(argv[0])]
        i = 1
        while i < len(argv):
            arg = argv[i]
            if arg in ("-m", "-c") and i + 1 < len(argv):
                what = argv[i + 1] if arg == "-m" else _cut(argv[i + 1], 20)
                words += [arg, what]
                break
            if arg in _VALUE_OPTIONS:
                i += 2  # the interpreter's option and its value
                continue
            if not arg.startswith("-") or arg == "-":
                words.append(_cut(_base(arg), 40))
                break
            i += 1
        return " ".join(words).translate(_ONE_LINE)

    def command_line(self, short: bool = False) -> str:
        """The whole command line on one line, control characters escaped;
        `short` cuts argv[0] to its base name."""
        if not self.cmdline:
            return f"[{self.comm}]"
        argv = self.cmdline
        if short:
            argv = [argv[0].rsplit("/", 1)[-1], *argv[1:]]
        return " ".join(argv).translate(_ONE_LINE)

    def handles_signal(self, signum: int) -> bool | None:
        if self.sig_caught is None:
            return None
        return bool(self.sig_caught >> (signum - 1) & 1)


class Entry(msgspec.Struct, gc=False):
    """A process placed in a snapshot: where it sits and how it is doing."""

    proc: Proc
    bucket: Bucket
    state: State
    root: int | None  # the given root whose tree holds it; None for strays
    depth: int  # 0 for a root or for the top of a stray subtree
    children: list[int] = []
    cpu_percent: float | None = None  # needs two samples
    stuck_for: float | None = None  # seconds without CPU progress (sampler)
    note: str | None = None  # e.g. "re-parented to init"
    # listening addresses (host:port, or a Unix socket path), when asked for
    # (`ipc.annotate`)
    listens: list[str] = []
    # In the actor tree: the actor that spawned it (for mp_forkserver not
    # its OS parent, the sidecar, but the sidecar's parent); None for the
    # top of an actor tree and for processes that are not actors.
    actor_parent: int | None = None


class Snapshot(msgspec.Struct, gc=False):
    """The watched trees at one instant (and, with ``samples == 2``, the CPU
    rate over the window between two instants)."""

    taken_at: float  # epoch seconds
    monotonic: float
    roots: list[int]
    entries: dict[int, Entry]
    strays: list[int] = []  # tops of stray/orphan subtrees outside the roots
    samples: int = 1
    window: float = 0.0  # seconds between the two samples, if any
    patterns: list[str] = []
    missing_roots: list[int] = []  # given pids that do not exist
    unmatched_patterns: list[str] = []
    host: str = ""
    boot_time: float = 0.0

    def ordered(self) -> list[Entry]:
        """Entries in tree order: each root then its descendants, depth-first,
        then each stray subtree."""
        out: list[Entry] = []
        seen: set[int] = set()

        def walk(pid: int) -> None:
            if pid in seen or pid not in self.entries:
                return
            seen.add(pid)
            entry = self.entries[pid]
            out.append(entry)
            for child in entry.children:
                walk(child)

        for pid in (*self.roots, *self.strays):
            walk(pid)
        return out


def actor_children(snap: Snapshot) -> dict[int | None, list[int]]:
    """The actor tree as a map: each actor under ``Entry.actor_parent`` (the
    actor that spawned it), ``None`` holding the tops, in tree order. The
    fork-server sidecar is not an actor and is left out."""
    kids: dict[int | None, list[int]] = {}
    for entry in snap.ordered():
        actor = entry.proc.actor
        if actor is not None and actor.role != "forkserver":
            kids.setdefault(entry.actor_parent, []).append(entry.proc.pid)
    return kids


EventKind = Literal[
    "spawned", "exited", "zombied", "orphaned", "runaway", "recovered",
]


class Event(msgspec.Struct, gc=False):
    kind: EventKind
    pid: int
    at: float  # epoch seconds
    title: str = ""
    exit_code: int | None = None
    detail: str = ""


_encoder = _JSONEncoder()


def to_json(value: object) -> bytes:
    """The one JSON encoder of every verb's ``--json``, the bundles and the
    plugin: any Struct of the data layer (or plain data), compact UTF-8."""
    return _encoder.encode(value)


def snapshot_from_json(data: bytes | str) -> Snapshot:
    import msgspec.json

    return msgspec.json.decode(data, type=Snapshot)


def exit_status(code: int) -> str:
    """An exit code in the subprocess convention as a person reads it:
    ``0``, ``1``, ``SIGKILL``."""
    if code < 0:
        import signal

        try:
            return signal.Signals(-code).name
        except ValueError:
            return f"signal {-code}"
    return str(code)
