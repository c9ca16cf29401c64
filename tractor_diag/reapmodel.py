"""What ``reap`` computes: the plan (who would be signalled, who is skipped
and why), what the signals did, and the UDS and ``/dev/shm`` sweeps beside
them. Plain msgspec Structs, no system reads: the plan's pidfds are kept
beside its fields, not in them."""
from __future__ import annotations

from typing import Literal

import msgspec

from .filemodel import BindspaceScan, Removal, ShmScan

Fate = Literal[
    "planned",   # dry run
    "exited",    # exited within the grace after SIGINT
    "killed",    # needed SIGKILL, then exited
    "survived",  # still there after SIGKILL (uninterruptible sleep?)
    "gone",      # exited before we signalled it
    "reused",    # its pid belongs to another process than the planned one: not signalled
    "skipped",   # no longer passes the rules at signal time: not signalled
    "error",     # the kernel refused the signal
]


class Target(msgspec.Struct):
    pid: int
    ppid: int
    create_time: float
    uid: int
    title: str
    depth: int  # 0 for the top of a subtree
    top: int  # the orphan (or the --parent pid) whose subtree holds it
    actor: str | None = None
    generation: str | None = None
    why: str = ""
    cmdline: list[str] = []  # as scanned: part of its identity
    state: str = ""  # the kernel's state letter when planned (T: stopped)


class Skip(msgspec.Struct):
    pid: int
    title: str
    reason: str


class Plan(msgspec.Struct, dict=True):
    """What a reap signals. `make_plan` also keeps a `pinning.Pin` per target
    (not part of the JSON); `execute` uses them and `release` closes them."""

    mode: Literal["orphans", "parent", "subtree"]
    uid: int
    # --all: non-actors in the subtrees too (``all`` in JSON, like the flag)
    everything: bool = msgspec.field(name="all")
    targets: list[Target] = []
    skipped: list[Skip] = []
    parent: int | None = None
    tops: list[int] = []
    scanned_at: float = 0.0
    subtree: int | None = None

    def pids(self) -> list[int]:
        return [t.pid for t in self.targets]

    def pins(self) -> dict[int, object]:
        """{pid: its `pinning.Pin`} (typed loosely: data imports no reader)."""
        return self.__dict__.setdefault("_pins", {})

    def release(self) -> None:
        """Close the pidfds the plan holds (a released plan re-pins if run)."""
        for pin in self.pins().values():
            pin.close()
        self.pins().clear()


class PidFate(msgspec.Struct):
    pid: int
    title: str
    fate: Fate
    signals: list[str] = []  # what was actually sent, in order
    exit_code: int | None = None  # when it was seen as a zombie
    detail: str = ""
    stopped: bool = False  # it was stopped (state T): SIGCONT followed the SIGINT


class Outcome(msgspec.Struct):
    """What `execute` did with a plan."""

    fates: list[PidFate]
    escalated: bool = False  # SIGKILL was needed
    waited: float = 0.0  # seconds spent in the grace window
    pidfd: bool = True  # signals went through pidfds (always: there is no other way)


class UdsSweep(msgspec.Struct):
    scan: BindspaceScan
    removals: list[Removal]


class ShmSweep(msgspec.Struct):
    scan: ShmScan
    removals: list[Removal]


class ReapReport(msgspec.Struct):
    dry_run: bool
    grace: float
    plan: Plan | None = None  # None with --uds-only/--shm-only
    outcome: Outcome | None = None
    appeared: list[Target] = []  # showed up under the plan while we reaped
    uds: UdsSweep | None = None
    shm: ShmSweep | None = None
    errors: list[str] = []
    clean: bool = True  # set by `reap`: see `is_clean`

    def is_clean(self) -> bool:
        """No escalation, no failure, nothing left behind."""
        if self.errors or self.appeared:
            return False
        if self.outcome is not None:
            if self.outcome.escalated:
                return False
            if any(f.fate in ("survived", "error") for f in self.outcome.fates):
                return False
        for sweep in (self.uds, self.shm):
            if sweep is not None and any(r.error for r in sweep.removals):
                return False
        return True
