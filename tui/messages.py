"""The messages that carry work done elsewhere to the dashboard's widgets.

trio (the sampler, the launcher, the key jobs) runs as a guest on Textual's
loop and may not touch a widget: it posts one of these, and the app's
handlers apply it. They hold values only, so the code that posts them
needs nothing of the app (which is what keeps the jobs below the app, with
no import running back up).

Each is a dataclass, as Textual's own messages are (`Message.__init__`
calls `__post_init__` for that); ``eq=False`` keeps a message equal only to
itself, as a plain `Message` is.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual.message import Message

from tractor_diag.model import Event, Snapshot
from tractor_diag.sockmodel import SockView


@dataclass(eq=False)
class Sampled(Message):
    """One sampler tick: a snapshot and the events since the last one."""

    snapshot: Snapshot
    events: list[Event]


@dataclass(eq=False)
class Output(Message):
    """Lines the launched program wrote on ``stream`` (stdout or stderr)."""

    stream: str
    lines: list[str]


@dataclass(eq=False)
class Launched(Message):
    """The program was started as ``pid``, or could not be (``error``)."""

    pid: int | None
    error: str | None = None


@dataclass(eq=False)
class Exited(Message):
    """A child of ours was reaped (the launched one, or an adopted orphan)."""

    pid: int
    code: int


@dataclass(eq=False)
class ActionDone(Message):
    """A key's job finished: its result goes to the detail pane of ``pid``
    under ``section``, and a one-line ``summary`` is shown. ``bundle``: the
    path of a snapshot bundle it wrote. ``judged``: the chains a why
    analysis found (`waits.Judged`), over the processes ``judged_over``
    (they replace what an earlier analysis said of those), and
    ``evidence``: pid -> `kstate.activity` of each process in them, read
    after the analysis (None: one moved meanwhile). ``quiet``: a refresh
    nobody asked for, shown without a notice."""

    section: str
    pid: int
    title: str
    body: Text
    summary: str
    ok: bool = True
    bundle: str | None = None
    judged: list | None = None
    judged_over: frozenset[int] = frozenset()
    quiet: bool = False
    evidence: dict | None = None
    born: float | None = None  # start time of the process at ``pid``, as judged


@dataclass(eq=False)
class Unchanged(Message):
    """A quiet refresh of the tree at ``pid`` found no process of its
    chains run since they were judged: the verdicts stand as they are."""

    pid: int


@dataclass(eq=False)
class RootGone(Message):
    """A quiet refresh of the tree at ``pid`` found its root not the
    process judged any more (``reason``): nothing was captured, and the
    tree's chains are no claim now."""

    pid: int
    reason: str


@dataclass(eq=False)
class ReapPlanned(Message):
    """A dry-run reap plan with something to signal: the app asks the user
    before the job that executes it is started."""

    pid: int
    body: Text
    plan: Any


@dataclass(eq=False)
class SocketsRead(Message):
    """The sockets of ``pid``, read for the detail pane."""

    pid: int
    socks: list[SockView]
