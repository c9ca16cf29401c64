"""The terminal repaint engine behind ``tractor-diag watch`` and ``acli.watch``.

A frame is the text of one run plus its exit code. Frames are painted in the
alternate screen without ever clearing it: the cursor goes home, each line is
written over the previous frame's line and erased to its end, and everything
below the last line is erased. Nothing blank is ever shown between two
frames, so there is no flicker, and a shorter line or frame leaves no stale
tail behind. The whole frame goes out in one ``write()``.

Lines are clipped to the terminal width (counting only what is visible:
colour escapes are kept, wide characters count twice) and the frame to its
height, with auto-wrap off as a second guard: a wrapped line would shift
every line below it.

Leaving, for any reason (``q``, Ctrl-C, SIGTERM, an exception), puts the
terminal back as it was: cursor shown, auto-wrap on, alternate screen left,
tty mode and the signal handlers that were installed before.
"""
from __future__ import annotations

import io
import os
import re
import select
import signal
import sys
import time
import unicodedata
from collections.abc import Callable
from typing import NamedTuple

ALT_SCREEN_ON = "\x1b[?1049h"
ALT_SCREEN_OFF = "\x1b[?1049l"
CURSOR_HIDE = "\x1b[?25l"
CURSOR_SHOW = "\x1b[?25h"
WRAP_OFF = "\x1b[?7l"
WRAP_ON = "\x1b[?7h"
HOME = "\x1b[H"
ERASE_EOL = "\x1b[K"
ERASE_DOWN = "\x1b[J"
CLEAR = "\x1b[2J"
RESET = "\x1b[0m"

MIN_INTERVAL = 0.1
DEFAULT_INTERVAL = 2.0

# SGR (colour) sequences survive into the frame; any other escape sequence
# could move the cursor, break the layout or reach the clipboard, so it goes.
# A control character left over is shown escaped (`safetext`), never raw.
_SGR = re.compile(r"\x1b\[[0-9;:]*m")
_OTHER_ESC = re.compile(
    r"\x1b(\[[0-?]*[ -/]*[@-~]"          # CSI
    r"|[\]PX^_][^\x07\x1b]*(\x07|\x1b\\)?"  # OSC, DCS and other strings
    r"|[ -/]*[0-~])?"                    # two-byte escapes; a lone ESC
)


class Frame(NamedTuple):
    """What one run produced: its text (stdout then stderr) and exit code."""

    text: str
    rc: int


class Quit(Exception):
    """Raised by a signal handler to leave the loop (SIGTERM)."""

    def __init__(self, rc: int):
        self.rc = rc


def check_interval(value: float) -> float:
    from .errors import UsageError

    if not value == value or value < MIN_INTERVAL:  # NaN too
        raise UsageError(f"the interval must be at least {MIN_INTERVAL} seconds")
    return float(value)


# -- pure text layout ------------------------------------------------------

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


# -- the terminal ------------------------------------------------------------

class Terminal:
    """The alternate screen on one tty fd, entered and left exactly once.

    Signal handlers are installed only when running in the main thread
    (Python allows no other); elsewhere a resize is still noticed, by
    comparing the size at every wake-up.
    """

    def __init__(self, out_fd: int, in_fd: int | None = None):
        self.out_fd = out_fd
        self.in_fd = in_fd
        self.cols, self.rows = self._size()
        self._painted_size: tuple[int, int] | None = None
        self._wake_r = self._wake_w = -1
        self._resized = False
        self._saved_handlers: dict[int, object] = {}
        self._saved_tty = None
        self._entered = False

    # entering and leaving
    def __enter__(self) -> Terminal:
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        try:
            self._install_handlers()
            self._enter_screen()
        except BaseException:
            self._leave_screen()
            self._restore_handlers()
            self._close_pipe()
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            self._leave_screen()
        finally:
            self._restore_handlers()
            self._close_pipe()

    def _enter_screen(self) -> None:
        if self.in_fd is not None:
            import termios

            try:
                self._saved_tty = termios.tcgetattr(self.in_fd)
                mode = termios.tcgetattr(self.in_fd)
                # Keys must not echo over the frame, and arrive one by one
                # (`q` quits); Ctrl-C keeps raising SIGINT (ISIG stays on).
                mode[3] &= ~(termios.ECHO | termios.ICANON)
                mode[6][termios.VMIN] = 1
                mode[6][termios.VTIME] = 0
                termios.tcsetattr(self.in_fd, termios.TCSANOW, mode)
            except termios.error:
                self._saved_tty = None
        self._entered = True
        self.write(ALT_SCREEN_ON + CURSOR_HIDE + WRAP_OFF + HOME + CLEAR)
        self._painted_size = self._size()  # a blank screen of this size

    def _leave_screen(self) -> None:
        if not self._entered:
            return
        self._entered = False
        try:
            self.write(RESET + WRAP_ON + CURSOR_SHOW + ALT_SCREEN_OFF)
        except OSError:
            pass  # the terminal is gone (SIGHUP): nothing left to restore on it
        finally:
            if self._saved_tty is not None:
                import termios

                try:
                    termios.tcsetattr(self.in_fd, termios.TCSADRAIN, self._saved_tty)
                except termios.error:
                    pass
                self._saved_tty = None

    def _install_handlers(self) -> None:
        import threading

        if threading.current_thread() is not threading.main_thread():
            return
        wanted = {
            signal.SIGWINCH: self._on_winch,
            signal.SIGINT: _raise_keyboard_interrupt,
            signal.SIGTERM: _raise_quit,
            signal.SIGHUP: _raise_quit,
        }
        # Ctrl-Z: only when nobody chose otherwise (an interactive shell
        # running us in-process ignores SIGTSTP; then so do we).
        if signal.getsignal(signal.SIGTSTP) == signal.SIG_DFL:
            wanted[signal.SIGTSTP] = self._on_tstp
        for signum, handler in wanted.items():
            self._saved_handlers[signum] = signal.signal(signum, handler)

    def _restore_handlers(self) -> None:
        for signum, previous in self._saved_handlers.items():
            try:
                signal.signal(signum, previous)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                signal.signal(signum, signal.SIG_DFL)
        self._saved_handlers.clear()

    def _close_pipe(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1

    # signals
    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"\0")
        except OSError:
            pass  # the pipe is full: a wake-up is pending anyway

    def _on_winch(self, signum, frame) -> None:
        self._resized = True
        self._wake()

    def _on_tstp(self, signum, frame) -> None:
        """Ctrl-Z: give the shell its screen back, stop, and come back whole."""
        self._leave_screen()
        signal.signal(signal.SIGTSTP, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTSTP)
        # Running again (SIGCONT).
        signal.signal(signal.SIGTSTP, self._on_tstp)
        self._enter_screen()
        self._resized = True
        self._wake()

    # painting
    def _size(self) -> tuple[int, int]:
        try:
            size = os.get_terminal_size(self.out_fd)
            return max(size.columns, 1), max(size.lines, 1)
        except OSError:
            return 80, 24

    def write(self, data: str) -> None:
        buf = data.encode("utf-8", "replace")
        while buf:
            n = os.write(self.out_fd, buf)
            buf = buf[n:]

    def paint(self, lines: list[str]) -> None:
        """Repaint; after a resize the screen is cleared first (full redraw):
        the terminal may have reflowed the old frame in any way."""
        self.cols, self.rows = self._size()
        full = self._resized or self._painted_size != (self.cols, self.rows)
        self._resized = False
        self.write((CLEAR if full else "") + compose(lines, self.cols, self.rows))
        self._painted_size = (self.cols, self.rows)

    def wait(self, timeout: float) -> str | None:
        """Sleep up to ``timeout``: -> 'resize', 'quit', 'now' or None."""
        deadline = time.monotonic() + timeout
        while True:
            if self._resized or self._size() != self._painted_size:
                return "resize"
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            fds = [self._wake_r]
            if self.in_fd is not None:
                fds.append(self.in_fd)
            try:
                # SIGWINCH wakes us at once; the size is also polled each
                # second, for when no handler can be installed (not the
                # main thread).
                ready, _, _ = select.select(fds, [], [], min(left, 1.0))
            except InterruptedError:
                continue
            if self._wake_r in ready:
                try:
                    while os.read(self._wake_r, 512):
                        pass
                except BlockingIOError:
                    pass
            if self.in_fd is not None and self.in_fd in ready:
                try:
                    keys = os.read(self.in_fd, 64)
                except OSError:
                    keys = b""
                if not keys:  # the terminal is gone
                    return "quit"
                if b"q" in keys or b"Q" in keys:
                    return "quit"
                if b" " in keys or b"\n" in keys or b"\r" in keys:
                    return "now"


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


def _raise_quit(signum, frame):
    raise Quit(128 + signum)


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

                term.cols, term.rows = term._size()
                term.paint(lines())
                while True:
                    left = started + interval - time.monotonic()
                    event = term.wait(max(left, 0.0))
                    if event == "resize":
                        term.cols, term.rows = term._size()
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
