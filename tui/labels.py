"""Labels for the tree pane, as `rich.text.Text`.

Always `Text`, never a markup string: Textual parses string labels as
markup, and a state like ``[zombie]`` would silently vanish.
"""
from __future__ import annotations

import time

from rich.text import Text

from tractor_diag.model import Entry, Event
from tractor_diag import render
from tractor_diag.render import human_bytes, human_duration
from tractor_diag.model import exit_status
from tractor_diag.safetext import escape

from .safe import safe_line

def _emphasised(colours: dict[str, str], bold: set[str]) -> dict[str, str]:
    """The text renderers' colours (one table for every face), bold where
    the dashboard wants the eye drawn."""
    return {k: f"bold {c}" if k in bold else c for k, c in colours.items()}


BUCKET_STYLE = _emphasised(render.BUCKET_STYLE, {"zombie", "orphan", "stray"})
STATE_STYLE = _emphasised(render.STATE_STYLE, {"runaway", "running"})
EVENT_STYLE = {
    "spawned": "green",
    "exited": "red",
    "zombied": "bold bright_red",
    "orphaned": "bold red",
    "runaway": "bold magenta",
    "recovered": "cyan",
}


def entry_name(entry: Entry, width: int = 48) -> str:
    """The name a process goes by, its control characters escaped."""
    proc = entry.proc
    if proc.actor is not None and proc.actor.name:
        return escape(proc.actor.name) + ("…" if proc.actor.name_truncated else "")
    name = escape(proc.short_title)
    return name if len(name) <= width else name[: width - 1] + "…"


def badge(entry: Entry) -> Text:
    """Bucket (when not plain live) and state, coloured."""
    text = Text()
    if entry.bucket != "live":
        text.append(f"[{entry.bucket}]", BUCKET_STYLE[entry.bucket])
        text.append(" ")
    state = entry.state
    if state == "exited" and entry.proc.exit_code is not None:
        state = f"exited:{exit_status(entry.proc.exit_code)}"
    text.append(state, STATE_STYLE.get(entry.state, ""))
    return text


class ProcLabel(Text):
    """A process row's label that knows where its pid ends (``pid_end``,
    in characters): the tree draws a waits-on mark there, whatever the
    name before it holds."""

    pid_end: int = 0


def proc_label(entry: Entry, now: float | None = None) -> ProcLabel:
    """``name  pid  state  cpu%  rss  age  wchan`` for one process."""
    proc = entry.proc
    now = time.time() if now is None else now
    head = Text()
    head.append(entry_name(entry, 40), "bold" if proc.actor is not None else "")
    head.append(f"  {proc.pid}", "cyan")
    text = Text()
    text.append("  ")
    text.append_text(badge(entry))
    cpu = "-" if entry.cpu_percent is None else f"{entry.cpu_percent:.0f}%"
    text.append(f"  {cpu}", "bold magenta" if entry.state == "runaway" else "")
    text.append(f"  {human_bytes(proc.rss)}", "dim")
    text.append(f"  {coarse_age(now - proc.create_time)}", "dim")
    if proc.wchan:
        text.append(f"  {proc.wchan}", "italic dim")
    # each part escaped on its own, so that the pid's end is where it shows
    label = ProcLabel(no_wrap=True, overflow="ellipsis")
    label.append_text(safe_line(head))
    label.pid_end = len(label)
    label.append_text(safe_line(text))
    return label


def coarse_age(seconds: float) -> str:
    """Minutes at best: a label that changes every second would repaint
    every node on every tick."""
    s = max(0, int(seconds))
    if s < 60:
        return "<1m"
    if s < 3600:
        return f"{s // 60}m"
    return human_duration(s)


def coarse_age_until(create_time: float, now: float) -> float:
    """When `coarse_age` of a process started at ``create_time`` may next
    read otherwise than at ``now`` (a minute boundary of its age, at latest)."""
    return create_time + 60 * (max(0, int(now - create_time)) // 60 + 1)


def group_label(name: str, count: int) -> Text:
    style = "bold red" if name == "orphans" else "bold yellow"
    return Text.assemble((name, style), (f" ({count})", "dim"))


def stamp(at: float | None = None) -> str:
    """The wall clock of an event or a result, to the second (now by default)."""
    return time.strftime("%H:%M:%S", time.localtime(time.time() if at is None else at))


def event_line(event: Event) -> Text:
    text = Text(no_wrap=False)
    text.append(stamp(event.at), "dim")
    text.append(f" {event.kind:<9}", EVENT_STYLE.get(event.kind, ""))
    text.append(f" {event.pid:>7}", "cyan")
    if event.title:
        text.append(f" {event.title}")
    if event.exit_code is not None:
        text.append(f" exit {exit_status(event.exit_code)}", "red" if event.exit_code else "green")
    if event.detail:
        text.append(f" ({event.detail})", "dim")
    return safe_line(text)
