"""Text renderers, one module per verb; shared formatting lives here.

Renderers take computed values (Structs) and return strings: nothing here
reads the system or prints. Every public renderer first passes its value
through `safetext.escaped`: names, titles, paths and frames come from other
people's processes, and a control character in them must not reach a
terminal (or a bundle's text file) raw. The only escape sequences in the
output are the colours of `Style`.
"""
from __future__ import annotations

import os
import time

_CODES = {
    "bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33",
    "blue": "34", "magenta": "35", "cyan": "36", "bright_red": "91",
}

BUCKET_STYLE = {"zombie": "bright_red", "orphan": "red", "stray": "yellow", "live": "green"}
STATE_STYLE = {
    "runaway": "magenta", "blocked": "yellow", "stopped": "cyan",
    "running": "green", "idle": "dim", "exited": "red",
}


def terminal_columns(fallback: int = 80) -> int:
    """The terminal's width as `shutil.get_terminal_size` reads it (COLUMNS,
    else stdout's terminal, else ``fallback``), without importing shutil
    (and the zlib, bz2 and lzma it brings): a one-shot verb pays for every
    import at start-up."""
    try:
        cols = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        cols = 0
    if cols <= 0:
        import sys

        try:
            cols = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (AttributeError, ValueError, OSError):
            cols = 0
    return cols or fallback


def want_color(mode: str = "auto", stream=None) -> bool:
    """``auto``: a terminal and no ``NO_COLOR`` (https://no-color.org)."""
    if mode == "always":
        return True
    if mode == "never" or os.environ.get("NO_COLOR"):
        return False
    return is_terminal(stream)


def is_terminal(stream) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (ValueError, OSError):
        return False


class Style:
    """How text output looks: coloured or not, and whether long fields may
    be clipped to fit. ``wide`` (output to a pipe or a file, like ``ps``):
    nothing is clipped, so ``ptree | grep`` finds what a long command line
    holds."""

    def __init__(self, color: bool, wide: bool = False):
        self.color = color
        self.wide = wide

    @classmethod
    def for_output(cls, mode: str, stream) -> "Style":
        return cls(want_color(mode, stream), wide=not is_terminal(stream))

    def clip(self, text: str, width: int) -> str:
        return text if self.wide else clip(text, width)

    def __call__(self, text: str, *styles: str) -> str:
        if not self.color or not styles:
            return text
        codes = ";".join(_CODES[s] for s in styles if s in _CODES)
        return f"\x1b[{codes}m{text}\x1b[0m" if codes else text


def human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "K", "M", "G", "T"):
        if value < 1024 or unit == "T":
            return f"{value:.0f}{unit}" if unit in ("B", "K") else f"{value:.1f}{unit}"
        value /= 1024
    return f"{n}B"


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def age(create_time: float, now: float | None = None) -> str:
    return human_duration((now or time.time()) - create_time)


def clip(text: str, width: int) -> str:
    if width <= 0 or len(text) <= width:
        return text
    return text[: max(0, width - 1)] + "…"
