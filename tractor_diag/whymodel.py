"""What ``why`` computes: kernel samples, wait-for edges and verdicts, each
verdict with the evidence that made it. Plain msgspec Structs, no system
reads (the readers are `kstate`, the rules `diagnosis`)."""
from __future__ import annotations

from typing import Literal

import msgspec.json

from .sockmodel import IpcGraph


WaitTarget = Literal["child", "peer", "parent", "registrar", "debugger"]


class WaitPoint(msgspec.Struct, frozen=True):
    """One place where an actor waits for another process (the table is
    `diagnosis.waitpoints`)."""

    name: str  # qualified name, as py-spy and task dumps print it
    where: str  # a path part of the file that defines it
    target: WaitTarget
    label: str  # how a sentence names it
    # Waiting here means cancelling the target: if the target shows no
    # cancel in progress, the cancel was lost.
    cancels: bool = False
    # A sync wait: it wedges a trio loop it is called from.
    sync: bool = False


class KernelSample(msgspec.Struct):
    """What the kernel says about one process at one instant (its main
    thread, for the per-thread counters)."""

    pid: int
    create_time: float
    at: float  # time.monotonic() of the read
    state: str  # R S D Z T t ...
    wchan: str | None = None
    sig_ignored: int | None = None  # SigIgn bitmask
    sig_blocked: int | None = None  # SigBlk bitmask
    sig_caught: int | None = None  # SigCgt bitmask
    tracer_pid: int | None = None
    tracer_comm: str | None = None
    # the pid a main thread blocked in wait4/waitid names (/proc/<pid>/syscall)
    wait_pid: int | None = None
    vol_ctx: int | None = None
    invol_ctx: int | None = None
    run_ns: int | None = None  # /proc/<pid>/schedstat: time on a CPU
    wait_ns: int | None = None  # ... and waiting in a run queue
    # /proc/<pid>/sched se.exec_start: when it last ran, on the monotonic
    # clock (kernels built with scheduler debug info only).
    last_ran: float | None = None


Source = Literal["kernel", "python", "tasks", "tree", "ipc", "bindspace", "caller"]


class Evidence(msgspec.Struct, frozen=True):
    source: Source
    text: str


VerdictKind = Literal[
    "sync-blocked",     # a trio loop wedged in a sync call
    "runaway",          # on a CPU (or queued for one) all the window, never yielding
    "blocked",          # uninterruptible (D) in the kernel
    "loop-held",        # a task held the loop when its dump was taken
    "cancel-outlived",  # a task outlives its nursery's cancellation
    "lost-cancel",      # A cancels B, B shows no cancel in progress
    "boot-hang",        # A waits for a child that died before connecting
    "reported",         # the caller knows (a deadline ran out in this process)
    "ignores-signals",  # SIGINT/SIGTERM ignored or blocked
    "stopped",
    "traced",
    "zombie",
    "orphan",
    "stale-socket",
    "port-holder",      # an orphan or a stale registrar holds the registry address
    "cycle",
]


class Verdict(msgspec.Struct):
    kind: VerdictKind
    pid: int
    name: str
    text: str  # one sentence, untrusted names left unescaped (renderers escape)
    evidence: list[Evidence] = []
    # What to run to see more, and what would end it.
    hints: list[str] = []


class WaitEdge(msgspec.Struct):
    """``waiter`` waits for ``on`` at ``point`` (a name from the table of
    waiting points), with the evidence for it."""

    waiter: int
    on: int
    point: str
    relation: Literal["child", "parent", "peer"]
    evidence: list[Evidence] = []


class Chain(msgspec.Struct):
    """Who waits for whom, top first, down to the process whose verdict
    explains the hang (``cause``)."""

    pids: list[int]
    cause: Verdict


class Diagnosis(msgspec.Struct):
    taken_at: float
    roots: list[int]
    names: dict[int, str]  # pid -> what to call it (actor name, else title)
    edges: list[WaitEdge]
    verdicts: list[Verdict]
    chains: list[Chain]
    window: float = 0.0  # seconds between the two kernel samples
    notes: list[str] = []  # what could not be judged, and why
    elapsed: float = 0.0
    ipc: IpcGraph | None = None  # the IPC graph the edges were joined with
    # stale socket files in the bindspace dir that belong to no tree judged
    # here (other runs' leftovers: counted, not listed)
    stale_elsewhere: int = 0

    def verdicts_of(self, pid: int) -> list[Verdict]:
        return [v for v in self.verdicts if v.pid == pid]


def diagnosis_from_json(data: bytes | str) -> Diagnosis:
    return msgspec.json.decode(data, type=Diagnosis)
