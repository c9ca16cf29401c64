"""The status bar: one line under the panes saying what the dashboard watches.

Counts of the watched trees (what sits outside them, strays of other runs
and their zombies, counted apart), the sampling cadence, a pause, and in
launch mode the launched program's fate and what holds its tree.
"""
from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from tractor_diag.model import Snapshot, exit_status


def status_text(snap: Snapshot | None, *, interval: float | None = None, paused: bool = False,
                launch_error: str | None = None, child_pid: int | None = None,
                child_code: int | None = None, held_by: str | None = None) -> Text:
    """The line itself. ``interval``: the sampling period when live;
    ``held_by``: how a launched tree is contained, when one was launched."""
    parts: list[tuple[str, str] | str] = []
    if snap is not None:
        # the watched trees' counts; whatever sits outside them (strays of
        # other runs, zombies included) is one count of its own
        counts: dict[str, int] = {}
        outside: dict[str, int] = {}
        for e in snap.entries.values():
            if e.root is None:
                outside[e.bucket] = outside.get(e.bucket, 0) + 1
                continue
            counts[e.bucket] = counts.get(e.bucket, 0) + 1
            if e.state in ("runaway", "blocked"):
                counts[e.state] = counts.get(e.state, 0) + 1
        parts.append((f"{len(snap.entries) - sum(outside.values())} procs", "bold"))
        for key, style in (("zombie", "bold bright_red"), ("orphan", "bold red"),
                           ("runaway", "bold magenta"), ("blocked", "yellow")):
            if counts.get(key):
                parts.append((f"{counts[key]} {key}", style))
        if outside:
            worst = ", ".join(f"{outside[b]} {b}" for b in ("zombie", "orphan")
                              if outside.get(b))
            parts.append((f"{sum(outside.values())} stray" + (f" ({worst})" if worst else ""),
                          "yellow"))
        if snap.missing_roots and not snap.roots:
            parts.append(("root gone", "red"))
    else:
        parts.append(("waiting for the first sample…", "dim"))
    if interval is not None:
        parts.append(f"every {interval:g}s")
    if paused:
        parts.append(("PAUSED", "bold reverse yellow"))
    if launch_error:
        parts.append((launch_error, "bold red"))
    elif child_pid is not None:
        if child_code is None:
            parts.append((f"child {child_pid} running", "green"))
        else:
            parts.append((f"child {child_pid} exited {exit_status(child_code)}",
                          "bold red" if child_code else "bold green"))
        if held_by is not None:
            parts.append(("held by " + held_by, "dim"))
    text = Text(" ")
    for i, part in enumerate(parts):
        if i:
            text.append("  ·  ", "dim")
        if isinstance(part, tuple):
            text.append(*part)
        else:
            text.append(part)
    return text


class StatusBar(Static):
    """Shows `status_text`; repaints only when the line changed."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._shown: Text | None = None

    def show(self, text: Text) -> None:
        # Every sampler tick recomputes the line; a repaint for an
        # unchanged one would cost a frame for nothing. One line, one
        # height: never a layout pass.
        if text != self._shown:
            self._shown = text
            self.update(text, layout=False)

    def say(self, text: Text) -> None:
        """A message that stands in for the line (while quitting)."""
        self.update(text)
