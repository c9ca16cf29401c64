"""The messages that carry work done elsewhere to the dashboard's widgets.

trio (the sampler, the launcher, the key jobs) runs as a guest on Textual's
loop and may not touch a widget: it posts one of these, and the app's
handlers apply it. They hold values only, so the code that posts them
needs nothing of the app (which is what keeps the jobs below the app, with
no import running back up).
"""
from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.message import Message

from tractor_diag.model import Event, Snapshot
from tractor_diag.sockmodel import SockView


class Sampled(Message):
    """One sampler tick: a snapshot and the events since the last one."""

    def __init__(self, snapshot: Snapshot, events: list[Event]) -> None:
        super().__init__()
        self.snapshot = snapshot
        self.events = events


class Output(Message):
    """Lines the launched program wrote on ``stream`` (stdout or stderr)."""

    def __init__(self, stream: str, lines: list[str]) -> None:
        super().__init__()
        self.stream = stream
        self.lines = lines


class Launched(Message):
    """The program was started as ``pid``, or could not be (``error``)."""

    def __init__(self, pid: int | None, error: str | None = None) -> None:
        super().__init__()
        self.pid = pid
        self.error = error


class Exited(Message):
    """A child of ours was reaped (the launched one, or an adopted orphan)."""

    def __init__(self, pid: int, code: int) -> None:
        super().__init__()
        self.pid = pid
        self.code = code


class ActionDone(Message):
    """A key's job finished: its result goes to the detail pane of ``pid``
    under ``section``, and a one-line ``summary`` is shown. ``bundle``: the
    path of a snapshot bundle it wrote. ``judged``: the chains a why
    analysis found (`waits.Judged`), over the processes ``judged_over``
    (they replace what an earlier analysis said of those), and
    ``evidence``: pid -> `kstate.activity` of each process in them, read
    after the analysis (None: one moved meanwhile). ``quiet``: a refresh
    nobody asked for, shown without a notice."""

    def __init__(self, section: str, pid: int, title: str, body: Text,
                 summary: str, ok: bool = True, bundle: str | None = None,
                 judged: list | None = None, judged_over: frozenset[int] = frozenset(),
                 quiet: bool = False, evidence: dict | None = None) -> None:
        super().__init__()
        self.section = section
        self.pid = pid
        self.title = title
        self.body = body
        self.summary = summary
        self.ok = ok
        self.bundle = bundle
        self.judged = judged
        self.judged_over = judged_over
        self.quiet = quiet
        self.evidence = evidence


class Unchanged(Message):
    """A quiet refresh of the tree at ``pid`` found no process of its
    chains run since they were judged: the verdicts stand as they are."""

    def __init__(self, pid: int) -> None:
        super().__init__()
        self.pid = pid


class ReapPlanned(Message):
    """A dry-run reap plan with something to signal: the app asks the user
    before the job that executes it is started."""

    def __init__(self, pid: int, body: Text, plan: Any) -> None:
        super().__init__()
        self.pid = pid
        self.body = body
        self.plan = plan


class SocketsRead(Message):
    """The sockets of ``pid``, read for the detail pane."""

    def __init__(self, pid: int, socks: list[SockView]) -> None:
        super().__init__()
        self.pid = pid
        self.socks = socks
