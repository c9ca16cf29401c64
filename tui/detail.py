"""The detail pane: everything known about the selected process.

Cheap facts come from the snapshot; sockets are read for this one pid when
it is selected; Python stacks and the trio task tree only when asked for
(keys ``s`` and ``t``), since both reach into the process.
"""
from __future__ import annotations

import signal

from rich.console import Group
from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static

from tractor_diag.model import Entry, Snapshot
from tractor_diag.render import human_bytes, human_duration
from tractor_diag.safetext import escape, escaped
from tractor_diag.sockmodel import SockView

from .labels import BUCKET_STYLE, STATE_STYLE, badge, entry_name, stamp
from .safe import safe_block
from .unchanged import same_proc


def coarse_duration(seconds: float) -> str:
    """Under ten seconds, then tens of seconds, then minutes (each rounded
    down): the pane is redrawn only when what it says changes, and a
    per-second clock would redraw it on every tick."""
    s = max(0, int(seconds))
    if s < 10:
        return "<10s"
    if s < 60:
        return f"{s // 10 * 10}s"
    if s < 3600:
        return f"{s // 60}m"
    return human_duration(s)


def _field(text: Text, name: str, value: str | Text, style: str = "") -> None:
    text.append(f"{name:<10}", "bold dim")
    if isinstance(value, Text):
        text.append_text(value)
    else:
        text.append(value, style)
    text.append("\n")


def describe(entry: Entry, snap: Snapshot, now: float | None = None) -> Text:
    """The snapshot's facts about one process, as text."""
    entry = escaped(entry)  # every field a process chose, a line each
    proc = entry.proc
    now = snap.taken_at if now is None else now
    text = Text()
    text.append(entry_name(entry, 80), "bold")
    text.append(f"  pid {proc.pid}", "cyan")
    if proc.actor is not None:
        text.append(f"  actor ({proc.actor.generation} runtime)", "green")
    text.append("\n")
    _field(text, "state", badge(entry))
    if entry.bucket != "live" and entry.note:
        _field(text, "why", entry.note, BUCKET_STYLE.get(entry.bucket, ""))
    if entry.stuck_for is not None and entry.stuck_for >= 1:
        _field(text, "no cpu", f"for {coarse_duration(entry.stuck_for)}",
               STATE_STYLE["blocked"] if entry.stuck_for > 10 else "")
    cpu = "-" if entry.cpu_percent is None else f"{entry.cpu_percent:.1f}%"
    _field(text, "cpu", f"{cpu}   (total {proc.cpu_time:.2f}s)")
    _field(text, "rss", f"{human_bytes(proc.rss)}   threads {proc.num_threads}")
    started = stamp(proc.create_time)
    _field(text, "started", f"{started} ({coarse_duration(now - proc.create_time)} ago)")
    _field(text, "wchan", proc.wchan or "-")
    if proc.vol_ctx is not None:
        _field(text, "ctx sw", f"{proc.vol_ctx} voluntary, {proc.invol_ctx} involuntary")
    parent = snap.entries.get(proc.ppid)
    ptitle = f" ({entry_name(parent, 40)})" if parent is not None else ""
    _field(text, "parent", f"{proc.ppid}{ptitle}")
    if proc.actor is not None:
        actor = proc.actor
        if actor.parent_addr is not None:
            _field(text, "parent @", str(actor.parent_addr))
        if actor.uuid:
            _field(text, "uuid", actor.uuid)
        if actor.loglevel:
            _field(text, "loglevel", actor.loglevel)
    usr1 = proc.handles_signal(signal.SIGUSR1)
    usr1_text = {True: Text("yes: task tree on request (t)", "green"),
                 False: Text("no: never signalled (SIGUSR1 would kill it)", "yellow"),
                 None: Text("unknown", "dim")}[usr1]
    _field(text, "SIGUSR1", usr1_text)
    _field(text, "uid", str(proc.uid))
    if proc.cgroup:
        _field(text, "cgroup", proc.cgroup)
    text.append("cmdline   ", "bold dim")
    text.append(proc.command_line())
    text.append("\n")
    kids = [snap.entries[c] for c in entry.children if c in snap.entries]
    text.append(f"children  ", "bold dim")
    if not kids:
        text.append("none\n", "dim")
    else:
        text.append(f"{len(kids)}\n")
        for kid in kids[:50]:
            text.append(f"  {kid.proc.pid:>7} ", "cyan")
            text.append(entry_name(kid, 50))
            text.append("  ")
            text.append_text(badge(kid))
            text.append("\n")
        if len(kids) > 50:
            text.append(f"  … {len(kids) - 50} more\n", "dim")
    return text


def _same_entry(a: Entry, b: Entry) -> bool:
    return a is b or (same_proc(a.proc, b.proc) and a.bucket == b.bucket and a.state == b.state
                      and a.cpu_percent == b.cpu_percent and a.note == b.note
                      and a.children == b.children)


def same_facts(entry: Entry, snap: Snapshot, was: Entry, then: Snapshot) -> bool:
    """`describe` of ``entry`` in ``snap`` reads as it did of ``was`` in
    ``then``, told without building it: the process, its parent and its
    children read the same, and its clocks (each in the steps it is shown
    in) have not moved on."""
    if not _same_entry(entry, was):
        return False
    if (entry.stuck_for is not None and entry.stuck_for >= 1) != (
            was.stuck_for is not None and was.stuck_for >= 1):
        return False
    if entry.stuck_for is not None and entry.stuck_for >= 1 and (
            coarse_duration(entry.stuck_for) != coarse_duration(was.stuck_for)
            or (entry.stuck_for > 10) != (was.stuck_for > 10)):
        return False
    started = entry.proc.create_time
    if coarse_duration(snap.taken_at - started) != coarse_duration(then.taken_at - started):
        return False
    parent, parent_was = snap.entries.get(entry.proc.ppid), then.entries.get(entry.proc.ppid)
    if (parent is None) != (parent_was is None) or (
            parent is not None and not same_proc(parent.proc, parent_was.proc)):
        return False
    for pid in entry.children:
        kid, kid_was = snap.entries.get(pid), then.entries.get(pid)
        if (kid is None) != (kid_was is None):
            return False
        if kid is not None and not (kid is kid_was or (
                kid.bucket == kid_was.bucket and kid.state == kid_was.state
                and same_proc(kid.proc, kid_was.proc))):
            return False
    return True


def describe_sockets(socks: list[SockView] | None, pending: str = "reading…") -> Text:
    """Listening and named sockets one per line; unnamed connected ends
    (socketpairs, client sides whose peer /proc does not name) counted."""
    text = Text()
    text.append("sockets   ", "bold dim")
    if socks is None:
        text.append(f"{pending}\n", "dim")
        return text
    if not socks:
        text.append("none\n", "dim")
        return text
    named = [s for s in socks if s.role == "listening" or s.local != "(unnamed)"]
    unnamed = len(socks) - len(named)
    text.append(f"{len(socks)}\n")
    for sock in named:
        style = "green" if sock.role == "listening" else ""
        text.append(f"  {sock.role:<11}", style)
        text.append(f" {sock.kind:<5} {escape(sock.local)}")
        if sock.remote:
            text.append(f" -> {escape(sock.remote)}")
        text.append("\n")
    if unnamed:
        text.append(f"  {unnamed} unnamed unix (socketpairs, client ends)\n", "dim")
    return text


class DetailPane(VerticalScroll):
    """Scrollable text about the selected process."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.pid: int | None = None
        self._body = Static(Text("select a process", "dim"), id="detail-body")
        self.extras: dict[str, tuple[str, Text]] = {}  # section -> (title, body)
        self._facts = Text()
        self._sockets = Text()
        self._shown: tuple | None = None
        self._shape: tuple = ()
        self._described: tuple[Entry, Snapshot] | None = None  # what the facts tell
        self._sockets_of: tuple | None = None  # (list, pending) the sockets tell

    def compose(self):
        yield self._body

    @property
    def text(self) -> str:
        """Everything shown, as plain text (tests read this)."""
        parts = [self._facts.plain, self._sockets.plain]
        parts += [f"{title}\n{body.plain}" for title, body in self.extras.values()]
        return "\n".join(parts)

    def show(self, entry: Entry | None, snap: Snapshot | None, *,
             sockets: list[SockView] | None = None, sockets_pending: str = "reading…",
             extras: dict[str, tuple[str, Text]] | None = None) -> None:
        if entry is None or snap is None:
            self.pid = None
            self._facts = Text("select a process", "dim")
            self._sockets = Text()
            self.extras = {}
            self._described = None
            self._sockets_of = None
        else:
            self.pid = entry.proc.pid
            was = self._described
            if was is None or was[0].proc.pid != self.pid or not same_facts(entry, snap, *was):
                self._facts = describe(entry, snap)
            self._described = (entry, snap)
            # the app hands the same list until the sockets are read again
            if self._sockets_of is None or self._sockets_of[0] is not sockets or (
                    self._sockets_of[1] != sockets_pending):
                self._sockets = describe_sockets(sockets, sockets_pending)
            self._sockets_of = (sockets, sockets_pending)
            self.extras = dict(extras or {})
        self._render_body()

    def _render_body(self) -> None:
        key = (self._facts, self._sockets, tuple(self.extras.items()))
        if key == self._shown:
            return  # unchanged: skip the repaint and the layout it implies
        self._shown = key
        # What the user asked for last comes first; the facts follow.
        parts: list = []
        for title, body in reversed(list(self.extras.values())):
            parts.append(Text(f"── {escape(title)} ──", "bold cyan"))
            parts.append(body)
        parts += [self._facts, self._sockets]
        parts = [safe_block(p) for p in parts]
        # A layout pass re-flows the whole screen: only ask for one when the
        # text's shape (and so, at this width, its height) may have changed.
        shape = tuple(len(line) for part in parts for line in part.plain.split("\n"))
        self._body.update(Group(*parts), layout=shape != self._shape)
        self._shape = shape
