"""The terminal repaint engine behind ``tractor-diag watch`` and ``acli.watch``.

A frame is the text of one run plus its exit code. `run` produces one
every interval, lays it out (`watch_layout`: sanitized, clipped to the
width and the height, composed to overwrite the previous frame in place,
without flicker) and paints it on the alternate screen in one ``write()``
(`watch_terminal`: entering and leaving it, keys, resizes and signals).
"""
from __future__ import annotations

import io
import os
import sys
import time
from collections.abc import Callable
from typing import NamedTuple

from .watch_layout import (  # noqa: F401 - the engine's names, for its callers
    ERASE_DOWN,
    ERASE_EOL,
    HOME,
    RESET,
    clip,
    compose,
    fit,
    frame_lines,
    header_line,
    sanitize,
    visible_width,
)
from .watch_terminal import CLEAR, Quit, Terminal  # noqa: F401

MIN_INTERVAL = 0.1
DEFAULT_INTERVAL = 2.0


class Frame(NamedTuple):
    """What one run produced: its text (stdout then stderr) and exit code."""

    text: str
    rc: int


def check_interval(value: float) -> float:
    from .errors import UsageError

    if not value == value or value < MIN_INTERVAL:  # NaN too
        raise UsageError(f"the interval must be at least {MIN_INTERVAL} seconds")
    return float(value)


# -- the loop ----------------------------------------------------------------

def run(
    produce: Callable[[], Frame],
    *,
    interval: float,
    command: str,
    out_fd: int,
    in_fd: int | None = None,
    color: bool = True,
) -> int:
    """Paint ``produce()`` every ``interval`` seconds until quit.

    -> 0 when the user quit (``q`` or Ctrl-C), 128+N on a terminating signal.
    ``produce`` raising an ordinary exception becomes a failed frame.
    Keys: ``q`` quits, space or enter runs again now.
    """
    from .render import Style

    st = Style(color)
    try:
        with Terminal(out_fd, in_fd) as term:
            while True:
                started = time.monotonic()
                frame = _safe(produce, term.cols, term.rows)
                when = time.time()
                body = frame_lines(frame.text)

                def lines() -> list[str]:
                    head = header_line(interval, command, frame.rc, when, term.cols, st)
                    return fit(head, body, term.rows, st)

                term.cols, term.rows = term.size()
                term.paint(lines())
                while True:
                    left = started + interval - time.monotonic()
                    event = term.wait(max(left, 0.0))
                    if event == "resize":
                        term.cols, term.rows = term.size()
                        term.paint(lines())
                        continue
                    if event == "quit":
                        return 0
                    break  # the interval is over, or the user asked for a run now
    except KeyboardInterrupt:
        return 0
    except Quit as q:
        return q.rc


def _safe(produce: Callable[[], Frame], cols: int, rows: int) -> Frame:
    """Run ``produce`` sized to the screen: COLUMNS/LINES say how much room
    the frame has (renderers size their tables with shutil)."""
    saved = {k: os.environ.get(k) for k in ("COLUMNS", "LINES")}
    os.environ["COLUMNS"] = str(cols)
    os.environ["LINES"] = str(max(rows - 1, 1))
    try:
        frame = produce()
    except (KeyboardInterrupt, Quit):
        raise
    except Exception as exc:  # noqa: BLE001 - shown in the frame, never a traceback
        return Frame(f"{type(exc).__name__}: {exc}", 1)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return frame


class Capture(io.StringIO):
    """Collects one frame's output; claims to be a terminal when colour is
    wanted, so verbs colour their output as they would on the screen."""

    def __init__(self, tty: bool):
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def terminal_fds(stream=None) -> tuple[int, int | None]:
    """(fd to paint on, fd to read keys from) for ``stream`` (default stdout).

    Raises UsageError when the output is not a terminal: a repainting
    screen written into a pipe or file is only noise.
    """
    from .errors import UsageError

    stream = stream if stream is not None else sys.stdout
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        fd = -1
    if fd < 0 or not os.isatty(fd):
        raise UsageError("watch repaints a terminal: its output must be a tty (not a pipe or file)")
    in_fd = None
    for candidate in (sys.stdin,):
        try:
            cfd = candidate.fileno()
        except (AttributeError, OSError, ValueError):
            continue
        if os.isatty(cfd):
            in_fd = cfd
    return fd, in_fd
