"""The text of one ``watch`` frame, computed without a terminal: lines made
safe to paint, clipped to the width by what is visible (colour escapes
kept, wide characters counted twice), fitted to the height, and composed
into the bytes that overwrite the previous frame in place (cursor home,
each line erased to its end, everything below erased: never a blank
screen between two frames).
"""
from __future__ import annotations

import re
import time
import unicodedata

HOME = "\x1b[H"
ERASE_EOL = "\x1b[K"
ERASE_DOWN = "\x1b[J"
RESET = "\x1b[0m"

# SGR (colour) sequences survive into the frame; any other escape sequence
# could move the cursor, break the layout or reach the clipboard, so it goes.
# A control character left over is shown escaped (`safetext`), never raw.
_SGR = re.compile(r"\x1b\[[0-9;:]*m")
_OTHER_ESC = re.compile(
    r"\x1b(\[[0-?]*[ -/]*[@-~]"          # CSI
    r"|[\]PX^_][^\x07\x1b]*(\x07|\x1b\\)?"  # OSC, DCS and other strings
    r"|[ -/]*[0-~])?"                    # two-byte escapes; a lone ESC
)


def _char_width(ch: str) -> int:
    if ch < "\u0300":  # latin and box drawing fast path
        return 1
    if unicodedata.combining(ch):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def sanitize(line: str) -> str:
    """One line made safe to paint: tabs expanded, cursor-moving codes gone.

    A carriage return means the writer overwrote the line (a progress bar):
    what is visible is what came after the last one.
    """
    if "\r" in line:
        line = line.rstrip("\r").rsplit("\r", 1)[-1]
    if not line.isprintable():
        pieces: list[str] = []
        pos = 0
        for m in _SGR.finditer(line):
            pieces.append(_strip_controls(line[pos:m.start()]))
            pieces.append(m.group())
            pos = m.end()
        pieces.append(_strip_controls(line[pos:]))
        line = "".join(pieces)
    if "\t" in line:
        line = _expand_tabs(line)
    return line


def _strip_controls(text: str) -> str:
    from .safetext import escape_block

    return escape_block(_OTHER_ESC.sub("", text))


def _expand_tabs(line: str) -> str:
    out: list[str] = []
    col = 0
    for piece in _tokens(line):
        if piece.startswith("\x1b"):
            out.append(piece)
        elif piece == "\t":
            pad = 8 - col % 8
            out.append(" " * pad)
            col += pad
        else:
            out.append(piece)
            col += sum(_char_width(c) for c in piece)
    return "".join(out)


def _tokens(line: str):
    """SGR sequences, tabs and runs of plain text, in order."""
    pos = 0
    for m in re.finditer(r"\x1b\[[0-9;:]*m|\t", line):
        if m.start() > pos:
            yield line[pos:m.start()]
        yield m.group()
        pos = m.end()
    if pos < len(line):
        yield line[pos:]


def visible_width(line: str) -> int:
    return sum(_char_width(c) for c in _SGR.sub("", line))


def clip(line: str, width: int) -> tuple[str, int]:
    """``line`` cut to ``width`` visible columns -> (text, visible width).

    Colour escapes are kept; when the cut falls inside a coloured run the
    attributes are reset so they do not bleed into the erased tail.
    """
    if width <= 0:
        return "", 0
    if "\x1b" not in line:
        if line.isascii():
            return line[:width], min(len(line), width)
        styled = False
    else:
        styled = True
    out: list[str] = []
    used = 0
    clipped = False
    for piece in _tokens(line):
        if piece.startswith("\x1b"):
            out.append(piece)
            continue
        for ch in piece:
            w = _char_width(ch)
            if used + w > width:
                clipped = True
                break
            out.append(ch)
            used += w
        if clipped:
            break
    text = "".join(out)
    if clipped and styled:
        text += RESET
    return text, used


def compose(lines: list[str], cols: int, rows: int) -> str:
    """The bytes that turn whatever the screen shows into ``lines``.

    ``lines`` are sanitized already and at most ``rows`` long. A line that
    fills the row exactly gets no erase: the cursor then waits in the last
    column and an erase there would take the last character with it. No
    newline follows the last row, so the screen never scrolls.
    """
    parts = [HOME]
    for i, line in enumerate(lines[:rows]):
        if i:
            parts.append("\r\n")
        text, used = clip(line, cols)
        parts.append(text)
        if used < cols:
            parts.append(ERASE_EOL)
    if len(lines) < rows:
        if lines:
            parts.append("\r\n")
        parts.append(ERASE_DOWN)
    return "".join(parts)


def fit(header: str, body: list[str], rows: int, st=None) -> list[str]:
    """Header plus as much of the body as the screen holds, sanitized.

    When the body is cut, the last row says how many lines are hidden. Only
    the lines shown are sanitized: a frame may be thousands of lines long.
    """
    room = max(rows - 1, 0)
    if len(body) <= room:
        return [header, *map(sanitize, body)]
    if room == 0:
        return [header][:rows]
    hidden = len(body) - (room - 1)
    more = f"… {hidden} more lines (a taller terminal shows them)"
    return [header, *map(sanitize, body[: room - 1]), st(more, "dim") if st else more]


def header_line(interval: float, command: str, rc: int | None, when: float,
                cols: int, st=None) -> str:
    """``Every 2s: <command>`` on the left; exit code and time on the right."""
    from .safetext import escape

    command = escape(command)
    left = f"Every {interval:g}s: "
    stamp = time.strftime("%H:%M:%S", time.localtime(when))
    right_plain = stamp
    right = stamp
    if rc is not None and rc != 0:
        status = f"exit {rc}"
        right_plain = f"{status}  {stamp}"
        right = (st(status, "bold", "red") if st else status) + f"  {stamp}"
    room = cols - len(left) - len(right_plain) - 2
    if room >= 10:
        cmd, used = clip(command, room)
        if used < visible_width(command):
            cmd, used = clip(command, room - 1)
            cmd += "…"
            used += 1
        gap = cols - len(left) - used - len(right_plain)
        return left + cmd + " " * max(gap, 2) + right
    # A very narrow terminal: the exit code matters more than the command.
    return right if len(right_plain) <= cols else clip(right_plain, cols)[0]


def frame_lines(text: str) -> list[str]:
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines
