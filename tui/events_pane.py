"""The events pane: the sampler's timeline (spawned, exited with codes,
zombied, orphaned, runaway, recovered), newest at the bottom."""
from __future__ import annotations

from collections import deque

from rich.text import Text
from textual.widgets import RichLog

from tractor_diag.model import Event

from . import no_reflow
from .labels import event_line
from .safe import safe_line


class EventsPane(RichLog):
    # a line written repaints the pane, not the screen (see `no_reflow`)
    virtual_size = no_reflow.virtual_size()
    watch_virtual_size = no_reflow.watch_virtual_size

    def __init__(self, max_lines: int = 2000, **kwargs) -> None:
        super().__init__(max_lines=max_lines, wrap=False, markup=False,
                         highlight=False, auto_scroll=True, **kwargs)
        self.events: deque[Event] = deque(maxlen=max_lines)
        self.plain: deque[str] = deque(maxlen=max_lines)

    def add_events(self, events: list[Event]) -> None:
        for event in events:
            self.events.append(event)
            line = event_line(event)
            self.plain.append(line.plain)
            self.write(line)

    def note(self, text: Text | str) -> None:
        """A line of the dashboard's own (launch, exit, actions)."""
        line = safe_line(text if isinstance(text, Text) else Text(text, "italic"))
        self.plain.append(line.plain)
        self.write(line)

    @property
    def text(self) -> str:
        return "\n".join(self.plain)
