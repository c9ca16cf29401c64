"""What ``stacks`` computes for each process: kernel side, Python stacks, trio
task tree. Plain msgspec Structs, JSON-round-trippable, no system reads.

Every part that could not be had carries a ``status`` and a ``reason`` a
person can read ("py-spy not found", "permission denied", "process gone",
"timed out after 5.0s", ...), so a missing stack is never silent.
"""
from __future__ import annotations

from typing import ClassVar, Literal

import msgspec.json

# Why a Python stack is (or is not) there.
PyStatus = Literal[
    "ok",           # dumped
    "no-py-spy",    # py-spy is not installed / not found
    "permission",   # not allowed to attach (and sudo -n did not help)
    "traced",       # another tracer (gdb, strace, a debugger) is attached
    "gone",         # the process vanished before or during the dump
    "exited",       # a zombie: it has no Python left to dump
    "timeout",      # py-spy did not answer within the per-dump timeout
    "not-python",   # no Python interpreter found in the process
    "unsupported",  # a Python version this py-spy cannot read
    "skipped",      # not attempted (kernel thread, our own py-spy, ...)
    "failed",       # any other py-spy error (its message is the reason)
]

TaskStatus = Literal[
    "collected",     # something was appended after our request
    "no-handler",    # SigCgt has no SIGUSR1 handler: never signalled
    "unknown",       # SigCgt unreadable: not signalled, to be safe
    "timeout",       # signalled, nothing appended within the bound
    "gone",          # vanished (or the pid was reused) before the request
    "error",         # could not signal or read the dump file
    "not-requested", # task trees were not asked for
    "not-asked",     # not an actor, no dumper announced, not named: never signalled
]


class Local(msgspec.Struct, frozen=True):
    name: str
    repr: str | None = None
    arg: bool = False


class Frame(msgspec.Struct, frozen=True):
    name: str  # function (qualified where py-spy knows it)
    filename: str
    line: int
    short: str = ""  # py-spy's package-relative file name
    native: bool = False  # a C/C++ frame (``--native``)
    locals: list[Local] | None = None


class Thread(msgspec.Struct):
    thread_id: int
    os_thread_id: int | None
    name: str | None
    active: bool  # py-spy: the OS says the thread is not idle
    owns_gil: bool
    frames: list[Frame]  # innermost LAST (call order, like a traceback)


class PyStack(msgspec.Struct):
    status: PyStatus
    threads: list[Thread] = []
    reason: str | None = None  # why it is missing, or a caveat
    via_sudo: bool = False
    elapsed: float = 0.0  # seconds the dump took


class KernelSide(msgspec.Struct):
    state: str  # the kernel's one-letter state at capture time
    wchan: str | None = None
    stack: list[str] | None = None  # /proc/<pid>/stack symbols, innermost first
    stack_reason: str | None = None  # why ``stack`` is missing


class TaskFrame(msgspec.Struct, frozen=True):
    filename: str
    line: int
    name: str
    # whom the frame's tractor object (a Context, Portal or stream) talks
    # to, as the dump's ``peer:`` line names it: a pid, else an address
    peer_pid: int | None = None
    peer_addr: str | None = None


class TaskInfo(msgspec.Struct):
    """One task of a parsed tractor-diag taskdump block."""

    name: str
    state: str  # running / waiting / ...
    depth: int  # nesting of the task in the tree (root task = 0)
    frames: list[TaskFrame] = []  # await frames, outermost first
    has_children: bool = False
    scope_flags: list[str] = []  # flags of nurseries this task opened
    # A nursery above it had its cancel called, and it has not exited: the
    # shape of a hang during a cancel cascade.
    cancelling: bool = False


class TaskTree(msgspec.Struct):
    # Multi-line: escaping for a terminal keeps its newlines (`safetext`).
    TEXT_BLOCKS: ClassVar[tuple[str, ...]] = ("text",)

    status: TaskStatus
    reason: str | None = None
    text: str = ""  # what the process appended after our request
    # "tractor-diag" (a delimited taskdump block) or "undelimited" (e.g.
    # tractor's own stackscope handler).
    format: str | None = None
    complete: bool = False  # the taskdump END line was seen
    tasks: list[TaskInfo] = []  # parsed from a tractor-diag block
    path: str | None = None
    elapsed: float = 0.0
    # An undelimited (stackscope) dump that shows no task below trio's main
    # nursery: the task tree is unknown, not idle.
    empty: bool = False
    # What asking may have changed (a handler that reaps exited children).
    note: str | None = None
    # The tractor actor the process runs, as its own dump names it (our
    # dumper's ``actor:`` line).
    actor: str | None = None


class Pending(msgspec.Struct):
    """A task-tree request in flight (`tasks.request`): where the tree is
    expected and from which offset; `tasks.collect` turns it into a `TaskTree`."""

    pid: int
    path: str  # the file the dumper is expected to write (first of paths)
    offset: int
    sent_at: float  # monotonic
    paths: list[str] = []
    offsets: list[int] = []
    note: str | None = None
    owners: list[int] = []  # uids a dump file may belong to (the process's)
    # each file's first bytes when the offset was taken: a file emptied and
    # written anew since then (a forked child claiming a stale file of its
    # pid) is read from its start, even once it has grown past the offset
    heads: list[bytes] = []


class ProcStacks(msgspec.Struct):
    """Everything ``stacks`` knows about one process."""

    pid: int
    ppid: int
    title: str  # actor name, else the command line with argv[0] cut to its base name
    actor: str | None  # actor name when it is a tractor actor
    bucket: str
    state: str  # the snapshot's state (idle, blocked, runaway, ...)
    depth: int
    kernel: KernelSide
    python: PyStack
    tasks: TaskTree
    exit_code: int | None = None
    # the actor name came from the 15-byte comm (an exited actor) and may be cut
    actor_truncated: bool = False

    @property
    def shown_actor(self) -> str | None:
        """The actor name as shown to a person: ``crash…`` when it may be cut."""
        if self.actor is None:
            return None
        return self.actor + ("…" if self.actor_truncated else "")


class Whereabouts(msgspec.Struct, frozen=True):
    """Where one process waits, as the diagnosis judged it from its
    `ProcStacks` (`diagnosis.where.whereabouts`): what the text renderers
    quote, so that they judge nothing themselves."""

    python: str  # the thread that matters: its user frame and what that called
    trio: str  # the task that most looks stuck, or why there is none
    tasks: list[str] = []  # each task's await point, in `TaskTree.tasks` order


class StacksOptions(msgspec.Struct, frozen=True):
    locals: bool = False
    native: bool = False
    tasks: bool = True
    timeout: float = 5.0  # per py-spy dump
    task_timeout: float = 2.0  # bound on waiting for an appended task tree
    jobs: int = 0  # concurrent dumps; 0: stacks.default_jobs()
    sudo: Literal["never", "noninteractive", "prompt"] = "noninteractive"
    # pids asked for task trees even when neither an actor nor announced
    tasks_from: tuple[int, ...] = ()


class StacksReport(msgspec.Struct):
    taken_at: float
    roots: list[int]
    procs: list[ProcStacks]
    py_spy: str | None  # path of the py-spy used, None when not found
    options: StacksOptions
    elapsed: float = 0.0


def report_from_json(data: bytes | str) -> StacksReport:
    return msgspec.json.decode(data, type=StacksReport)


def procs_from_json(data: bytes | str) -> list[ProcStacks]:
    return msgspec.json.decode(data, type=list[ProcStacks])
