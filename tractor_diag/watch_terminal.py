"""The terminal side of ``watch``: the alternate screen on one tty fd,
entered and left exactly once, keys read one by one, resizes and signals
turned into wake-ups.

Leaving, for any reason (``q``, Ctrl-C, SIGTERM, an exception), puts the
terminal back as it was: cursor shown, auto-wrap on, alternate screen left,
tty mode and the signal handlers that were installed before. Auto-wrap is
off while painting, a second guard beside clipping: a wrapped line would
shift every line below it.
"""
from __future__ import annotations

import os
import select
import signal
import time

from .watch_layout import HOME, RESET, compose

ALT_SCREEN_ON = "\x1b[?1049h"
ALT_SCREEN_OFF = "\x1b[?1049l"
CURSOR_HIDE = "\x1b[?25l"
CURSOR_SHOW = "\x1b[?25h"
WRAP_OFF = "\x1b[?7l"
WRAP_ON = "\x1b[?7h"
CLEAR = "\x1b[2J"


class Quit(Exception):
    """Raised by a signal handler to leave the loop (SIGTERM)."""

    def __init__(self, rc: int):
        self.rc = rc


class Terminal:
    """The alternate screen on one tty fd, entered and left exactly once.

    Signal handlers are installed only when running in the main thread
    (Python allows no other); elsewhere a resize is still noticed, by
    comparing the size at every wake-up.
    """

    def __init__(self, out_fd: int, in_fd: int | None = None):
        self.out_fd = out_fd
        self.in_fd = in_fd
        self.cols, self.rows = self.size()
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
        self._painted_size = self.size()  # a blank screen of this size

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
    def size(self) -> tuple[int, int]:
        """(columns, rows) of the terminal now (80x24 when it cannot tell)."""
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
        self.cols, self.rows = self.size()
        full = self._resized or self._painted_size != (self.cols, self.rows)
        self._resized = False
        self.write((CLEAR if full else "") + compose(lines, self.cols, self.rows))
        self._painted_size = (self.cols, self.rows)

    def wait(self, timeout: float) -> str | None:
        """Sleep up to ``timeout``: -> 'resize', 'quit', 'now' or None."""
        deadline = time.monotonic() + timeout
        while True:
            if self._resized or self.size() != self._painted_size:
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
