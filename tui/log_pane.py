"""The log pane: what the launched program writes, line by line as it
arrives (stderr marked), bounded so a chatty child cannot eat memory."""
from __future__ import annotations

from collections import deque

from rich.text import Text
from textual.widgets import RichLog

from .safe import safe_line

_MARK = {"stdout": ("│ ", "dim"), "stderr": ("┃ ", "yellow")}


class LogPane(RichLog):
    def __init__(self, max_lines: int = 5000, **kwargs) -> None:
        super().__init__(max_lines=max_lines, wrap=False, markup=False,
                         highlight=False, auto_scroll=True, **kwargs)
        self.received = 0  # lines, including those scrolled out
        self.received_chars = 0
        # Plain copies of the last lines: what tests (and copy-out) read,
        # even while the tab is hidden and RichLog defers its rendering.
        self.plain: deque[str] = deque(maxlen=max_lines)

    def add_lines(self, stream: str, lines: list[str]) -> None:
        mark, style = _MARK.get(stream, ("  ", ""))
        for line in lines:
            self.received += 1
            self.received_chars += len(line)
            self.plain.append(line)
            text = Text(mark, style)
            # Keep the program's own colours; Rich drops some other sequences,
            # and what is left (an OSC 52 ended by BEL, a C1 CSI, a lone ESC)
            # is shown escaped, never sent to the terminal.
            text.append_text(Text.from_ansi(line) if "\x1b" in line else Text(line))
            self.write(safe_line(text))

    def note(self, message: str, style: str = "bold") -> None:
        self.plain.append(message)
        self.write(safe_line(Text(message, style)))

    @property
    def text(self) -> str:
        return "\n".join(self.plain)
